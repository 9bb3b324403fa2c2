"""examples/slurm without a SLURM: the scripts' logic, with srun, sbatch and scancel faked.

The real check is `make test-slurm` (tests/slurm/run.sh), which submits them to a one-node SLURM.
"""

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

from cutout_etl import open_dataset, pipeline
from cutout_etl.cli import app
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions

if TYPE_CHECKING:
    from typing import Self

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "examples" / "slurm"
HARNESS = ROOT / "tests" / "slurm"

# Each stub logs its command line, then does what its action says.
STUB = '#!/bin/bash\nprintf \'%s\\n\' "$(basename "$0") $*" >> "$STUB_LOG"\n'
# Stand-ins for the commands build.sbatch runs: the long-running ones wait to be killed, as the real ones would.
# scancel --signal=SIG JOB.STEP signals the step srun started (its pid kept beside the log).
SCANCEL = 'kill -"${1#--signal=}" "$(cat "$STUB_LOG.srun")"'
FAKE_DASK = {
    "dask": 'if [ "$1" = scheduler ]; then echo \'{"address": "tcp://stub:1"}\' > "$3"; exec sleep 30; fi',
    "srun": 'echo $$ > "$STUB_LOG.srun"\nexec sleep 30',
    "scancel": SCANCEL,
    "cutout-etl": "",
}
# Only SLURM faked: srun runs its command here, the real dask and cutout-etl come next on PATH.
FAKE_SLURM = {
    "srun": 'while [[ "$1" == --* ]]; do shift; done\necho $$ > "$STUB_LOG.srun"\nexec "$@"',
    "scancel": SCANCEL,
}
BIN = Path(sys.executable).parent


def long_options(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts if opt.startswith("--")}


def make_venv(root: Path, stubs: dict[str, str], then: Path | None = None) -> Path:
    """A stand-in for the users' environment: `activate` puts the stubs first on PATH, then `then`."""
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    path = f"{bin_dir}:{then}" if then else str(bin_dir)
    (bin_dir / "activate").write_text(f'export PATH="{path}:$PATH"\n')
    for name, action in stubs.items():
        (bin_dir / name).write_text(STUB + action + "\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir.parent


def job_env(tmp_path: Path, venv: Path, **settings: str) -> dict[str, str]:
    """The environment of a batch job: no $SCRATCH, SLURM's variables, the stub log."""
    env = {k: v for k, v in os.environ.items() if k != "SCRATCH" and not k.startswith(("SLURM_", "DASK_"))}
    env.update(VENV=str(venv), STUB_LOG=str(tmp_path / "stub.log"), TMPDIR=str(tmp_path), **settings)
    return env


def run_script(script: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def logged(tmp_path: Path) -> list[str]:
    log = tmp_path / "stub.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(
    "script",
    [
        SLURM / "build.sbatch",
        SLURM / "step.sbatch",
        SLURM / "chain.sh",
        HARNESS / "run.sh",
        HARNESS / "one_node_slurm.sh",
    ],
)
def test_scripts_pass_bash_syntax_check(script):
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


@pytest.fixture
def class_files(tmp_path) -> tuple[Path, list[Path]]:
    data = tmp_path / "data"
    data.mkdir()
    inputs = [data / f"image_table_{name}.hdf5" for name in ("galaxy", "qso", "star")]
    for path in inputs:
        path.touch()
    return data, inputs


def test_sbatch_script_runs_scheduler_workers_build_and_verify(tmp_path, class_files):
    """With DATA and OUT set and no $SCRATCH: the commands it runs, and a build the CLI accepts."""
    (data, inputs), out = class_files, tmp_path / "shared" / "dataset.h5"
    out.parent.mkdir()
    env = job_env(tmp_path, make_venv(tmp_path, FAKE_DASK), DATA=str(data), OUT=str(out))
    done = run_script(SLURM / "build.sbatch", env | {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "8"})
    assert done.returncode == 0, done.stderr
    scheduler_file = out.parent / "dask-scheduler-42.json"
    lines = logged(tmp_path)
    assert f"dask scheduler --scheduler-file {scheduler_file} --port 0 --dashboard-address :0" in lines
    workers = next(line for line in lines if line.startswith("srun "))
    assert workers.startswith(f"srun --ntasks=8 --cpus-per-task=1 dask worker --scheduler-file {scheduler_file}")
    assert "--nthreads 1 --nworkers 1 --memory-limit 1843MiB" in workers and "--host" not in workers
    build = [shlex.split(line) for line in lines if line.startswith("cutout-etl build")]
    assert build == [
        ["cutout-etl", "build", *map(str, inputs), "-o", str(out), "--overwrite"]
        + ["--scheduler-file", str(scheduler_file), "--workers", "8", "--chunk-rows", "512"]
    ]
    assert {a for a in build[0] if a.startswith("--")} <= long_options("build")
    assert lines[-2:] == [f"cutout-etl verify {out}", "scancel --signal=TERM 42.0"]  # workers stopped at the end
    assert not scheduler_file.exists()  # removed on exit


def test_sbatch_script_binds_scheduler_and_workers_to_dask_host(tmp_path, class_files):
    env = job_env(tmp_path, make_venv(tmp_path, FAKE_DASK), DATA=str(class_files[0]), OUT=str(tmp_path / "d.h5"))
    env |= {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "DASK_HOST": "127.0.0.1", "SLURM_MEM_PER_CPU": "1000"}
    done = run_script(SLURM / "build.sbatch", env)
    assert done.returncode == 0, done.stderr
    started = [line for line in logged(tmp_path) if line.startswith(("dask scheduler", "srun"))]
    assert len(started) == 2 and all(line.endswith("--host 127.0.0.1") for line in started)
    assert "--memory-limit 900MiB" in started[1]  # 90 % of the job's memory per CPU


def test_sbatch_script_without_data_or_scratch_names_what_to_set(tmp_path):
    env = job_env(tmp_path, make_venv(tmp_path, FAKE_DASK), SLURM_JOB_ID="1", SLURM_NTASKS="1")
    done = run_script(SLURM / "build.sbatch", env)
    assert done.returncode != 0
    assert "set DATA and OUT (or SCRATCH)" in done.stderr
    assert logged(tmp_path) == []  # nothing started


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [("exec sleep 30", "no {file} after 2 s"), ("exit 1", "the Dask scheduler exited")],
    ids=["never-writes-its-file", "exits"],
)
def test_sbatch_script_gives_up_on_a_scheduler_without_file(tmp_path, class_files, scheduler, message):
    """The wait for the scheduler file is bounded (WAIT_SECONDS), and ends at once when the scheduler exits."""
    stubs = FAKE_DASK | {"dask": scheduler}
    out = tmp_path / "dataset.h5"
    env = job_env(tmp_path, make_venv(tmp_path, stubs), DATA=str(class_files[0]), OUT=str(out), WAIT_SECONDS="2")
    # The stub scheduler runs 30 s: an unbounded wait would end in TimeoutExpired.
    done = run_script(SLURM / "build.sbatch", env | {"SLURM_JOB_ID": "3", "SLURM_NTASKS": "1"}, timeout=20)
    assert done.returncode == 1
    assert message.format(file=tmp_path / "dask-scheduler-3.json") in done.stderr
    assert [line.split()[0] for line in logged(tmp_path)] == ["dask"]  # no workers, no build


def test_sbatch_script_builds_the_local_dataset_with_real_dask(tmp_path, demo_files):
    """Only SLURM faked: a real scheduler on a free port, a real worker and `cutout-etl build`, as in a job."""
    data, out = demo_files[0].parent, tmp_path / "shared" / "dataset.h5"
    out.parent.mkdir()
    env = job_env(tmp_path, make_venv(tmp_path, FAKE_SLURM, then=BIN), DATA=str(data), OUT=str(out))
    env |= {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1", "DASK_HOST": "127.0.0.1"}
    done = run_script(SLURM / "build.sbatch", env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    local = pipeline.build(demo_files, tmp_path / "local.h5", read=ReadOptions(chunk_rows=512))
    with open_dataset(out) as ds:
        assert ds.metadata["digest"] == local["digest"]
    assert not (out.parent / "dask-scheduler-5.json").exists()


def test_chain_submits_merge_split_stats_each_after_the_one_before(tmp_path, class_files):
    data, inputs = class_files
    sbatch = 'echo $(( $(grep -c "^sbatch" "$STUB_LOG") + 100 ))'  # job IDs 101, 102, 103
    env = job_env(tmp_path, make_venv(tmp_path, {"sbatch": sbatch}), DATA=str(data), OUT_DIR=str(tmp_path / "run"))
    env["PATH"] = f"{tmp_path / 'venv' / 'bin'}:{env['PATH']}"
    done = run_script(SLURM / "chain.sh", env, "--partition=short", "--time=10")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "101 102 103\n"
    merge, split, stats = (shlex.split(line) for line in logged(tmp_path))
    step, run = str(SLURM / "step.sbatch"), tmp_path / "run"
    assert not any(a.startswith("--dependency") for a in merge)
    assert "--dependency=afterok:101" in split and "--dependency=afterok:102" in stats
    assert "--kill-on-invalid-dep=yes" in split and "--kill-on-invalid-dep=yes" in stats
    for submitted in (merge, split, stats):
        assert (
            submitted[:2] == ["sbatch", "--parsable"] and "--partition=short" in submitted and "--time=10" in submitted
        )
    assert merge[merge.index(step) :] == [step, "merge", *map(str, inputs), "-o", f"{run}/merged.h5", "--overwrite"]
    assert split[split.index(step) :] == [step, "split", f"{run}/merged.h5", "-o", f"{run}/dataset.h5", "--overwrite"]
    assert stats[stats.index(step) :] == [step, "stats", f"{run}/dataset.h5"]


def test_step_script_runs_one_cutout_etl_command_in_the_venv(tmp_path):
    env = job_env(tmp_path, make_venv(tmp_path, {"cutout-etl": "exit 3"}))
    done = run_script(SLURM / "step.sbatch", env, "split", "merged.h5", "-o", "a b.h5")
    assert done.returncode == 3  # the command's status is the job's
    assert logged(tmp_path) == ["cutout-etl split merged.h5 -o a b.h5"]


def test_harness_stops_a_daemon_only_when_its_pid_file_names_that_program(tmp_path):
    """one_node_slurm.sh's stop_daemon: a stale pid file (another program) is left alone, never killed by name."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "x.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        lib = HARNESS / "one_node_slurm.sh"
        for name in ("slurmd", "sleep"):
            subprocess.run(["bash", "-c", f'source {lib}; stop_daemon {name} "$0"', pid_file], check=True, timeout=30)
            if name == "slurmd":
                assert sleeper.poll() is None  # not a slurmd: left running
        assert sleeper.wait(timeout=10) == -15  # the right name: SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


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


def run_slurmcluster_example(monkeypatch, tmp_path, *options: str) -> tuple[FakeSLURMCluster, list]:
    """Runs build_slurmcluster.py's main with a fake SLURMCluster and build; what it asked for."""
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
    monkeypatch.setattr(sys, "argv", ["build_slurmcluster.py", *inputs, "-o", str(tmp_path / "dataset.h5"), *options])
    module.main()
    return FakeSLURMCluster.made[-1], calls


def test_slurmcluster_script_builds_with_the_cluster_it_asked_for(monkeypatch, capsys, tmp_path):
    options = ["--jobs", "3", "--workers-per-job", "2", "--memory-per-worker", "1GB", "--queue", "debug"]
    cluster, calls = run_slurmcluster_example(monkeypatch, tmp_path, *options, "--chunk-rows", "256")
    assert cluster.jobs == 3 and cluster.closed
    asked = cluster.kwargs
    assert (asked["cores"], asked["processes"], asked["queue"], asked["memory"]) == (2, 2, "debug", "1.86 GiB")
    assert (asked["scheduler_options"], asked["worker_extra_args"], asked["account"]) == ({}, [], None)
    out = str(tmp_path / "dataset.h5")
    assert calls == [
        (
            [tmp_path / "a.hdf5", tmp_path / "b.hdf5"],
            out,
            ReadOptions(chunk_rows=256),
            ClusterOptions(scheduler="tcp://login:8786", workers=6),  # waits for every worker of every job
        )
    ]
    printed = capsys.readouterr().out
    assert printed.startswith(cluster.job_script())
    assert printed.endswith(f"{out}: 9 rows, digest abc\n")


def test_slurmcluster_script_binds_scheduler_and_workers_to_host(monkeypatch, tmp_path):
    cluster, _ = run_slurmcluster_example(monkeypatch, tmp_path, "--host", "127.0.0.1", "--account", "astro")
    asked = cluster.kwargs
    assert asked["scheduler_options"] == {"host": "127.0.0.1"}
    assert asked["worker_extra_args"] == ["--host", "127.0.0.1"]
    assert (asked["account"], asked["cores"], asked["processes"]) == ("astro", 4, 4)
