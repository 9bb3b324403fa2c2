"""`stats` updates a dataset copy-on-write, per split, reading only blocks that match their checksums."""

from __future__ import annotations

import hashlib
import json
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from cutout_etl import pipeline
from cutout_etl.dataset import open_dataset
from cutout_etl.errors import ChecksumError
from cutout_etl.execution import dask_cluster
from cutout_etl.execution import local as execution
from cutout_etl.inputs.scan import ReadOptions
from cutout_etl.schema import METADATA_ATTR
from cutout_etl.verify import verify

from .conftest import BLOCK_ROWS, SCRIPT, invoke, write_table


@pytest.fixture
def dataset(small_dataset, tmp_path) -> Path:
    copy = tmp_path / "dataset.h5"
    shutil.copy(small_dataset, copy)
    return copy


def metadata_of(path: Path) -> dict:
    with open_dataset(path) as ds:
        return ds.metadata


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temps_beside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.tmp-*"))


# ---------------------------------------------------------------- item 1: copy-on-write


@pytest.mark.parametrize("over", [None, 4096], ids=["below-file-size", "just-above-file-size"])
def test_file_size_limit_leaves_the_dataset_whole(dataset, over):
    """A real RLIMIT_FSIZE: below the size the copy fails, just above it the metadata write does."""
    size = dataset.stat().st_size
    limit = size // 2 if over is None else size + over
    before = sha256(dataset)

    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [str(SCRIPT), "stats", str(dataset), "--quiet"]
    done = subprocess.run(command, preexec_fn=set_limit, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr == f"error: {dataset}: cannot write output (file size limit exceeded)\n"
    assert sha256(dataset) == before
    assert verify(dataset)["ok"]
    assert temps_beside(dataset) == []


def test_sigkill_at_any_moment_leaves_the_dataset_opening_and_verifying(dataset):
    """Kills at random moments of the run, and kills aimed at the update itself (once the copy exists).

    Each aimed kill lands after the run removed the temporaries of earlier
    kills and claimed its own: proof that some kills land mid-update, and that
    a new run cleans up what a killed one left.
    """
    command = [str(SCRIPT), "stats", str(dataset), "--quiet"]
    start = time.monotonic()
    subprocess.run(command, check=True)
    duration = time.monotonic() - start
    rng = random.Random(3)
    kills_mid_update = 0
    for attempt in range(6):
        stale = set(temps_beside(dataset))
        child = subprocess.Popen(command)
        if attempt % 2:
            time.sleep(rng.uniform(0.0, duration))
        else:
            while child.poll() is None and not set(temps_beside(dataset)) - stale:
                time.sleep(0.0005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        left = set(temps_beside(dataset))
        if left - stale:
            kills_mid_update += 1
            if attempt % 2 == 0:
                assert not stale & left, "a new run removes the temporaries killed runs left"
        with open_dataset(dataset) as ds:
            assert ds.stats["split"] == "train"
        assert verify(dataset)["ok"]
    assert kills_mid_update >= 1
    subprocess.run(command, check=True)
    assert verify(dataset)["ok"] and temps_beside(dataset) == []


def test_ctrl_c_during_the_update_removes_the_copy(dataset):
    """SIGINT once the copy exists: the run stops with the original in place, or has already renamed; no copy is left."""
    before = sha256(dataset)
    command = [str(SCRIPT), "stats", str(dataset), "--quiet"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    while child.poll() is None and not temps_beside(dataset):
        time.sleep(0.0005)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate()
    assert (child.returncode, stderr) in [(130, "interrupted by SIGINT: no output written\n"), (0, "")]
    assert child.returncode == 0 or sha256(dataset) == before
    assert temps_beside(dataset) == []
    assert verify(dataset)["ok"]


def test_stats_succeeds_while_another_process_reads_the_dataset(dataset):
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, h5py\n"
                f"f = h5py.File({str(dataset)!r}, 'r')\n"
                "print('open', flush=True)\n"
                "sys.stdin.readline()\n"
                "print(len(f['train'][:]['image']), flush=True)\n"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline() == "open\n"
        command = [str(SCRIPT), "stats", str(dataset), "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        reader.stdin.write("\n")
        reader.stdin.flush()
        rows = int(reader.stdout.readline())  # the reader keeps reading the file it opened
    finally:
        reader.stdin.close()
        reader.wait()
        reader.stdout.close()
    assert rows == metadata_of(dataset)["tables_rows"]["train"]["rows"]
    assert verify(dataset)["ok"]


def test_a_file_changed_while_stats_runs_is_not_replaced(dataset, monkeypatch):
    original = execution.table_stats

    def touch_then_compute(*args, **kwargs):
        result = original(*args, **kwargs)
        with open(dataset, "ab") as fh:  # another writer appends while the statistics are computed
            fh.write(b"\0")
        return result

    monkeypatch.setattr(execution, "table_stats", touch_then_compute)
    before = sha256(dataset)
    result = invoke("stats", dataset, "--quiet")
    assert result.exit_code == 1
    assert (
        result.stderr == f"error: {dataset}: changed while it was being read (replaced or rewritten); nothing written\n"
    )
    assert sha256(dataset) != before and temps_beside(dataset) == []


def test_stats_with_fsync_keeps_the_file_mode(dataset):
    dataset.chmod(0o640)
    assert invoke("stats", dataset, "--fsync", "--quiet").exit_code == 0
    assert dataset.stat().st_mode & 0o777 == 0o640
    assert verify(dataset)["ok"]


def test_stats_through_a_symlink_updates_the_file_and_keeps_the_link(dataset, tmp_path):
    link = tmp_path / "link.h5"
    link.symlink_to(dataset)
    assert invoke("stats", link, "--split", "val", "--quiet").exit_code == 0
    assert link.is_symlink()
    assert "val" in metadata_of(dataset)["split_stats"]
    assert temps_beside(dataset) == [] and temps_beside(link) == []


# ---------------------------------------------------------------- item 2: per-split statistics


def test_stats_of_val_are_stored_beside_the_training_statistics(dataset):
    with h5py.File(dataset, "r") as f:
        train_before = json.dumps(json.loads(f.attrs[METADATA_ATTR])["stats"])
    result = invoke("stats", dataset, "--split", "val")
    assert result.exit_code == 0, result.stderr
    assert "statistics of the val split" in result.stderr
    with h5py.File(dataset, "r") as f:
        meta = json.loads(f.attrs[METADATA_ATTR])
    assert json.dumps(meta["stats"]) == train_before
    assert meta["split_stats"]["val"]["split"] == "val"
    assert meta["split_stats"]["val"]["n_cutouts"] == meta["tables_rows"]["val"]["rows"]
    report = verify(dataset)
    assert report["ok"], report["failures"]
    assert {"statistics of train", "statistics of val"} <= set(report["checks"])
    pytest.importorskip("keras")
    from cutout_etl.ml.keras_support import preprocessing_from_dataset

    layer = preprocessing_from_dataset(dataset)
    assert layer is not None


def test_verify_recomputes_split_stats(dataset):
    assert invoke("stats", dataset, "--split", "test", "--quiet").exit_code == 0
    with h5py.File(dataset, "r+") as f:
        meta = json.loads(f.attrs[METADATA_ATTR])
        meta["split_stats"]["test"]["bands"]["g"]["mean"] *= 1.001
        f.attrs[METADATA_ATTR] = json.dumps(meta)
    report = verify(dataset)
    assert not report["ok"]
    assert any(f.startswith("split_stats test: band g mean stored") for f in report["failures"])


# ---------------------------------------------------------------- item 3: blocks checked as they are read


def flip_image_byte(path: Path, table: str, row: int) -> None:
    with h5py.File(path, "r") as f:
        ds = f[table]
        offset = ds.id.get_offset() + row * ds.dtype.itemsize + ds.dtype.fields["image"][1] + 5
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))


def block_named(path: Path, table: str, row: int, rows: int) -> str:
    block = row // BLOCK_ROWS
    last = min((block + 1) * BLOCK_ROWS, rows) - 1
    return (
        f"error: {path}: {table} block {block} (rows {block * BLOCK_ROWS}-{last}): "
        "image checksum mismatch; the file was changed after it was written\n"
    )


def test_split_refuses_a_changed_merged_file(demo_files, tmp_path):
    merged = tmp_path / "merged.h5"
    pipeline.merge(demo_files, merged, read=ReadOptions(chunk_rows=BLOCK_ROWS))
    rows = metadata_of(merged)["tables_rows"]["data"]["rows"]
    flip_image_byte(merged, "data", 50)
    assert not verify(merged)["ok"]
    result = invoke("split", merged, "-o", tmp_path / "dataset.h5", "--quiet")
    assert result.exit_code == 1
    assert result.stderr == block_named(merged, "data", 50, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.h5"]


def test_stats_refuses_a_changed_split(dataset):
    rows = metadata_of(dataset)["tables_rows"]["train"]["rows"]
    flip_image_byte(dataset, "train", 37)
    before = sha256(dataset)
    result = invoke("stats", dataset, "--chunk-rows", "5", "--quiet")
    assert result.exit_code == 1
    assert result.stderr == block_named(dataset, "train", 37, rows)
    assert sha256(dataset) == before and temps_beside(dataset) == []


def test_stats_dask_tasks_check_their_blocks(dataset):
    """The task path of `stats --scheduler`: tasks of whole stored blocks, each block checked."""

    class Later:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def result(self, timeout=None):
            return self.fn(*self.args)

    class InlineClient:
        def submit(self, fn, *args, pure=True):
            return Later(fn, args)

        def cancel(self, futures):
            pass

    from cutout_etl.steps.checksums import stored_checksums

    meta = metadata_of(dataset)
    rows = meta["tables_rows"]["train"]["rows"]
    checksums = stored_checksums(dataset, meta, "train")
    three = dask_cluster.ClusterOptions(blocks_per_task=3)
    clean = dask_cluster.table_stats(InlineClient(), dataset, "train", rows, 4, 5, three, lambda *a: None, checksums)
    local = dask_cluster.stats_task(dataset, "train", 0, rows, 4, 5, None, checksums)
    assert clean.summary()["bands"]["b0"]["quantiles"] == local.summary()["bands"]["b0"]["quantiles"]
    flip_image_byte(dataset, "train", rows - 1)
    with pytest.raises(ChecksumError, match=f"train block {(rows - 1) // BLOCK_ROWS} "):
        dask_cluster.table_stats(InlineClient(), dataset, "train", rows, 4, 5, three, lambda *a: None, checksums)


@pytest.mark.parametrize("target", ["out.h5", "out_parquet"])
def test_convert_refuses_a_changed_dataset(dataset, tmp_path, target):
    rows = metadata_of(dataset)["tables_rows"]["val"]["rows"]
    flip_image_byte(dataset, "val", 20)
    result = invoke("convert", dataset, tmp_path / target, "--quiet")
    assert result.exit_code == 1
    assert result.stderr == block_named(dataset, "val", 20, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.h5"]


# ---------------------------------------------------------------- item 4: what verify demands of statistics


def test_a_dataset_without_training_statistics_fails_verify(dataset):
    with h5py.File(dataset, "r+") as f:
        meta = json.loads(f.attrs[METADATA_ATTR])
        del meta["stats"]
        f.attrs[METADATA_ATTR] = json.dumps(meta)
    report = verify(dataset)
    assert not report["ok"]
    assert "no statistics of the train split in stats (found none); run cutout-etl stats" in report["failures"]


def paired_table(n_pairs: int, label: bytes, start: int, seed: int) -> Table:
    """Objects and their negatives 3 arcsec apart: one group each (same split), so every split's pixels sum to 0."""
    rng = np.random.default_rng(seed)
    number = start + np.arange(n_pairs)
    images = (rng.standard_normal((n_pairs, 36, 36, 4)) * 2e-12 + 3e-12).astype(np.float32)
    t = Table()
    t["ID"] = np.array([f"PAIR J{k:08d}{s}".encode() for k in number for s in "ab"], dtype="S29")
    t["RAJ2000"] = np.repeat(120 + number * 0.01, 2) + np.tile([0.0, 3 / 3600], n_pairs)
    t["DECJ2000"] = np.zeros(2 * n_pairs)
    t["SPECTYPE"] = np.array([label] * (2 * n_pairs), dtype="S6")
    t["image"] = np.stack([images, -images], axis=1).reshape(-1, 36, 36, 4)
    return t


def test_statistics_whose_sum_cancels_to_zero_verify(tmp_path):
    files = [
        write_table(paired_table(40, label, 1000 * i, seed=i), tmp_path / f"{label.decode().lower()}.hdf5")
        for i, label in enumerate([b"GALAXY", b"QSO", b"STAR"])
    ]
    out = tmp_path / "dataset.h5"
    meta = pipeline.build(files, out, read=ReadOptions(chunk_rows=BLOCK_ROWS))
    band = meta["stats"]["bands"]["g"]
    assert abs(band["sum"]) < 1e-6 * band["finite_pixels"] * band["max"]  # the sum did cancel
    report = verify(out)
    assert report["ok"], report["failures"]
