"""examples/slurm: the batch script and the dask-jobqueue script run what they say, without a SLURM."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pytest
import typer

from cutout_etl.cli import app
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions

if TYPE_CHECKING:
    from typing import Self

SLURM = Path(__file__).resolve().parents[1] / "examples" / "slurm"

# Each stub logs its command line; the long-running ones then wait to be killed, as the real ones would.
STUB = """#!/bin/bash
printf '%s\\n' "$(basename "$0") $*" >> "$STUB_LOG"
{action}
"""
STUBS = {
    "dask": 'if [ "$1" = scheduler ]; then echo \'{{"address": "tcp://stub:8786"}}\' > "$3"; exec sleep 30; fi',
    "srun": "exec sleep 30",
    "cutout-etl": "",
}


def long_options(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts if opt.startswith("--")}


@pytest.fixture
def venv(tmp_path) -> Path:
    """A stand-in for the users' environment: `activate` puts stub dask, srun and cutout-etl first on PATH."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    for name, action in STUBS.items():
        (bin_dir / name).write_text(STUB.format(action=action.replace("{{", "{").replace("}}", "}")))
        (bin_dir / name).chmod(0o755)
    return bin_dir.parent


def test_sbatch_script_passes_bash_syntax_check():
    subprocess.run(["bash", "-n", str(SLURM / "build.sbatch")], check=True)


def test_sbatch_script_runs_scheduler_workers_build_and_verify(venv, tmp_path):
    """With DATA and OUT set and no $SCRATCH: the commands it runs, and a build the CLI accepts."""
    data, out = tmp_path / "data", tmp_path / "shared" / "dataset.h5"
    data.mkdir()
    out.parent.mkdir()
    inputs = [data / f"image_table_{name}.hdf5" for name in ("galaxy", "qso", "star")]
    for path in inputs:
        path.touch()
    log = tmp_path / "stub.log"
    env = {k: v for k, v in os.environ.items() if k != "SCRATCH" and not k.startswith("SLURM_")}
    env.update(
        VENV=str(venv),
        DATA=str(data),
        OUT=str(out),
        STUB_LOG=str(log),
        SLURM_JOB_ID="42",
        SLURM_NTASKS="8",
        TMPDIR=str(tmp_path),
    )
    done = subprocess.run(
        ["bash", str(SLURM / "build.sbatch")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    scheduler_file = out.parent / "dask-scheduler-42.json"
    lines = log.read_text().splitlines()
    assert f"dask scheduler --scheduler-file {scheduler_file} --dashboard-address :0" in lines
    workers = next(line for line in lines if line.startswith("srun "))
    assert workers.startswith(f"srun --ntasks=8 --cpus-per-task=1 dask worker --scheduler-file {scheduler_file}")
    assert "--nthreads 1 --nworkers 1" in workers
    build = [shlex.split(line) for line in lines if line.startswith("cutout-etl build")]
    assert build == [
        [
            "cutout-etl",
            "build",
            *map(str, inputs),
            "-o",
            str(out),
            "--overwrite",
            "--scheduler-file",
            str(scheduler_file),
            "--workers",
            "8",
            "--chunk-rows",
            "512",
        ]
    ]
    assert {a for a in build[0] if a.startswith("--")} <= long_options("build")
    assert lines[-1] == f"cutout-etl verify {out}"
    assert not scheduler_file.exists()  # removed on exit


class FakeSLURMCluster:
    """Records what the example asks dask-jobqueue for."""

    made: ClassVar[list[FakeSLURMCluster]] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.jobs, self.closed = kwargs, None, False
        self.scheduler_address = "tcp://login:8786"
        self.made.append(self)

    def job_script(self) -> str:
        return "#!/usr/bin/env bash\n#SBATCH -J dask-worker\n"

    def scale(self, jobs: int) -> None:
        self.jobs = jobs

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True


def test_slurmcluster_script_builds_with_the_cluster_it_asked_for(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", types.SimpleNamespace(SLURMCluster=FakeSLURMCluster))
    spec = importlib.util.spec_from_file_location("build_slurmcluster", SLURM / "build_slurmcluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def fake_build(paths, out, read, cluster):
        calls.append((paths, out, read, cluster))
        return {"tables_rows": {"train": {"rows": 7}, "val": {"rows": 2}}, "digest": "abc"}

    monkeypatch.setattr(module, "Client", lambda cluster: contextlib.nullcontext())
    monkeypatch.setattr(module, "pipeline", types.SimpleNamespace(build=fake_build))
    inputs = [str(tmp_path / "a.hdf5"), str(tmp_path / "b.hdf5")]
    out = str(tmp_path / "dataset.h5")
    monkeypatch.setattr(
        sys, "argv", ["build_slurmcluster.py", *inputs, "-o", out, "--jobs", "3", "--chunk-rows", "256"]
    )
    module.main()
    cluster = FakeSLURMCluster.made[-1]
    assert cluster.jobs == 3 and cluster.closed
    assert (cluster.kwargs["cores"], cluster.kwargs["processes"]) == (4, 4)
    assert calls == [
        (
            [Path(p) for p in inputs],
            out,
            ReadOptions(chunk_rows=256),
            ClusterOptions(scheduler="tcp://login:8786", workers=12),
        )
    ]
    printed = capsys.readouterr().out
    assert printed.startswith(cluster.job_script())
    assert printed.endswith(f"{out}: 9 rows, digest abc\n")
