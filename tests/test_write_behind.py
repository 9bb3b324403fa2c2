"""Outputs leave the page cache behind the writer (formats/write_behind.py), without a byte changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cutout_etl import pipeline
from cutout_etl.formats import write_behind
from cutout_etl.formats.write_behind import AppendBehind, WriteBehind
from cutout_etl.pipeline import OutputOptions

LAG = 100


class Advice:
    """Records posix_fadvise(DONTNEED) calls as (fd, offset, length); other advice (the inputs' WILLNEED) is ignored."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            self.calls.append((fd, offset, length))


@pytest.fixture
def advice(monkeypatch) -> Advice:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform")
    recorded = Advice()
    monkeypatch.setattr(os, "posix_fadvise", recorded)
    return recorded


def test_each_range_starts_writing_back_at_once_and_is_dropped_once_lag_bytes_follow(advice):
    behind = WriteBehind(fd=7, lag=LAG)
    behind.wrote(0, 60)
    behind.wrote(60, 0)
    behind.wrote(500, 30)
    assert advice.calls == [(7, 0, 60), (7, 500, 30)]  # 90 bytes pending: within the lag, nothing dropped yet
    behind.wrote(200, 40)
    assert advice.calls[2:] == [(7, 200, 40), (7, 0, 60)]  # 130 pending: the oldest range goes
    behind.wrote(300, 200)
    assert advice.calls[4:] == [(7, 300, 200), (7, 500, 30), (7, 200, 40), (7, 300, 200)]


def test_appending_writer_advises_what_each_step_added(advice):
    behind = AppendBehind(fd=3, lag=LAG)
    for end in (40, 40, 90, 250):
        behind.advance(end)
    assert advice.calls == [(3, 0, 40), (3, 40, 50), (3, 90, 160), (3, 0, 40), (3, 40, 50), (3, 90, 160)]


def test_a_file_system_that_refuses_advice_gets_none_again_and_writing_goes_on(monkeypatch):
    calls = []

    def refuse(*args):
        calls.append(args)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    behind = WriteBehind(fd=5, lag=LAG)
    for offset in range(0, 1000, 100):
        behind.wrote(offset, 100)
    assert len(calls) == 1


@pytest.mark.parametrize("output_format", ["hdf5", "parquet"])
def test_a_build_drops_all_but_the_last_lag_of_its_output_and_never_an_input(
    output_format, demo_files, tmp_path, monkeypatch, advice
):
    pytest.importorskip("pyarrow")
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the advised files")
    monkeypatch.setattr(write_behind, "LAG_BYTES", 1 << 16)
    advised_files: dict[int, set[str]] = {}
    real_fadvise = advice.__call__

    def record_file(fd, offset, length, kind):  # which file each fd was when advised to drop
        if kind == os.POSIX_FADV_DONTNEED:
            advised_files.setdefault(fd, set()).add(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fadvise(fd, offset, length, kind)

    monkeypatch.setattr(os, "posix_fadvise", record_file)
    out = tmp_path / ("out.h5" if output_format == "hdf5" else "out")
    pipeline.build(demo_files, out, output=OutputOptions(format=output_format))

    advised_names = {Path(name).name for names in advised_files.values() for name in names}
    assert advised_names and not advised_names & {p.name for p in demo_files}
    dropped = sum(length for call, length in _twice(advice.calls))  # once to start its writeback, once to drop it
    outputs = [out] if out.is_file() else list(out.rglob("*.parquet"))
    assert dropped > 0.9 * sum(p.stat().st_size for p in outputs) - (1 << 16) * len(outputs)


def _twice(calls: list[tuple[int, int, int]]) -> list[tuple[tuple[int, int, int], int]]:
    return [(call, call[2]) for call in set(calls) if calls.count(call) == 2]
