"""The build benchmark runs end to end on a few rows, so its figures stay reproducible."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_build.py"


def test_bench_build_reports_every_step_and_ratio(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, BENCHMARK, "--rows", "40", "--repeat", "1", "--workdir", tmp_path, "--json", report],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "correctness: 120 rows accounted for" in done.stdout and "OK" in done.stdout
    figures = json.loads(report.read_text())
    warm = {"cp", "sha256", "build", "build parquet", "by-hand"}
    assert set(figures["rounds"][0]) == warm | {f"cold {step}" for step in warm - {"by-hand"}} | {"inspect / scan"}
    assert all(run["wall_s"] > 0 and run["peak_rss_mb"] > 0 for rnd in figures["rounds"] for run in rnd.values())
    every_target = {
        "warm: build / (cp + SHA-256)", "warm: by-hand / build", "warm: Parquet / HDF5 throughput",
        "cold: build / (cp + SHA-256)", "build peak RSS MB", "build parquet peak RSS MB",
        "stats GB/s per core", "inspect / scan pass of build",
    }  # fmt: skip
    assert set(figures["ratios"]) == every_target
    for name, ratio in figures["ratios"].items():
        assert ratio["value"] > 0 and ratio["target"].split()[0] in ("<=", ">=", "<"), name
        assert f"{name}" in done.stdout
    once = figures["once"]
    assert (
        once["write_pass_cold_s"] > 0
        and once["cold_sequential_read_s"] > 0
        and once["stats"]["gb_per_cpu_s"]["median"] > 0
    )
    assert "numpy floor of the statistics" in done.stdout
    assert list(tmp_path.glob("bench_build_*")) == []  # cleaned up without --keep


VERIFY_BENCHMARK = BENCHMARK.parent / "bench_verify.py"


def test_bench_verify_reports_both_peaks_and_their_ratio(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, VERIFY_BENCHMARK, "--small", "30", "--large", "90", "--workdir", tmp_path, "--json", report],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a target missed; at these sizes that says nothing
    figures = json.loads(report.read_text())
    assert [figures["points"][s]["rows"] for s in ("small", "large")] == [30, 90]
    assert all(p["peak_rss_mb"] > 0 and p["ok"] for p in figures["points"].values())
    ratio = figures["checks"]["RSS(large) / RSS(small)"]["value"]
    assert ratio == figures["points"]["large"]["peak_rss_mb"] / figures["points"]["small"]["peak_rss_mb"]
    assert "RSS(large) / RSS(small)" in done.stdout
    assert list(tmp_path.glob("bench_verify_*")) == []  # cleaned up without --keep


LOADER_BENCHMARK = BENCHMARK.parent / "bench_loader.py"


def test_bench_loader_reports_every_reader_and_ratio(tmp_path):
    pytest.importorskip("keras")
    report = tmp_path / "report.json"
    args = ["--rows", "40", "--repeats", "1", "--train-steps", "1", "--workdir", tmp_path, "--json", report]
    done = subprocess.run(
        [sys.executable, LOADER_BENCHMARK, *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(report.read_text())
    rates, unavailable = figures["rates"], figures["unavailable"]
    every = {
        "memory_numpy", "batches_hdf5", "batches_parquet", "torch_map_0", "torch_map_2", "streaming_numpy",
        "streaming_torch_2", "keras_numpy", "memory_tensor", "keras_tensor", "train_step",
    }  # fmt: skip
    assert set(rates) | set(unavailable) == every and not set(rates) & set(unavailable)
    assert all(rate > 0 for rate in rates.values()) and all(unavailable.values())
    assert {"memory_numpy", "batches_hdf5", "batches_parquet", "streaming_numpy", "keras_numpy"} <= set(rates)
    if importlib.util.find_spec("torch") is not None:
        assert "streaming_torch_2" in rates
    assert set(figures["ratios"]) >= {"Parquet / HDF5 batches()", "Keras loader / in memory (numpy)"}
    parquet = figures["ratios"]["Parquet / HDF5 batches()"]["value"]
    assert parquet == round(rates["batches_parquet"] / rates["batches_hdf5"], 3)
    assert "Keras loader / in memory (numpy)" in done.stdout and "streaming iterator" in done.stdout
    assert all(reason[:40] in done.stdout for reason in unavailable.values())  # unavailable rows say why


INGEST_BENCHMARK = BENCHMARK.parent / "bench_ingest.py"


def test_bench_ingest_reports_files_and_mb_per_second_against_the_astropy_loop(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, INGEST_BENCHMARK, "--objects", "6", "--repeat", "1", "--workdir", tmp_path, "--json", report],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(report.read_text())
    assert figures["files"] == 24 and figures["check"] == "OK"
    assert set(figures["runs"]) == {"astropy loop", "ingest, 1 process", "ingest, pool"}
    assert all(run["files_per_s"] > 0 and run["mb_per_s"] > 0 for run in figures["runs"].values())
    assert list(tmp_path.glob("bench_ingest_*")) == []  # cleaned up without --keep


PREPROCESSING_BENCHMARK = BENCHMARK.parent / "bench_preprocessing.py"


def test_bench_preprocessing_quick_trains_each_method_and_reports_the_table(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, PREPROCESSING_BENCHMARK, "--quick", "--methods", "asinh", "seed", "photometry"]
        + ["--workdir", tmp_path, "--json", report],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(report.read_text())
    assert set(figures["runs"]) == {"asinh", "seed", "photometry"}
    assert figures["split_rows"]["test"] == sum(figures["test_rows_by_r"].values())
    for runs in figures["runs"].values():
        (run,) = runs
        assert 0 <= run["macro_f1"] <= 1 and set(run["recall"]) == {"GALAXY", "QSO", "STAR"}
        assert list(run["accuracy_by_r"]) == ["r<19", "19-20", "20-21", "21-22", "r>=22"]
    assert "paired macro-F1 difference against asinh" in done.stdout and "photometry" in done.stdout
    assert list(tmp_path.glob("bench_preprocessing_*")) == []  # cleaned up without --keep


STATS_BENCHMARK = BENCHMARK.parent / "bench_stats.py"


def test_bench_stats_reports_the_rate_its_parts_and_the_target(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, STATS_BENCHMARK, "--rows", "60", "--rounds", "2", "--chunk-rows", "16", "--json", report],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    figures = json.loads(report.read_text())
    assert done.returncode == (0 if figures["pass"] else 1), done.stderr
    assert figures["rows"] == 60 and len(figures["rounds"]) == 2
    low, high = figures["gb_per_cpu_s"]["range"]
    assert 0 < low <= figures["gb_per_cpu_s"]["median"] <= high
    assert set(figures["parts_cpu_s_per_gb"]) == {"histogram", "sky", "moments", "counts", "other"}
    assert all(part["median"] > 0 for name, part in figures["parts_cpu_s_per_gb"].items() if name != "other")
    assert "stats GB/s per core" in done.stdout and "target >= 1" in done.stdout
    floor, over = figures["numpy_floor_gb_per_cpu_s"], figures["cost_over_floor"]
    assert floor["median"] > 0 and floor["range"][0] <= floor["median"] <= floor["range"][1]
    assert over["median"] == pytest.approx(floor["median"] / figures["gb_per_cpu_s"]["median"], rel=0.5)
    assert "numpy floor GB per CPU-second" in done.stdout
