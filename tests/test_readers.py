"""Inputs that are readable in part: columns the tool does not need, and datasets whose shards are damaged."""

from __future__ import annotations

import builtins
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cutout_etl import open_dataset, pipeline
from cutout_etl.errors import DatasetError, InputFileError
from cutout_etl.inputs import page_cache, readers, row_reader
from cutout_etl.schema import Columns

from .conftest import make_table, run_cli, write_table
from .test_failures import corrupt_table_name, good, write_with_binary128

# ---------------------------------------------------------------- a column h5py cannot map


@pytest.fixture(params=["contiguous", "chunked"])
def with_binary128(request, tmp_path):
    """Three class files; the stars carry an extra 128-bit float column between DECJ2000 and SPECTYPE."""
    stars = make_table(9, b"STAR", 200, seed=3)
    path = write_with_binary128(
        stars, tmp_path / "stars.hdf5", "FLUX_R16", after="DECJ2000", chunked=request.param == "chunked"
    )
    return [*good(tmp_path), path], stars


def test_unused_column_that_cannot_be_mapped_is_skipped_and_the_rest_read_bit_exact(with_binary128):
    files, stars = with_binary128
    with h5py.File(files[-1]) as f:
        info = readers.inspect_table(files[-1], f, None, Columns())
        assert info.notes == ["column 'FLUX_R16' (128-bit float) cannot be read; skipped"]
        assert [c["name"] for c in info.column_list] == ["ID", "RAJ2000", "DECJ2000", "SPECTYPE", "image"]
        rows = np.concatenate([chunk for _, chunk in readers.iter_chunks(info, f, chunk_rows=4)])
        reader = readers.RowReader(info, f)
        some = reader.read(np.array([1, 5, 6]))
        raw = reader._fd is not None  # contiguous: pread at the file's offsets; chunked: h5py with this memory type
        reader.close()
    assert raw == (not chunked(files[-1]))
    assert rows["image"].tobytes() == np.asarray(stars["image"]).tobytes()
    assert (
        rows["RAJ2000"].tolist() == stars["RAJ2000"].tolist() and rows["ID"].tolist() == stars.as_array()["ID"].tolist()
    )
    assert some["image"].tobytes() == np.asarray(stars["image"])[[1, 5, 6]].tobytes()


def test_build_warns_about_the_skipped_column_and_writes_every_row(with_binary128, tmp_path):
    files, stars = with_binary128
    out = tmp_path / "dataset.h5"
    code, _, stderr = run_cli("build", *files, "-o", out)
    assert code == 0, stderr
    assert f"warning: {files[-1]}: column 'FLUX_R16' (128-bit float) cannot be read; skipped" in stderr.splitlines()
    with open_dataset(out) as ds:
        report = ds.metadata["report"]
        index = [f["name"] for f in report["files"]].index("stars.hdf5")
        assert report["files"][index]["notes"] == ["column 'FLUX_R16' (128-bit float) cannot be read; skipped"]
        written = np.concatenate([ds[s].read() for s in ds.splits])
    mine = written[written["source_file"] == index]
    assert len(mine) == len(stars)
    assert mine["image"].tobytes() == np.asarray(stars["image"])[mine["source_row"]].tobytes()


def test_inspect_lists_the_skipped_column_as_a_warning(with_binary128):
    files, _ = with_binary128
    code, stdout, stderr = run_cli("inspect", files[-1], "--classes", "STAR", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["ok"] and report["files"][0]["usable"]
    assert {
        "level": "warning",
        "file": "stars.hdf5",
        "message": "column 'FLUX_R16' (128-bit float) cannot be read; skipped",
        "count": None,
    } in report["problems"]


def test_inspect_names_a_file_with_a_corrupt_name(tmp_path):
    files, message = corrupt_table_name(tmp_path)
    code, stdout, stderr = run_cli("inspect", files[-1], "--json")
    assert code == 1, stderr
    problems = json.loads(stdout)["problems"]
    assert problems[0]["level"] == "error" and problems[0]["message"].startswith(message)


def chunked(path: Path) -> bool:
    with h5py.File(path) as f:
        return f["data"].chunks is not None


# ---------------------------------------------------------------- damaged Parquet shards


@pytest.fixture
def parquet_dataset(class_files, tmp_path):
    directory = tmp_path / "dataset_parquet"
    pipeline.build(class_files, str(directory) + "/")
    return directory


def shard(directory: Path) -> Path:
    return directory / "data" / "train-00000-of-00001.parquet"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [truncate, empty], ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["verify", "convert"])
def test_a_truncated_or_empty_shard_is_named(parquet_dataset, damage, command, tmp_path):
    damage(shard(parquet_dataset))
    args = [command, parquet_dataset] + ([tmp_path / "back.h5"] if command == "convert" else [])
    code, _, stderr = run_cli(*args, "--quiet")
    assert code == 1
    assert stderr.startswith(f"error: {shard(parquet_dataset)}: not a readable Parquet file (truncated or corrupt: ")
    assert stderr.count("\n") == 1 and not (tmp_path / "back.h5").exists()


def test_open_dataset_raises_dataset_error_for_a_damaged_shard(parquet_dataset):
    truncate(shard(parquet_dataset))
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        open_dataset(parquet_dataset)


def test_a_shard_corrupt_in_its_row_data_is_a_dataset_error(parquet_dataset, tmp_path):
    path = shard(parquet_dataset)
    raw = bytearray(path.read_bytes())
    raw[4:260] = bytes(256)  # the first column chunk: page header and compressed IDs; the footer is intact
    path.write_bytes(raw)
    with open_dataset(parquet_dataset) as ds, pytest.raises(DatasetError, match=f"{path}: not a readable Parquet file"):
        ds["train"].read()
    code, _, stderr = run_cli("verify", parquet_dataset, "--quiet")
    assert code == 1 and stderr.startswith(
        f"error: {path}: not a readable Parquet file (truncated or corrupt: row group 0"
    )


# ---------------------------------------------------------------- IDs Parquet cannot store


def test_convert_to_parquet_names_the_dataset_table_and_row_of_an_id_that_is_not_utf8(tmp_path):
    odd = make_table(6, b"GALAXY", 0)
    odd["ID"][4] = b"\xe9obj"
    files = [
        write_table(odd, tmp_path / "g.h5"),
        *good(tmp_path)[1:],
        write_table(make_table(6, b"STAR", 200), tmp_path / "s.h5"),
    ]
    h5 = tmp_path / "dataset.h5"
    assert run_cli("build", *files, "-o", h5, "--quiet")[0] == 0
    with open_dataset(h5) as ds:
        table, row = next(
            (s, int(np.flatnonzero(ds[s].read()["ID"] == b"\xe9obj")[0]))
            for s in ds.splits
            if b"\xe9obj" in ds[s].read()["ID"]
        )
    code, _, stderr = run_cli("convert", h5, f"{tmp_path / 'out'}/", "--quiet")
    assert code == 1
    assert stderr == (
        f"error: {h5}: table {table} row {row}: ID b'\\xe9obj' is not UTF-8 text, "
        "which Parquet's string columns need; write HDF5 instead\n"
    )
    assert not (tmp_path / "out").exists()


def test_the_parquet_writer_itself_refuses_an_id_that_is_not_utf8_with_the_same_error(tmp_path):
    from cutout_etl.errors import InvalidRowError
    from cutout_etl.formats.parquet import ParquetSink
    from cutout_etl.inputs.records import Block
    from cutout_etl.schema import output_dtype

    records = np.zeros(3, output_dtype(8, 6, (2, 2, 1)))
    records["ID"] = [b"a", b"b", b"\xffc"]
    sink = ParquetSink(tmp_path / "out", {"train": 3}, 4, ["GALAXY"])
    with pytest.raises(InvalidRowError, match=r"^train: row 2: ID b'\\xffc' is not UTF-8 text"):
        sink.write("train", np.arange(3), Block.from_records(records))
    sink.close()


# ---------------------------------------------------------------- compression filters from plugins


def test_hdf5plugin_is_imported_only_for_a_table_that_needs_a_missing_filter(tmp_path, monkeypatch):
    """A stand-in hdf5plugin records its import: plain tables never load it, a Blosc table does."""
    from .test_failures import filter_not_installed

    inputs, message = filter_not_installed(tmp_path)  # before the stand-in: it would skip the test
    fake = tmp_path / "fake_site"
    fake.mkdir()
    (fake / "hdf5plugin.py").write_text("import builtins\nbuiltins._cutout_etl_hdf5plugin_loaded = True\n")
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "hdf5plugin", raising=False)
    monkeypatch.setattr(builtins, "_cutout_etl_hdf5plugin_loaded", False, raising=False)
    try:
        with h5py.File(inputs[0]) as f:
            readers.inspect_table(inputs[0], f, None, Columns())
        assert not builtins._cutout_etl_hdf5plugin_loaded
        with h5py.File(inputs[-1]) as f, pytest.raises(InputFileError) as caught:
            readers.inspect_table(inputs[-1], f, None, Columns())
    finally:
        sys.modules.pop("hdf5plugin", None)  # the stand-in must not make later tests think the plugin is installed
    assert builtins._cutout_etl_hdf5plugin_loaded  # imported, and the filter still missing: named
    assert str(caught.value) == message


def test_a_sidecar_that_is_not_text_is_a_dataset_error(parquet_dataset):
    (parquet_dataset / "cutout_etl.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DatasetError, match="unreadable cutout-etl metadata"):
        open_dataset(parquet_dataset)


@pytest.mark.parametrize("in_memory", [False, True])
def test_advise_asks_the_kernel_for_exactly_the_rows_of_the_coming_block(tmp_path, monkeypatch, in_memory):
    """The write pass prefetches the next block (posix_fadvise WILLNEED): cold inputs are read ahead, not row by row.

    An input all in the page cache gets no advice (it would only cost calls).
    """
    path = write_table(make_table(30, b"STAR", seed=1), tmp_path / "stars.hdf5")
    calls = []
    monkeypatch.setattr(
        row_reader.os, "posix_fadvise", lambda fd, offset, length, advice: calls.append((offset, length))
    )
    monkeypatch.setattr(row_reader, "all_cached", lambda fd, offset, length: in_memory)
    with h5py.File(path) as f:
        info = readers.inspect_table(path, f, None, Columns())
        reader = readers.RowReader(info, f)
        reader.advise(np.array([2, 3, 4, 9, 20]))
        offset, size = f["data"].id.get_offset(), info.dtype.itemsize
        reader.close()
    expected = [(offset + 2 * size, 3 * size), (offset + 9 * size, size), (offset + 20 * size, size)]
    assert calls == ([] if in_memory else expected)


def test_a_file_just_read_is_in_the_page_cache_and_its_end_is_not(tmp_path):
    """What decides whether advice is given (inputs/page_cache.py, Linux cachestat)."""
    path = tmp_path / "bytes.bin"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 1 << 20):
            pass
        if not page_cache.all_cached(fd, 0, 1 << 20):
            pytest.skip("no cachestat(2) here (Linux < 6.5), or the file system does not say")
        assert not page_cache.all_cached(fd, 0, 2 << 20)  # the second MiB is past the end: never cached
    finally:
        os.close(fd)


def test_without_posix_fadvise_reads_go_unadvised(tmp_path, monkeypatch):
    """macOS has no posix_fadvise: both passes read without read-ahead advice instead of failing."""
    path = write_table(make_table(30, b"STAR", seed=1), tmp_path / "stars.hdf5")
    monkeypatch.delattr(row_reader.os, "posix_fadvise", raising=False)
    with h5py.File(path) as f:
        info = readers.inspect_table(path, f, None, Columns())
        chunks = [rows for _, rows in readers.iter_chunks(info, f, chunk_rows=8)]
        reader = readers.RowReader(info, f)
        reader.advise(np.array([2, 3]))
        reader.close()
    assert sum(len(rows) for rows in chunks) == 30
