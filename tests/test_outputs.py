"""Output targets: --overwrite replaces only what cutout-etl wrote, a target that appears
meanwhile is never replaced, temporaries are named for their host and process, --fsync
reaches the directory entry, and demo-data never clobbers real files."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from cutout_etl import demo, pipeline
from cutout_etl.dataset import open_dataset
from cutout_etl.demo import DEMO_ATTR, DEMO_FILES, make_class_table, write_demo_files
from cutout_etl.errors import ForeignOutputError, OutputAppearedError, OutputExistsError, OutputWriteError
from cutout_etl.formats import atomic
from cutout_etl.pipeline import OutputOptions
from cutout_etl.verify import verify

from .conftest import SCRIPT, make_table, run_cli, write_class_files, write_table


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (hidden ones included) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_refused(code: int, stderr: str, target: Path, words: str) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: {target}") and words in stderr, stderr


# ---------------------------------------------------------------- item 1, 6: what --overwrite replaces


def test_overwrite_refuses_the_directory_holding_the_inputs(tmp_path):
    proj = tmp_path / "proj"
    files = write_class_files(proj)
    (proj / "notes.txt").write_text("notes\n")
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", proj, "--overwrite", "--quiet")
    assert_refused(code, stderr, proj, "holds the input")
    assert snapshot(tmp_path) == before


def test_convert_and_split_refuse_to_overwrite_the_directory_of_their_source(tmp_path):
    proj = tmp_path / "proj"
    files = write_class_files(proj)
    assert run_cli("merge", *files, "-o", proj / "merged.h5", "--quiet")[0] == 0
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("convert", proj / "merged.h5", proj, "--overwrite", "--quiet")
    assert_refused(code, stderr, proj, "holds the input")
    code, _, stderr = run_cli("split", proj / "merged.h5", "-o", proj, "--overwrite", "--quiet")
    assert_refused(code, stderr, proj, "holds the input")
    assert snapshot(tmp_path) == before


def foreign_text_file(path: Path) -> None:
    path.write_text("precious\n")


def foreign_hdf5_file(path: Path) -> None:
    write_table(make_table(3, b"STAR", 5000), path)  # a class file: HDF5, but no cutout-etl metadata


def foreign_directory(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("notes\n")


def parquet_dataset_plus_a_file(path: Path) -> None:
    files = write_class_files(path.parent / "other_inputs")
    assert run_cli("build", *files, "-o", path, "--format", "parquet", "--quiet")[0] == 0
    (path / "data" / "my_notes.txt").write_text("notes\n")


def parquet_dataset_plus_a_foreign_parquet_file(path: Path) -> None:
    """A user's own Parquet file among the shards: named like no shard cutout-etl writes."""
    files = write_class_files(path.parent / "other_inputs")
    assert run_cli("build", *files, "-o", path, "--format", "parquet", "--quiet")[0] == 0
    (path / "data" / "my_catalogue.parquet").write_bytes((path / "cutout_etl.json").read_bytes())


@pytest.mark.parametrize(
    "make, fmt",
    [
        (foreign_text_file, "hdf5"),
        (foreign_hdf5_file, "hdf5"),
        (foreign_directory, "parquet"),
        (parquet_dataset_plus_a_file, "parquet"),
        (parquet_dataset_plus_a_foreign_parquet_file, "parquet"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_overwrite_refuses_what_cutout_etl_did_not_write(make, fmt, tmp_path):
    files = write_class_files(tmp_path / "in")
    target = tmp_path / "out" / "target"
    target.parent.mkdir()
    make(target)
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", target, "--format", fmt, "--overwrite", "--quiet")
    assert_refused(code, stderr, target, "--overwrite replaces only what cutout-etl wrote")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", ["hdf5", "parquet"])
def test_overwrite_replaces_a_cutout_etl_output(fmt, tmp_path):
    files = write_class_files(tmp_path / "in")
    target = tmp_path / "out"
    assert run_cli("build", *files, "-o", target, "--format", fmt, "--quiet")[0] == 0
    code, _, stderr = run_cli("build", *files, "-o", target, "--format", fmt, "--seed", "5", "--overwrite", "--quiet")
    assert code == 0, stderr
    assert open_dataset(target).metadata["split"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


@pytest.mark.parametrize("output", [".", "", ".."])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_dot_empty_or_parent_is_refused(output, overwrite, tmp_path, monkeypatch):
    files = write_class_files(tmp_path / "in")
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("build", *files, "-o", output, *(["--overwrite"] if overwrite else []), "--quiet")
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "name the output file or directory" in stderr
    assert snapshot(tmp_path) == before


def test_overwrite_dot_is_a_foreign_output(tmp_path, monkeypatch):
    files = write_class_files(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")
    with pytest.raises(ForeignOutputError):
        pipeline.build(files, ".", output=OutputOptions(overwrite=True))


def test_preview_still_replaces_its_image(demo_files, tmp_path):
    png = tmp_path / "grid.png"
    png.write_bytes(b"an older image")
    code, _, stderr = run_cli("preview", *demo_files, "-o", png, "--per-class", "1", "--quiet")
    assert code == 0, stderr
    assert png.read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------- item 7: convert's output format


def test_convert_takes_the_format_from_the_output_path(tmp_path):
    files = write_class_files(tmp_path / "in")
    source = tmp_path / "ds.h5"
    assert run_cli("build", *files, "-o", source, "--quiet")[0] == 0
    assert run_cli("convert", source, tmp_path / "copy.h5", "--quiet")[0] == 0
    assert (tmp_path / "copy.h5").is_file() and h5py.is_hdf5(tmp_path / "copy.h5")
    assert run_cli("convert", source, str(tmp_path / "pq") + "/", "--quiet")[0] == 0
    assert run_cli("convert", tmp_path / "pq", tmp_path / "pq2.parquet", "--quiet")[0] == 0
    assert (tmp_path / "pq2.parquet").is_dir()
    digest = open_dataset(source).metadata["digest"]
    for copy in ("copy.h5", "pq", "pq2.parquet"):
        assert open_dataset(tmp_path / copy).metadata["digest"] == digest
        assert verify(tmp_path / copy)["ok"]


# ---------------------------------------------------------------- item 3: a target that appears meanwhile


def appeared(target: Path) -> str:
    return f"{target}: appeared while running; nothing replaced (use --overwrite to replace an output cutout-etl wrote)"


def appear_during_write(target: Path, make) -> pipeline.ProgressFn:
    def progress(stage: str, done: int, total: int) -> None:
        if stage == "write" and not os.path.lexists(target):
            make(target)

    return progress


def other_runs_file(path: Path) -> None:
    path.write_bytes(b"the other run's dataset")


def empty_directory(path: Path) -> None:
    path.mkdir()


def other_runs_directory(path: Path) -> None:
    path.mkdir()
    (path / "cutout_etl.json").write_text("{}")


APPEARING = [
    (other_runs_file, "hdf5", True),
    (empty_directory, "parquet", True),
    (other_runs_directory, "parquet", True),
    # without renameat2: link(2) for a file; for a directory, rename(2) fails on a non-empty one
    # (it would replace an empty directory made between the last check and the rename)
    (other_runs_file, "hdf5", False),
    (other_runs_directory, "parquet", False),
]


@pytest.mark.parametrize("make, fmt, renameat2", APPEARING, ids=lambda v: getattr(v, "__name__", str(v)))
def test_an_output_that_appears_meanwhile_is_not_replaced(make, fmt, renameat2, tmp_path, monkeypatch):
    if not renameat2:

        def unsupported(*args: object) -> None:
            raise OSError(errno.ENOSYS, "no renameat2")

        monkeypatch.setattr(atomic, "_renameat2", unsupported)
    files = write_class_files(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "target"
    with pytest.raises(OutputAppearedError) as caught:
        pipeline.build(files, target, output=OutputOptions(format=fmt), progress=appear_during_write(target, make))
    assert str(caught.value) == appeared(target)
    expected = tmp_path / "expected"
    make(expected)
    if expected.is_dir():
        assert target.is_dir() and snapshot(target) == snapshot(expected)
    else:
        assert target.read_bytes() == expected.read_bytes()
    assert [p.name for p in out_dir.iterdir()] == ["target"]  # our temporary is gone


def test_without_renameat2_or_hard_links_a_file_that_appeared_is_not_replaced(tmp_path, monkeypatch):
    def no_renameat2(*args: object) -> None:
        raise OSError(errno.ENOSYS, "no renameat2")

    def no_hard_links(*args: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(atomic, "_renameat2", no_renameat2)
    monkeypatch.setattr(os, "link", no_hard_links)
    target = tmp_path / "out.png"
    with pytest.raises(OutputAppearedError), atomic.atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
        other_runs_file(target)
    assert target.read_bytes() == b"the other run's dataset"
    with atomic.atomic_output(tmp_path / "new.png", overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.png", "out.png"]


def test_with_overwrite_a_foreign_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    files = write_class_files(tmp_path / "in")
    target = tmp_path / "out.h5"
    with pytest.raises(ForeignOutputError):
        progress = appear_during_write(target, other_runs_file)
        pipeline.build(files, target, output=OutputOptions(overwrite=True), progress=progress)
    assert target.read_bytes() == b"the other run's dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.h5"]


def wait_for(condition, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_two_processes_to_one_target_the_second_to_finish_fails(tmp_path):
    files = [
        write_table(make_table(200, label, start, seed=start), tmp_path / f"{label.decode()}.hdf5")
        for label, start in ((b"GALAXY", 0), (b"QSO", 1000), (b"STAR", 2000))
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "dataset.h5"
    command = [str(SCRIPT), "build", *map(str, files), "-o", str(target), "--quiet"]
    first = subprocess.Popen([*command, "--chunk-rows", "4"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(out_dir.iterdir()), first)  # its temporary exists: the run is under way
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run([*command, "--seed", "1"], capture_output=True, text=True, check=False)
        assert second.returncode == 0, second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 2
    assert stderr == f"error: {appeared(target)}\n"
    assert open_dataset(target).metadata["split"]["seed"] == 1 and verify(target)["ok"]
    assert [p.name for p in out_dir.iterdir()] == ["dataset.h5"]


# ---------------------------------------------------------------- item 4: temporaries on a shared file system


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_are_named_for_host_and_process_and_only_dead_local_ones_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a-7")
    files = write_class_files(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    gone = dead_pid()
    stale = out_dir / f".ds.h5.tmp-node-a-7-{gone}-0badf00d"
    other_host = out_dir / f".ds.h5.tmp-node-b-7-{gone}-0badf00d"  # a live run on node B, its PID absent here
    other_host_prefix = out_dir / f".ds.h5.tmp-node-a-{gone}-0badf00d"
    alive = out_dir / f".ds.h5.tmp-node-a-7-{os.getpid()}-0badf00d"
    for path in (stale, other_host, other_host_prefix, alive):
        path.write_bytes(b"partial")
    seen = set()

    def progress(stage: str, done: int, total: int) -> None:
        seen.update(p.name for p in out_dir.iterdir())

    pipeline.build(files, out_dir / "ds.h5", progress=progress)
    ours = seen - {p.name for p in (stale, other_host, other_host_prefix, alive)}
    assert len(ours) == 1
    prefix = f".ds.h5.tmp-node-a-7-{os.getpid()}-"
    assert next(iter(ours)).startswith(prefix) and int(next(iter(ours))[len(prefix) :], 16) >= 0
    kept = ["ds.h5", other_host.name, other_host_prefix.name, alive.name]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(kept)


# ---------------------------------------------------------------- item 5: --fsync


@pytest.mark.parametrize("fmt", ["hdf5", "parquet"])
def test_fsync_flushes_the_output_then_its_directory_entry(fmt, tmp_path, monkeypatch):
    files = write_class_files(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "ds"
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    pipeline.build(files, target, output=OutputOptions(format=fmt, fsync=True))
    before_rename = [path for path, renamed in synced if not renamed]
    assert synced[-1] == (str(out_dir), True)  # the directory entry, after the rename
    assert all(Path(p).name.startswith(".ds.tmp-") or ".ds.tmp-" in p for p in before_rename)
    if fmt == "parquet":
        temp = Path(before_rename[-1])
        shards = {p.relative_to(target) for p in target.rglob("*")}
        assert {Path(p).relative_to(temp) for p in before_rename[:-1]} == shards  # every file and subdirectory
    else:
        assert len(before_rename) == 1


# ---------------------------------------------------------------- item 2: demo-data


def test_demo_data_refuses_existing_files(tmp_path):
    real = tmp_path / DEMO_FILES["QSO"]
    write_table(make_table(5, b"QSO"), real)
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("demo-data", tmp_path, "--rows", "5", "--quiet")
    assert code == 2 and stderr == f"error: {real}: output exists; use --overwrite to replace it\n"
    assert snapshot(tmp_path) == before  # not even the galaxies file: refused before writing any


def test_demo_data_overwrite_replaces_only_demo_files(tmp_path):
    assert run_cli("demo-data", tmp_path, "--rows", "5", "--quiet")[0] == 0
    code, _, stderr = run_cli("demo-data", tmp_path, "--rows", "7", "--overwrite", "--quiet")
    assert code == 0, stderr
    with h5py.File(tmp_path / DEMO_FILES["STAR"]) as f:
        assert f["data"].shape == (7,) and DEMO_ATTR in f.attrs
    real = tmp_path / DEMO_FILES["STAR"]
    write_table(make_table(5, b"STAR"), real)  # the user's own class file under the same name
    before = snapshot(tmp_path)
    code, _, stderr = run_cli("demo-data", tmp_path, "--rows", "5", "--overwrite", "--quiet")
    assert code == 2
    assert stderr == f"error: {real}: not a demo file written by cutout-etl demo-data; refusing to replace it\n"
    assert snapshot(tmp_path) == before


def test_demo_files_hold_the_same_table(tmp_path):
    from astropy.table import Table

    [path] = [p for p in write_demo_files(tmp_path, rows=6, seed=4) if p.name == DEMO_FILES["QSO"]]
    expected = make_class_table("QSO", 6, 4)
    got = Table.read(path, path="data")
    assert got.colnames == expected.colnames
    for name in got.colnames:
        assert got[name].tobytes() == expected[name].tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DEMO_FILES.values())


class Terminated(KeyboardInterrupt):
    """What SIGTERM raises (a KeyboardInterrupt subclass)."""


def test_interrupted_demo_data_leaves_no_file_under_a_final_name(tmp_path, monkeypatch):
    from astropy.table import Table

    real_write = Table.__dict__["write"]  # astropy's descriptor: bind it to the table being written

    calls = []

    def write_then_interrupt(table, *args, **kwargs):
        real_write.__get__(table, Table)(*args, **kwargs)
        calls.append(args[0])
        if len(calls) == 2:  # the QSO file is written (to its temporary), not yet in place
            raise Terminated

    monkeypatch.setattr(Table, "write", write_then_interrupt)
    with pytest.raises(Terminated):
        write_demo_files(tmp_path, rows=5, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == [DEMO_FILES["GALAXY"]]  # no QSO file, no temporary


def test_demo_directory_check_happens_before_rendering(tmp_path, monkeypatch):
    (tmp_path / DEMO_FILES["STAR"]).write_text("mine")
    monkeypatch.setattr(demo, "make_class_table", lambda *a, **k: pytest.fail("rendered before refusing"))
    with pytest.raises(OutputExistsError):
        write_demo_files(tmp_path, rows=5)


def _read_only_file_system(monkeypatch, directory: Path) -> None:
    """Creating or removing a file in `directory` fails as on a read-only mount (EROFS, not ENOENT)."""
    real_open, real_unlink = os.open, Path.unlink

    def refuse_open(path, flags, *args, **kwargs):
        if Path(path).parent == directory and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def refuse_unlink(path, missing_ok=False):
        if Path(path).parent == directory:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(os, "open", refuse_open)
    monkeypatch.setattr(Path, "unlink", refuse_unlink)


def test_a_read_only_output_directory_gives_its_own_error_not_the_cleanups(tmp_path, monkeypatch):
    files = write_class_files(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    _read_only_file_system(monkeypatch, out)
    with pytest.raises(OutputWriteError, match=f"^{out / 'ds.h5'}: cannot write in {out} \\(Read-only file system\\)"):
        pipeline.build(files, out / "ds.h5")


def test_stats_refuses_a_read_only_directory_before_the_work(tmp_path, monkeypatch):
    from cutout_etl.execution import local

    files = write_class_files(tmp_path / "in")
    target = tmp_path / "out" / "ds.h5"
    target.parent.mkdir()
    pipeline.build(files, target)
    _read_only_file_system(monkeypatch, target.parent)
    monkeypatch.setattr(local, "table_stats", lambda *a, **k: pytest.fail("the statistics pass ran"))
    with pytest.raises(OutputWriteError, match="cannot write in"):
        pipeline.stats(target)
    assert verify(target)["ok"]
