"""Parquet written by Dask workers, a whole shard a task, is the local Parquet build byte for byte."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from cutout_etl import demo, pipeline
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions
from cutout_etl.verify import verify

CHUNK = 16


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield ClusterOptions(scheduler=c.scheduler_address)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return demo.write_demo_files(tmp_path_factory.mktemp("parquet_workers_demo"), rows=150)


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def row_groups(shard: bytes) -> bytes:
    """A shard without its footer (FileMetaData, its 4-byte length, the magic)."""
    (length,) = struct.unpack("<I", shard[-8:-4])
    return shard[: len(shard) - 8 - length]


def footer_metadata(path: Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_metadata(path).metadata[b"cutout_etl"])


def same_metadata(a: dict, b: dict) -> bool:
    """Equal, but for the statistics' moments (merged from per-task partials: equal to rounding, ~1e-16)."""
    assert {k: v for k, v in a.items() if k != "stats"} == {k: v for k, v in b.items() if k != "stats"}
    assert a["stats"]["n_cutouts"] == b["stats"]["n_cutouts"]
    for band, values in a["stats"]["bands"].items():
        for key, value in values.items():
            other = b["stats"]["bands"][band][key]
            assert value == (pytest.approx(other, rel=1e-12, abs=0.0) if isinstance(value, float) else other), key
    return True


# 40 rows a shard over 16-row blocks: blocks run over shard ends; 48: shards end on block ends
@pytest.mark.parametrize("rows_per_shard", [40, 48, 100_000])
def test_parquet_from_workers_is_the_local_parquet_byte_for_byte(files, cluster, tmp_path, rows_per_shard):
    read, output = ReadOptions(chunk_rows=CHUNK), pipeline.OutputOptions(rows_per_shard=rows_per_shard)
    local = pipeline.build(files, str(tmp_path / "local") + "/", read, output=output)
    on_dask = pipeline.build(files, str(tmp_path / "dask") + "/", read, output=output, cluster=cluster)
    assert on_dask["digest"] == local["digest"] and on_dask["checksums"] == local["checksums"]
    assert on_dask["stats"]["n_cutouts"] == local["stats"]["n_cutouts"]
    ours, theirs = every_file(tmp_path / "local"), every_file(tmp_path / "dask")
    assert sorted(ours) == sorted(theirs)
    shards = [name for name in ours if name.startswith("data/")]
    assert len([name for name in shards if "/train-" in name]) == -(
        -local["tables_rows"]["train"]["rows"] // rows_per_shard
    )
    for name in shards:
        assert row_groups(ours[name]) == row_groups(theirs[name]), name  # the data, byte for byte
        assert same_metadata(footer_metadata(tmp_path / "local" / name), footer_metadata(tmp_path / "dask" / name))
    assert same_metadata(on_dask, json.loads(theirs["cutout_etl.json"]))
    assert verify(tmp_path / "dask")["ok"]


def test_sealing_renames_the_shards_and_removes_attempts_no_task_returned(tmp_path):
    """A worker killed mid-shard leaves its temporary; Dask retries the task elsewhere under a new name."""
    import pyarrow.parquet as pq

    from cutout_etl.formats.parquet import arrow_schema
    from cutout_etl.formats.parquet_shards import ShardWriter, seal_shards, temp_shard_path

    schema = arrow_schema(4, ["A", "B"])
    final = tmp_path / "train-00000-of-00001.parquet"
    temp, stale = temp_shard_path(final), temp_shard_path(final)
    ShardWriter(temp, schema).close()
    stale.write_bytes(b"PAR1 cut short")
    seal_shards(schema, [(temp, final)], '{"format": "x"}')
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert pq.read_metadata(final).metadata[b"cutout_etl"] == b'{"format": "x"}'
