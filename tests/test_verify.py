"""Trust the output: checksums, verify, determinism, interruption, disk full, fuzz."""

from __future__ import annotations

import itertools
import json
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cutout_etl import pipeline
from cutout_etl.cli import app
from cutout_etl.inputs.scan import ReadOptions
from cutout_etl.schema import METADATA_ATTR
from cutout_etl.verify import verify

from .conftest import BLOCK_ROWS, SCRIPT, invoke, make_table, write_table


def test_fresh_build_and_merge_verify(small_dataset, demo_files, tmp_path):
    assert verify(small_dataset) == {
        "ok": True,
        "checks": [
            "block checksums",
            "row and class counts",
            "labels",
            "IDs unique across splits",
            "content digest",
            "provenance",
            "no neighbours or duplicate positions across splits",
            "no identical images in two splits",
            "statistics of train",
        ],
        "failures": [],
    }
    merged = tmp_path / "merged.h5"
    pipeline.merge(demo_files, merged)
    assert verify(merged)["ok"]


def image_byte_offsets(path: Path):
    """(table, row, absolute offset of that row's first image byte, image bytes)."""
    with h5py.File(path) as f:
        for table in ("train", "val", "test"):
            ds = f[table]
            field_offset = ds.dtype.fields["image"][1]
            yield table, len(ds), ds.id.get_offset(), ds.dtype.itemsize, field_offset, ds.dtype["image"].itemsize


def test_any_flipped_image_byte_is_caught_and_its_block_named(small_dataset, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(small_dataset, copy)
    layout = list(image_byte_offsets(copy))
    rng = random.Random(0)
    with open(copy, "r+b") as fh:
        for _ in range(50):
            table, rows, base, itemsize, field, size = rng.choice(layout)
            row, byte = rng.randrange(rows), rng.randrange(size)
            offset = base + row * itemsize + field + byte
            fh.seek(offset)
            original = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([original[0] ^ (1 << rng.randrange(8))]))
            fh.flush()
            report = verify(copy)
            block = row // BLOCK_ROWS
            expected = f"{table} block {block} (rows {block * BLOCK_ROWS}-{block * BLOCK_ROWS + BLOCK_ROWS - 1}): image checksum mismatch"
            assert not report["ok"] and expected in report["failures"], (table, row, byte, report["failures"])
            fh.seek(offset)
            fh.write(original)
            fh.flush()
    assert verify(copy)["ok"]


def test_verify_catches_metadata_lies(small_dataset, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(small_dataset, copy)
    with h5py.File(copy, "r+") as f:
        meta = json.loads(f.attrs[METADATA_ATTR])
        meta["tables_rows"]["val"]["class_counts"]["QSO"] += 1
        meta["stats"]["bands"]["r"]["mean"] *= 1.001
        meta["inputs"] = []
        f.attrs[METADATA_ATTR] = json.dumps(meta)
        f["test"][0:1] = f["val"][0:1]  # one object in two splits
    result = CliRunner().invoke(app, ["verify", str(copy), "--json"])
    assert result.exit_code == 1
    failures = json.loads(result.stdout)["failures"]
    joined = "\n".join(failures)
    assert "val: class counts" in joined
    assert "statistics: band r mean stored" in joined
    assert "no input provenance (inputs) in the metadata" in failures
    assert "1 IDs appear more than once (1 of them in two splits)" in joined
    assert "test block 0 (rows 0-15): image checksum mismatch" in failures
    assert "content digest differs from the stored one" in failures


def test_digest_is_the_same_for_every_file_order_and_row_order(tmp_path):
    tables = [
        make_table(12, b"GALAXY", 0, seed=1),
        make_table(9, b"QSO", 100, seed=2),
        make_table(10, b"STAR", 200, seed=3),
    ]
    originals = [write_table(t, tmp_path / f"class{i}.h5") for i, t in enumerate(tables)]
    rng = np.random.default_rng(5)
    shuffled = [write_table(t[rng.permutation(len(t))], tmp_path / f"shuffled{i}.h5") for i, t in enumerate(tables)]
    digests = set()
    for n, order in enumerate(itertools.permutations(range(3))):
        for files in ([originals[i] for i in order], [shuffled[i] for i in order]):
            out = tmp_path / f"out{n}-{files[0].stem}.h5"
            digests.add(pipeline.build(files, out)["digest"])
    assert len(digests) == 1
    other_seed = pipeline.build(originals, tmp_path / "seed1.h5", split_options=pipeline.SplitOptions(seed=1))
    assert other_seed["digest"] not in digests


def test_sigkill_never_leaves_a_finished_looking_output(tmp_path):
    """SIGKILL while the output is being written (its temp file exists), at varied points of the write."""
    from cutout_etl.demo import write_demo_files

    files = [str(p) for p in write_demo_files(tmp_path / "in", rows=800, seed=3)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "dataset.h5"
    command = [str(SCRIPT), "build", *files, "-o", str(target), "--chunk-rows", "32", "--quiet"]
    start = time.monotonic()
    subprocess.run(command, check=True)
    duration = time.monotonic() - start
    target.unlink()
    rng = random.Random(1)
    killed_mid_write = 0
    for attempt in range(5):
        child = subprocess.Popen(command)
        while child.poll() is None and not list(out_dir.glob(".dataset.h5.tmp-*")):
            time.sleep(0.001)
        time.sleep(0 if attempt == 0 else rng.uniform(0, duration / 2))  # into the write, at a varied point
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_mid_write += child.returncode == -signal.SIGKILL and bool(list(out_dir.glob(".dataset.h5.tmp-*")))
        if target.exists():
            assert verify(target)["ok"]
            target.unlink()
        # a later run is not tripped by what the killed one left, and cleans it up
        subprocess.run([*command, "--overwrite"], check=True)
        assert verify(target)["ok"]
        assert [p.name for p in out_dir.iterdir()] == ["dataset.h5"]
        target.unlink()
    assert killed_mid_write >= 1  # the kills did land while the output was half written


def test_file_size_limit_gives_one_line_and_no_output(demo_files, tmp_path):
    target = tmp_path / "dataset.h5"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    done = subprocess.run(
        [str(SCRIPT), "build", *map(str, demo_files), "-o", str(target), "--quiet"],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == f"error: {target}: cannot write output (file size limit exceeded)\n"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- fuzz


def mutate_bytes(path: Path, data) -> None:
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))


def mutate_structure(path: Path, data) -> None:
    with h5py.File(path, "r+") as f:
        choice = data.draw(st.sampled_from(["drop_meta", "odd_meta", "attr", "rename", "extra_table", "truncate_meta"]))
        if choice == "drop_meta":
            del f["data.__table_column_meta__"]
        elif choice == "odd_meta":
            del f["data.__table_column_meta__"]
            f["data.__table_column_meta__"] = np.array([b"%YAML garbage: [", data.draw(st.binary(max_size=40))])
        elif choice == "attr":
            name = data.draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8))
            f["data"].attrs[name] = np.frombuffer(data.draw(st.binary(min_size=1, max_size=30)), np.uint8)
        elif choice == "rename":
            f.move("data", data.draw(st.sampled_from(["x", "deep/er", "data2"])))
        elif choice == "extra_table":
            f["other"] = np.zeros(3, dtype=[("a", "f4")])
        else:
            f.attrs[METADATA_ATTR] = data.draw(
                st.text(st.characters(blacklist_characters="\x00"), max_size=50)
            )  # h5py refuses NUL
    if data.draw(st.booleans()):
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(data.draw(st.integers(0, size)))


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: conftest profile
@given(data=st.data())
def test_fuzzed_inputs_give_success_or_one_line_error(tmp_path_factory, data):
    work = tmp_path_factory.mktemp("fuzz")
    files = [
        write_table(make_table(6, b"GALAXY", 0, seed=1), work / "g.h5"),
        write_table(make_table(6, b"QSO", 100, seed=2), work / "q.h5"),
        write_table(make_table(6, b"STAR", 200, seed=3), work / "s.h5"),
    ]
    victim = data.draw(st.sampled_from(files))
    if data.draw(st.booleans()):
        mutate_bytes(victim, data)
    else:
        mutate_structure(victim, data)
    for args in (
        ["inspect", *map(str, files), "--quiet"],
        ["build", *map(str, files), "-o", str(work / "out.h5"), "--quiet"],
    ):
        result = invoke(*args, timeout=20)  # a hang fails the test instead of stalling CI
        code, stderr = result.exit_code, result.stderr
        assert code in (0, 1, 2), stderr
        assert "Traceback" not in stderr
        if code != 0 and args[0] == "build":
            assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
            assert not (work / "out.h5").exists()
        assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []


def test_verify_memory_does_not_grow_with_the_rows(small_dataset, tmp_path):
    """verify keeps only the small columns of each block, never the blocks (images) themselves."""
    import tracemalloc

    from cutout_etl.demo import write_demo_files

    few = tmp_path / "few.h5"
    pipeline.build(write_demo_files(tmp_path / "in", rows=20, seed=1), few, read=ReadOptions(chunk_rows=BLOCK_ROWS))
    peaks = {}
    for path in (few, small_dataset):
        tracemalloc.start()
        assert verify(path)["ok"]
        peaks[path] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    with h5py.File(small_dataset) as big, h5py.File(few) as small:
        image_bytes = big["train"].dtype["image"].itemsize
        extra_image_bytes = sum(len(big[t]) - len(small[t]) for t in ("train", "val", "test")) * image_bytes
    assert peaks[small_dataset] - peaks[few] < extra_image_bytes / 4


@pytest.mark.parametrize("key", ["huggingface", "cutout_etl"])
def test_verify_checks_every_parquet_shard_footer(demo_files, tmp_path, key):
    """Hugging Face `datasets` reads the class names from a shard's footer: an edit there must fail verify."""
    import pyarrow.parquet as pq

    out = tmp_path / "dataset"
    pipeline.build(demo_files, out, output=pipeline.OutputOptions(format="parquet", rows_per_shard=100))
    assert verify(out)["ok"]
    shard = sorted((out / "data").glob("train-*.parquet"))[1]
    table = pq.read_table(shard)
    footer = {k: v for k, v in pq.ParquetFile(shard).metadata.metadata.items() if k != b"ARROW:schema"}
    footer[key.encode()] = footer[key.encode()].replace(b'"GALAXY"', b'"QUASAR"', 1)
    pq.write_table(table.replace_schema_metadata(footer), shard)
    report = verify(out)
    assert not report["ok"]
    assert report["failures"] == [f"{shard.name}: footer metadata '{key}' differs from the dataset's (cutout_etl.json)"]


@pytest.mark.parametrize(
    "edit",
    [
        ("report", "duplicate_positions", "match_radius_arcsec"),
        ("split", "group_radius_arcsec"),
        ("split", "group_by"),
        ("split", "cell_deg"),
    ],
)
def test_zeroing_a_radius_the_leak_checks_use_fails_the_digest(small_dataset, tmp_path, edit):
    """A radius of 0 would switch verify's neighbour checks off: the parameters are inside the content digest."""
    copy = tmp_path / "copy.h5"
    shutil.copy(small_dataset, copy)
    with h5py.File(copy, "r+") as f:
        meta = json.loads(f.attrs[METADATA_ATTR])
        *parents, last = edit
        entry = meta
        for name in parents:
            entry = entry[name]
        entry[last] = 0
        f.attrs[METADATA_ATTR] = json.dumps(meta)
    assert verify(copy)["failures"] == ["content digest differs from the stored one"]


def test_a_dataset_of_format_version_1_still_verifies():
    """tests/data/dataset_v1.h5: three 6-row classes of 8x8x4 noise (conftest.make_table), built by commit f1252a1.

    Version 1 digested the split's fractions and seed only; version 2 adds the radii, grouping and cell size.
    """
    path = Path(__file__).parent / "data" / "dataset_v1.h5"
    with h5py.File(path) as f:
        assert json.loads(f.attrs[METADATA_ATTR])["format_version"] == 1
    report = verify(path)
    assert report["ok"], report["failures"]
