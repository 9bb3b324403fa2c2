"""`cutout-etl info`, `cutout-etl --version`, and `inspect` pointing a dataset to `info`."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cutout_etl import open_dataset
from cutout_etl.info import describe_dataset
from cutout_etl.pipeline import convert

from .conftest import DEMO_ROWS, class_tables, run_cli, write_class_files

CLI = Path(sys.executable).parent / "cutout-etl"

STABLE_KEYS = {
    "path", "format", "format_version", "kind", "bytes", "classes", "bands", "image_shape", "pixel_unit", "splits",
    "split_method", "stats", "digest", "checksum_algorithm", "created_by", "inputs", "parent", "rows_read",
    "rows_kept", "dropped",
}  # fmt: skip


@pytest.fixture(scope="module")
def parquet_dataset(small_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("info") / "dataset.parquet"
    convert(small_dataset, out)
    return out


def test_json_describes_the_dataset_with_stable_keys(small_dataset):
    code, stdout, _ = run_cli("info", small_dataset, "--json")
    assert code == 0
    info = json.loads(stdout)
    assert set(info) == STABLE_KEYS
    with open_dataset(small_dataset) as ds:
        metadata = ds.metadata
    assert info["format"] == "hdf5" and info["classes"] == ["GALAXY", "QSO", "STAR"]
    assert info["digest"] == metadata["digest"] and info["bytes"] == small_dataset.stat().st_size
    assert {name: entry["rows"] for name, entry in info["splits"].items()} == {
        name: entry["rows"] for name, entry in metadata["tables_rows"].items()
    }
    assert sum(sum(entry["class_counts"].values()) for entry in info["splits"].values()) == 3 * DEMO_ROWS
    train_u = info["stats"]["train"]["bands"]["u"]
    assert train_u["median"] == metadata["stats"]["bands"]["u"]["quantiles"]["p50"]
    assert train_u["sky_noise"] == metadata["stats"]["bands"]["u"]["sky_sigma"]["p50"]
    assert [entry["sha256"] for entry in info["inputs"]] == [entry["sha256"] for entry in metadata["inputs"]]
    assert info["created_by"].startswith("cutout-etl ") and info["rows_kept"] == 3 * DEMO_ROWS


def test_parquet_describes_the_same_content(small_dataset, parquet_dataset):
    hdf5, parquet = describe_dataset(small_dataset), describe_dataset(parquet_dataset)
    assert parquet["format"] == "parquet" and parquet["bytes"] > 0
    for key in ("classes", "splits", "stats", "digest", "inputs"):
        assert parquet[key] == hdf5[key], key


def test_text_report_names_splits_statistics_and_digest(small_dataset):
    code, stdout, _ = run_cli("info", small_dataset)
    assert code == 0
    digest = describe_dataset(small_dataset)["digest"]
    for expected in ("hdf5 dataset", "train", "val", "test", "GALAXY", "statistics of train", "sky noise", digest):
        assert expected in stdout, expected


@pytest.mark.parametrize("which", ["class file", "missing"])
def test_a_non_dataset_is_one_line_and_exit_1(demo_files, tmp_path, which):
    target = demo_files[0] if which == "class file" else tmp_path / "nope.h5"
    done = subprocess.run([CLI, "info", target], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and str(target) in done.stderr and "Traceback" not in done.stderr


def test_version_is_the_installed_one():
    done = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == f"cutout-etl {version('cutout-etl')}\n"


def test_inspect_on_a_dataset_points_to_info(small_dataset):
    code, _, stderr = run_cli("inspect", small_dataset)
    assert code == 1
    assert f"describe it with `cutout-etl info {small_dataset}`" in " ".join(stderr.split())


def test_a_split_of_a_merged_file_names_its_parent(demo_files, tmp_path):
    merged, dataset = tmp_path / "merged.h5", tmp_path / "dataset.h5"
    assert run_cli("merge", *demo_files, "-o", merged, "-q")[0] == 0
    assert run_cli("split", merged, "-o", dataset, "-q")[0] == 0
    info = describe_dataset(merged)
    assert info["kind"] == "merged" and list(info["splits"]) == ["data"] and info["stats"] == {}
    code, stdout, _ = run_cli("info", dataset)
    described = describe_dataset(dataset)
    assert code == 0 and described["parent"]["name"] == "merged.h5" and len(described["inputs"]) == 3
    assert f"parent {merged}" in " ".join(stdout.split())


def test_info_names_the_split_method_and_the_faint_table(tmp_path):
    files = [str(p) for p in write_class_files(tmp_path, class_tables((60, 60, 60)))]
    out = tmp_path / "faint.h5"
    code, _, err = run_cli("build", *files, "-o", out, "--split-method", "stable", "--faint-test", "0.2", "-q")
    assert code == 0, err
    code, stdout, _ = run_cli("info", out)
    assert code == 0
    assert "stable split 0.7/0.15/0.15" in stdout and "faintest 0.2 of each class by r flux in test_faint" in stdout
    described = describe_dataset(out)
    assert described["splits"]["test_faint"]["rows"] == 36
    assert described["split_method"]["split_method"] == "stable"
