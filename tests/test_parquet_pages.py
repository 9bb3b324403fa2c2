"""The Parquet page reader: bit-exact with pyarrow where it reads, pyarrow's decode wherever it cannot prove it can."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import DatasetError
from cutout_etl.formats.parquet_pages import Unsupported, _read_struct, _values_of, copy_float_pages, read_float_column

PER_ROW = 36 * 36 * 4


@pytest.fixture(scope="module")
def parquet_dataset(demo_files, tmp_path_factory):
    """The demo files as Parquet, in 100-row shards (several row groups and shards per split)."""
    root = tmp_path_factory.mktemp("pages")
    h5, directory = root / "dataset.h5", root / "dataset_parquet"
    pipeline.build(demo_files, h5)
    pipeline.build(demo_files, str(directory) + "/", output=pipeline.OutputOptions(rows_per_shard=100))
    return h5, directory


def odd_floats(rows: int, per_row: int = PER_ROW) -> np.ndarray:
    """Fluxes of 1e-12 with NaN payloads, signed zeros, subnormals and infinities mixed in: bits must survive."""
    values = (np.random.default_rng(rows).standard_normal(rows * per_row) * 1e-12).astype(np.float32)
    specials = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000], np.uint32)
    values[np.linspace(0, len(values) - 1, len(specials)).astype(int)] = specials.view(np.float32)
    return values


def image_table(values: np.ndarray, per_row: int = PER_ROW, nullable: bool = True, nulls: list[int] = ()) -> pa.Table:
    element = pa.field("element", pa.float32(), nullable=nullable)
    images = pa.FixedSizeListArray.from_arrays(pa.array(values), type=pa.list_(element, per_row))
    if nulls:
        mask = np.zeros(len(images), bool)
        mask[list(nulls)] = True
        images = pa.FixedSizeListArray.from_arrays(
            pa.array(values), type=pa.list_(element, per_row), mask=pa.array(mask)
        )
    schema = pa.schema([pa.field("image", images.type, nullable=nullable), pa.field("label", pa.int64())])
    return pa.table([images, pa.array(np.arange(len(images)))], schema=schema)


def pyarrow_values(path, group: int) -> bytes:
    column = pq.ParquetFile(path).read_row_group(group, columns=["image"]).column(0).combine_chunks()
    return column.flatten().to_numpy().tobytes()


def read_pages(path, group: int, per_row: int = PER_ROW) -> np.ndarray:
    data = path.read_bytes()
    return read_float_column(memoryview(data), pq.ParquetFile(path).metadata, group, "image", per_row)


def test_our_shards_are_read_from_their_pages_bit_for_bit(parquet_dataset):
    h5, directory = parquet_dataset
    for shard in sorted((directory / "data").glob("*.parquet")):
        for group in range(pq.ParquetFile(shard).metadata.num_row_groups):
            assert read_pages(shard, group).tobytes() == pyarrow_values(shard, group), (shard, group)
    with open_dataset(h5) as stored, open_dataset(directory) as ds:
        for name in ds.splits:
            got = [x for x, _ in ds[name].batches(64)]
            assert ds[name]._table.groups_decoded_by_arrow == 0  # every group from its pages
            want = [x for x, _ in stored[name].batches(64)]
            assert np.concatenate(got).tobytes() == np.concatenate(want).tobytes()


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("page_size", [1000, 7001, None])  # small pages: a row's values span several pages
@pytest.mark.parametrize("nullable", [True, False])
def test_pyarrow_written_pages_give_pyarrows_values(tmp_path, version, page_size, nullable):
    rows = 37  # row groups of 10, 10, 10, 7 rows
    path = tmp_path / "images.parquet"
    options = {"data_page_size": page_size} if page_size else {}
    table = image_table(odd_floats(rows), nullable=nullable)
    pq.write_table(
        table, path, compression="none", use_dictionary=False, row_group_size=10, data_page_version=version, **options
    )
    for group in range(4):
        assert read_pages(path, group).tobytes() == pyarrow_values(path, group)


def test_one_value_rows_and_odd_row_lengths(tmp_path):
    for per_row in (1, 3, 13):
        path = tmp_path / f"images{per_row}.parquet"
        pq.write_table(image_table(odd_floats(50, per_row), per_row), path, compression="none", use_dictionary=False)
        assert read_pages(path, 0, per_row).tobytes() == pyarrow_values(path, 0)
        with pytest.raises(Unsupported):  # rows of another length than the file's are refused
            read_pages(path, 0, per_row + 1)


@pytest.mark.parametrize(
    "write",
    [
        {"compression": "zstd", "use_dictionary": False},
        {"compression": "snappy", "use_dictionary": False},
        {"compression": "none", "use_dictionary": True},
        {
            "compression": "none",
            "use_dictionary": False,
            "column_encoding": {"image.list.element": "BYTE_STREAM_SPLIT"},
        },
    ],
    ids=["zstd", "snappy", "dictionary", "byte-stream-split"],
)
def test_other_encodings_are_left_to_pyarrow(tmp_path, write):
    path = tmp_path / "images.parquet"
    values = np.repeat(odd_floats(1)[:PER_ROW], 8)  # repeats, so a dictionary is worth writing
    pq.write_table(image_table(values), path, **write)
    with pytest.raises(Unsupported):
        read_pages(path, 0)


@pytest.mark.parametrize("where", ["image", "value"])
def test_nulls_are_left_to_pyarrow(tmp_path, where):
    path = tmp_path / "images.parquet"
    values = pa.array(odd_floats(6))
    if where == "value":
        values = pa.array(odd_floats(6), mask=np.arange(6 * PER_ROW) == 7)
        table = pa.table({"image": pa.FixedSizeListArray.from_arrays(values, PER_ROW)})
    else:
        table = image_table(odd_floats(6), nulls=[2])
    pq.write_table(table, path, compression="none", use_dictionary=False)
    with pytest.raises(Unsupported):
        read_pages(path, 0)


def test_a_column_chunk_cut_anywhere_is_refused_not_misread(tmp_path):
    path = tmp_path / "images.parquet"
    pq.write_table(image_table(odd_floats(5)), path, compression="none", use_dictionary=False, data_page_size=5000)
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    data = path.read_bytes()[chunk.data_page_offset : chunk.data_page_offset + chunk.total_compressed_size]
    for cut in [*range(200), *range(len(data) - 50, len(data))]:
        with pytest.raises(Unsupported):
            copy_float_pages(memoryview(data[:cut]), np.empty(5 * PER_ROW, np.float32), PER_ROW, 3)
    header, header_end = _read_struct(memoryview(data), 0, 0)
    values_at, _ = _values_of(header, memoryview(data)[header_end : header_end + header[3]], 0, PER_ROW, 3)
    for at in range(header_end + values_at):  # a header or level byte changed: refused, or read to the same values
        changed = bytearray(data)
        changed[at] ^= 0x55
        out = np.empty(5 * PER_ROW, np.float32)
        try:
            copy_float_pages(memoryview(bytes(changed)), out, PER_ROW, 3)
        except Unsupported:
            continue
        assert out.tobytes() == pyarrow_values(path, 0), at


def rewrite_shard(directory, **write) -> None:
    """The first train shard written again by pyarrow, same schema and metadata, with other options."""
    shard = min((directory / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table, shard, **write)


def test_a_compressed_shard_is_decoded_by_pyarrow(parquet_dataset, tmp_path):
    import shutil

    h5, source = parquet_dataset
    directory = tmp_path / "dataset_parquet"
    shutil.copytree(source, directory)
    rewrite_shard(directory, compression="zstd", row_group_size=40)
    with open_dataset(h5) as stored, open_dataset(directory) as ds:
        got = np.concatenate([x for x, _ in ds["train"].batches(64)])
        assert ds["train"]._table.groups_decoded_by_arrow == 3  # the zstd shard's groups; the rest from pages
        assert got.tobytes() == np.concatenate([x for x, _ in stored["train"].batches(64)]).tobytes()


def test_a_shard_with_a_missing_image_is_an_error(parquet_dataset, tmp_path):
    import shutil

    _, source = parquet_dataset
    directory = tmp_path / "dataset_parquet"
    shutil.copytree(source, directory)
    shard = min((directory / "data").glob("train-*.parquet"))
    table = pq.read_table(shard)
    index = table.schema.get_field_index("image")
    images = table.column(index).combine_chunks()
    mask = np.zeros(len(images), bool)
    mask[3] = True
    holed = pa.FixedSizeListArray.from_arrays(images.flatten(), type=images.type, mask=pa.array(mask))
    pq.write_table(table.set_column(index, table.schema.field(index), holed), shard, compression="none")
    with open_dataset(directory) as ds, pytest.raises(DatasetError, match="missing images"):
        ds["train"][0:10]


def test_remembered_repetition_levels_are_only_taken_for_the_same_place_in_a_row():
    from cutout_etl.formats.parquet_pages import _check_rep

    levels = memoryview(bytes([0x03, 0b11111110, 0x10, 0x01]))  # one 8-value group (a row start), then 8 ones
    _check_rep(levels, 16, 0, 16)  # one row of 16 values
    _check_rep(levels, 16, 0, 16)  # remembered
    for first, per_row, count in [(1, 16, 16), (0, 8, 16), (0, 16, 15)]:
        with pytest.raises(Unsupported):
            _check_rep(levels, count, first, per_row)
