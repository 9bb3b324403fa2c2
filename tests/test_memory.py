"""Build's per-row bookkeeping stays small: pass 1 holds its facts once, planning adds little to them.

Measured with tracemalloc (numpy reports its buffers to it), so the bounds
hold whatever the allocator or the machine's load; they are bytes per row.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from cutout_etl.formats.parquet import ParquetSink
from cutout_etl.inputs.records import Block, image_hashes
from cutout_etl.inputs.scan import InputFile, ReadOptions, Scan, scan_inputs
from cutout_etl.pipeline import MergeOptions, SplitOptions, plan_rows, split_layout
from cutout_etl.schema import DEFAULT_CLASSES, output_dtype
from cutout_etl.steps import repeats, sky

from .conftest import make_table, write_table

FACTS = ("file_index", "row", "ids", "codes", "no_finite", "partly_nonfinite", "ra", "dec", "image_digest")


def _facts_bytes(scan: Scan) -> int:
    return sum(getattr(scan, name).nbytes for name in (*FACTS, "aperture_flux"))


def _peak_during(fn):
    """(result, peak bytes allocated during `fn` beyond what was allocated before it)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_pass_1_holds_its_facts_once_not_twice_at_the_end(tmp_path):
    """The chunks' facts go into arrays sized for all rows: no concatenation holding them twice."""
    files = [
        write_table(make_table(4000, label, 10_000 * i, shape=(4, 4, 4), seed=i), tmp_path / f"{i}.h5")
        for i, label in enumerate((b"GALAXY", b"QSO", b"STAR"))
    ]
    read = ReadOptions(chunk_rows=256)
    scan, peak = _peak_during(lambda: scan_inputs(files, list(DEFAULT_CLASSES), read))
    assert len(scan.ids) == 12_000 and scan.ids.dtype == np.dtype("S29")
    assert peak < 1.4 * _facts_bytes(scan), (peak, _facts_bytes(scan))


def _synthetic_scan(n: int) -> Scan:
    """n rows of unique IDs, images and scattered positions: what a clean catalogue looks like to planning."""
    rng = np.random.default_rng(0)
    info = SimpleNamespace(name="f", path="/nowhere/f", image_dtype=np.dtype("f4"), id_len=29)
    return Scan(
        files=[InputFile(info=info)],  # type: ignore[arg-type]
        classes=list(DEFAULT_CLASSES),
        file_index=np.zeros(n, dtype=np.int16),
        row=np.arange(n, dtype=np.int64),
        ids=np.array([f"KiDSDR5 J{i:020d}".encode() for i in range(n)], dtype="S29"),
        codes=(np.arange(n) % 3).astype(np.int16),
        no_finite=np.zeros(n, dtype=bool),
        partly_nonfinite=np.zeros(n, dtype=bool),
        ra=rng.uniform(0, 360, n),
        dec=np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
        image_shape=(36, 36, 4),
        read_order=[0],
        image_digest=np.array([hashlib.md5(i.to_bytes(8, "little")).digest() for i in range(n)], dtype="S16"),
        aperture_flux=rng.uniform(0, 1, n),
    )


def test_planning_adds_under_60_bytes_a_row_to_the_scan():
    """Merge and split on 60,000 rows: duplicates are sought by hashes, no column is copied whole needlessly."""
    import scipy.sparse.csgraph  # (imports outside the measurement)
    import scipy.spatial  # noqa: F401

    n = 60_000
    scan = _synthetic_scan(n)

    def plan():
        merged = plan_rows(scan, MergeOptions(on_conflict="drop"), image_hashes)
        return split_layout(merged, SplitOptions())

    (layout, _), peak = _peak_during(plan)
    assert layout.rows() == {"train": 42_000, "val": 9_000, "test": 9_000}
    assert peak / n < 60, f"{peak / n:.0f} bytes a row"  # 164, then 77; 54 (no row index when all are kept)


def test_repeated_keys_are_exact_even_when_every_hash_collides(monkeypatch):
    rng = np.random.default_rng(1)
    keys = np.array([f"ID{k}".encode() for k in rng.integers(0, 500, 2000)], dtype="S12")
    rows = np.flatnonzero(rng.random(2000) < 0.7)
    values, counts = np.unique(keys[rows], return_counts=True)
    expected = np.flatnonzero(np.isin(keys[rows], values[counts > 1]))
    assert np.array_equal(repeats.repeated(keys, rows), expected)
    monkeypatch.setattr(repeats, "key_hashes", lambda keys, rows=None: np.zeros(len(rows), dtype=np.uint64))
    assert np.array_equal(repeats.repeated(keys, rows), expected)


@pytest.mark.parametrize("rows_per_shard", [8, 12])
def test_parquet_closes_each_full_shard_before_the_end(tmp_path, rows_per_shard):
    """A full shard's writer is closed at once (each open writer holds megabytes); `finish` seals it later.

    (That sealed shards are byte for byte the old ones: tests/test_parquet_workers.py, small shards.)
    """
    dtype = output_dtype(29, 6, (4, 4, 4))
    sink = ParquetSink(tmp_path / "out", {"train": 24}, 4 * 4 * 4, list(DEFAULT_CLASSES), rows_per_shard)
    block = Block.empty(4, dtype)
    block.columns["ID"] = b"X"
    block.columns["SPECTYPE"] = b"GALAXY"
    block.images[...] = 1.0
    for first in range(0, 24, 4):
        sink.write("train", np.arange(first, first + 4), block)
        done = first + 4
        for shard, path in enumerate(sink.shards["train"]):
            if (shard + 1) * rows_per_shard <= done:  # full: a complete file already
                assert pq.read_metadata(path).num_rows == rows_per_shard
    sink.close()


def test_hash_then_key_order_is_lexsort_of_the_taken_keys():
    """Split orders rows by (keyed hash, ID) without copying the IDs; equal hashes are ordered by ID as before."""
    rng = np.random.default_rng(2)
    keys = np.array([f"ID{k}".encode() for k in rng.permutation(3000)], dtype="S12")
    rows = np.sort(rng.choice(3000, 2000, replace=False))
    for distinct in (5, 300, 2**40):  # many ties, some, (almost surely) none
        hashes = rng.integers(0, distinct, len(rows)).astype(np.uint64)
        expected = np.lexsort((keys[rows], hashes))
        assert np.array_equal(repeats.order_by_hash_then_key(hashes, keys, rows), expected)


def test_pass_2_holds_under_25_bytes_a_row():
    """The write pass's per-row facts (class, input, row, position) leave the IDs out: fills read them again."""
    from cutout_etl.execution.local import tables_in_order

    n = 30_000
    scan = _synthetic_scan(n)
    layout, _ = split_layout(plan_rows(scan, MergeOptions(on_conflict="drop"), image_hashes), SplitOptions())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tables = tables_in_order(scan, layout)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(len(facts) for _, facts, _ in tables) == n
    assert held / n < 25, f"{held / n:.0f} bytes a row"  # 49 with the IDs (S29)


def test_unit_vectors_hold_only_their_result_and_are_the_whole_array_values():
    """The KD-tree's input is made a slice at a time: no row-sized temporaries beside its 24 bytes a row."""
    rng = np.random.default_rng(3)
    n = 300_000
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    rows = np.flatnonzero(rng.random(n) < 0.9)
    vectors, peak = _peak_during(lambda: sky.unit_vectors(ra, dec, rows))
    assert peak / len(rows) < 30, f"{peak / len(rows):.0f} bytes a row"  # 26 (slices); 48 whole-array
    r, d = np.radians(ra[rows]), np.radians(dec[rows])
    expected = np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    assert vectors.tobytes() == expected.tobytes()


def test_the_plan_keeps_the_dropped_rows_not_a_mask_per_reason():
    """Ten reasons' masks were 10 bytes a row through the split; the dropped rows' indices are what the report needs."""
    scan = _synthetic_scan(5000)
    scan.no_finite[7] = True  # one row without a finite pixel
    plan = plan_rows(scan, MergeOptions(on_conflict="drop"), image_hashes)
    assert sum(rows.nbytes for rows in plan.dropped.values()) <= 8
    assert plan.dropped["no_finite_pixel"].tolist() == [7] and int(plan.keep.sum()) == 4999
