"""The write pass on a Dask cluster gives the same dataset as the local path."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from cutout_etl import demo, open_dataset, pipeline
from cutout_etl.errors import InputChangedError, UsageError
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.execution.dask_connect import allocation_cpus
from cutout_etl.inputs.scan import ReadOptions
from cutout_etl.verify import MOMENTS, verify

CHUNK = 16  # small blocks, and 2 blocks a task: 600 rows make ~20 tasks over three tables


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield ClusterOptions(scheduler=c.scheduler_address, blocks_per_task=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_demo")
    demo.write_demo_files(root, rows=200)
    return sorted(root.glob("*.hdf5"))


@pytest.fixture(scope="module")
def built(files, cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_build")
    read = ReadOptions(chunk_rows=CHUNK)
    local = pipeline.build(files, root / "local.h5", read)
    on_dask = pipeline.build(files, root / "dask.h5", read, cluster=cluster)
    return root, local, on_dask


def _same_stats(a: dict, b: dict) -> None:
    assert a["n_cutouts"] == b["n_cutouts"] and a["bands"].keys() == b["bands"].keys()
    for band, values in a["bands"].items():
        for key, value in values.items():
            other = b["bands"][band][key]
            if key in MOMENTS and isinstance(value, float):
                assert math.isclose(value, other, rel_tol=1e-12, abs_tol=0.0), (band, key, value, other)
            else:
                assert value == other, (band, key)  # counts, histograms, quantiles: exactly


def test_build_on_dask_equals_local(built):
    root, local, on_dask = built
    with open_dataset(root / "local.h5") as a, open_dataset(root / "dask.h5") as b:
        assert a.splits == b.splits
        for split in a.splits:
            ra, rb = a[split].read(), b[split].read()
            assert len(ra) > CHUNK * 2  # several tasks per table
            assert np.array_equal(ra["ID"], rb["ID"])
            assert ra.tobytes() == rb.tobytes()  # every column, images bit-equal
    _same_stats(local["stats"], on_dask["stats"])
    assert local["digest"] == on_dask["digest"]
    assert local["checksums"] == on_dask["checksums"]
    assert verify(root / "dask.h5")["ok"]


def test_merge_and_split_on_dask_equal_local(files, cluster, tmp_path):
    read = ReadOptions(chunk_rows=CHUNK)
    merged_local = pipeline.merge(files, tmp_path / "m_local.h5", read)
    merged_dask = pipeline.merge(files, tmp_path / "m_dask.h5", read, cluster=cluster)
    assert merged_local["digest"] == merged_dask["digest"]
    split_local = pipeline.split(tmp_path / "m_local.h5", tmp_path / "s_local.h5", chunk_rows=CHUNK)
    split_dask = pipeline.split(tmp_path / "m_dask.h5", tmp_path / "s_dask.h5", chunk_rows=CHUNK, cluster=cluster)
    assert split_local["digest"] == split_dask["digest"]
    _same_stats(split_local["stats"], split_dask["stats"])
    assert verify(tmp_path / "s_dask.h5")["ok"]


def test_an_error_in_a_task_comes_back_as_the_library_error(files, cluster, tmp_path):
    """An input truncated after the scan: the worker's InputChangedError reaches the caller, one line."""
    copies = []
    for f in files:
        copies.append(tmp_path / f.name)
        copies[-1].write_bytes(f.read_bytes())

    def truncate_after_scan(stage: str, done: int, total: int) -> None:
        if stage == "scan" and done == total:
            os.truncate(copies[0], copies[0].stat().st_size // 2)

    with pytest.raises(InputChangedError) as caught:
        pipeline.build(
            copies, tmp_path / "out.h5", ReadOptions(chunk_rows=CHUNK), progress=truncate_after_scan, cluster=cluster
        )
    assert copies[0].name in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out.h5").exists()


def test_usage_errors_come_before_any_work(files, tmp_path):
    with pytest.raises(UsageError, match="'nowhere' is not local, dask or a scheduler address"):
        pipeline.build(files, tmp_path / "out.h5", cluster=ClusterOptions(scheduler="nowhere"))
    with pytest.raises(UsageError, match="--worker-timeout: must be a positive number of seconds"):
        pipeline.build(files, str(tmp_path / "out") + "/", cluster=ClusterOptions(scheduler="dask", worker_timeout=0))
    assert list(tmp_path.iterdir()) == []


def test_cli_build_with_a_local_cluster(files, tmp_path):
    from typer.testing import CliRunner

    from cutout_etl.cli import app

    common = ["build", *map(str, files), "--chunk-rows", str(CHUNK), "-q"]
    result = CliRunner().invoke(
        app, [*common, "-o", str(tmp_path / "d.h5"), "--scheduler", "dask", "--workers", "2", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert verify(tmp_path / "d.h5")["ok"]
    result = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "x.h5"), "--scheduler", "nowhere"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == "error: --scheduler: 'nowhere' is not local, dask or a scheduler address such as tcp://host:8786\n"
    )


def test_stats_on_dask_equal_local(built, cluster):
    root, local, _ = built
    recomputed = pipeline.stats(root / "dask.h5", chunk_rows=CHUNK, cluster=cluster)
    _same_stats(local["stats"], recomputed["stats"])
    assert verify(root / "dask.h5")["ok"]


def test_workers_without_a_cluster_is_a_usage_error(files, tmp_path):
    with pytest.raises(UsageError, match="--workers: needs --scheduler dask"):
        pipeline.build(files, tmp_path / "out.h5", cluster=ClusterOptions(workers=2))


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "affinity"),
        ({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "2"}, 1),
        ({"SLURM_CPUS_ON_NODE": "1"}, 1),
        ({"SLURM_JOB_CPUS_PER_NODE": "1(x2),4"}, 1),
        ({"SLURM_CPUS_PER_TASK": "4096"}, "affinity"),  # a SLURM count above the mask does not raise it
        ({"SLURM_CPUS_PER_TASK": "", "SLURM_CPUS_ON_NODE": "junk"}, "affinity"),
    ],
)
def test_the_local_cluster_size_is_the_allocation(environ, expected):
    affinity = len(os.sched_getaffinity(0))
    assert allocation_cpus(environ) == (affinity if expected == "affinity" else expected)


def test_the_allocation_follows_the_affinity_mask_of_a_real_process():
    """`taskset -c 0` (what SLURM's task/affinity does): one CPU, whatever the node has."""
    import shutil
    import subprocess
    import sys

    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    code = "from cutout_etl.execution.dask_connect import allocation_cpus; print(allocation_cpus({}))"
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "1\n", done.stderr


def test_scheduler_dask_without_workers_starts_one_worker_per_allocated_cpu(files, tmp_path, monkeypatch):
    started = []
    real = distributed.LocalCluster

    def recording(*args, **kwargs):
        started.append(kwargs["n_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", recording)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    pipeline.build(files, tmp_path / "out.h5", ReadOptions(chunk_rows=CHUNK), cluster=ClusterOptions(scheduler="dask"))
    assert started == [1]
    assert verify(tmp_path / "out.h5")["ok"]
