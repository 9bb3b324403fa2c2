"""Every command through the CLI: exit codes, JSON on stdout, help with an example."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer

from cutout_etl import pipeline
from cutout_etl.cli import app
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions

from .conftest import DEMO_ROWS, invoke, make_table, write_table

COMMANDS = [
    "inspect",
    "merge",
    "split",
    "stats",
    "build",
    "convert",
    "verify",
    "info",
    "preview",
    "demo-data",
    "ingest",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: cutout-etl " + command in result.stdout


def test_build_json_summary_is_the_only_stdout(demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "dataset"
    assert (
        summary["tables_rows"]["train"]["rows"]
        + summary["tables_rows"]["val"]["rows"]
        + summary["tables_rows"]["test"]["rows"]
        == 3 * DEMO_ROWS
    )
    assert "stats" in summary


def test_progress_is_one_plain_line_per_stage_when_not_a_terminal(demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5")
    assert result.exit_code == 0
    stages = [line for line in result.stderr.splitlines() if line.endswith((" rows", " files"))]
    assert stages == [f"scan: {3 * DEMO_ROWS} rows", f"write: {3 * DEMO_ROWS} rows", "hash: 3 files"]
    assert "statistics of the train split" in result.stderr


def test_quiet_prints_nothing(demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5", "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_merge_split_stats_chain(demo_files, tmp_path):
    merged, dataset = tmp_path / "merged.h5", tmp_path / "dataset.h5"
    assert invoke("merge", *demo_files, "-o", merged, "--quiet").exit_code == 0
    result = invoke("split", merged, "-o", dataset, "--fractions", "0.8,0.1,0.1", "--seed", "7", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["split"]["fractions"] == [0.8, 0.1, 0.1] and summary["split"]["seed"] == 7
    assert summary["tables_rows"]["train"]["class_counts"] == {"GALAXY": 96, "QSO": 96, "STAR": 96}
    result = invoke("stats", dataset, "--json")
    assert result.exit_code == 0
    stats = json.loads(result.stdout)["stats"]
    assert stats["split"] == "train" and stats["n_cutouts"] == 288
    result = invoke("stats", dataset)
    assert "asinh softening" in result.stderr and "rows per split: train 288, val 36, test 36" in result.stderr


def test_stats_on_a_missing_split(demo_files, tmp_path):
    dataset = tmp_path / "dataset.h5"
    invoke("build", *demo_files, "-o", dataset, "--quiet")
    result = invoke("stats", dataset, "--split", "holdout")
    assert result.exit_code == 1
    assert result.stderr == f"error: {dataset}: no split 'holdout' (splits: train, val, test)\n"


def test_inspect_clean_files_exit_0_json(demo_files):
    result = invoke("inspect", *demo_files, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] and report["errors"] == 0
    first = report["files"][0]
    assert first["rows"] == DEMO_ROWS and first["labels"] == {"GALAXY": DEMO_ROWS}
    assert first["image"] == {
        "column": "image",
        "height": 36,
        "width": 36,
        "bands": 4,
        "band_names": ["u", "g", "r", "i"],
        "dtype": "float32",
    }
    assert [c["name"] for c in first["columns"]] == ["ID", "RAJ2000", "DECJ2000", "SPECTYPE", "image"]
    assert set(first["pixels"]) == {"u", "g", "r", "i"}
    assert first["pixels"]["r"]["min"] < 0 < first["pixels"]["r"]["max"]


def test_inspect_reports_problems(tmp_path):
    stars = make_table(20, b"STAR", 0)
    stars["SPECTYPE"][:3] = b"QSO"  # labels that differ from the majority
    stars["image"][4] = np.nan  # no finite pixel
    stars["image"][5][0, 0, 0] = np.inf  # partly non-finite
    stars["ID"][7] = stars["ID"][6]  # duplicate within the file
    gal = make_table(10, b"GALAXY", 0)  # IDs 0..9 also in stars: conflicting labels
    qso = make_table(5, b"QSO", 0)  # IDs 0..4: same label as stars' 0..2
    broken = tmp_path / "broken.hdf5"
    broken.write_text("nope")
    files = [
        write_table(stars, tmp_path / "stars.hdf5"),
        write_table(gal, tmp_path / "gal.hdf5"),
        write_table(qso, tmp_path / "qso.hdf5"),
        broken,
    ]
    result = invoke("inspect", *files, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    messages = {
        (p["level"], p["file"], p["message"].split(" e.g.")[0].split(";")[0], p["count"]) for p in report["problems"]
    }
    assert ("error", "broken.hdf5", f"{broken}: not an HDF5 file", None) in messages
    assert ("warning", "stars.hdf5", "3 rows are not labelled STAR, the file's majority class", 3) in messages
    assert ("warning", "stars.hdf5", "rows whose image has no finite pixel (merge drops them)", 1) in messages
    assert ("warning", "stars.hdf5", "rows with some NaN/inf pixels (kept)", 1) in messages
    assert ("warning", "stars.hdf5", "IDs appear more than once in the file,", 1) in messages
    shared = {m for m in messages if m[1] is None}
    assert (
        "error",
        None,
        "IDs carry conflicting labels (within a file or across files),",
        9,
    ) in shared  # ID 7 is gone from stars
    stars_report = report["files"][0]
    assert stars_report["pixels"]["u"]["nan_pixels"] == 36 * 36 and stars_report["pixels"]["u"]["inf_pixels"] == 1
    assert stars_report["rows_no_finite_pixel"] == 1


def test_inspect_shape_mismatch_is_an_error(tmp_path):
    files = [
        write_table(make_table(5, b"STAR", 0), tmp_path / "a.hdf5"),
        write_table(make_table(5, b"QSO", 10, shape=(32, 32, 4)), tmp_path / "b.hdf5"),
    ]
    result = invoke(
        "inspect", *files, "--json", "--classes", "QSO,STAR"
    )  # the classes present: the shapes are the one error
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems[-1]["message"] == "image shapes differ across files: a.hdf5 (36, 36, 4); b.hdf5 (32, 32, 4)"


def test_demo_data_command(tmp_path):
    result = invoke("demo-data", tmp_path / "d", "--rows", "10", "--json")
    assert result.exit_code == 0
    files = json.loads(result.stdout)["files"]
    assert [Path(f).name for f in files] == [
        "image_table_galaxies.hdf5",
        "image_table_qso.hdf5",
        "image_table_stars.hdf5",
    ]
    with h5py.File(files[0]) as f:
        assert f["data"].shape == (10,)


def test_installed_console_script(demo_files, tmp_path):
    script = Path(sys.executable).parent / "cutout-etl"
    out = tmp_path / "ds.h5"
    done = subprocess.run(
        [script, "build", *map(str, demo_files), "-o", str(out), "--json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables_rows"]["test"]["rows"] == 54
    again = subprocess.run(
        [script, "build", *map(str, demo_files), "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2
    assert again.stderr == f"error: {out}: output exists; use --overwrite to replace it\n"


def test_fsync_build(demo_files, tmp_path):
    result = invoke("build", *demo_files, "-o", tmp_path / "ds.h5", "--fsync", "--quiet")
    assert result.exit_code == 0 and (tmp_path / "ds.h5").exists()


def test_readme_mentions_every_command_and_every_option():
    """As sqlite-utils does: a command or option the README does not mention is undocumented."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert sorted(commands) == sorted(COMMANDS)
    missing = [f"cutout-etl {name}" for name in commands if f"cutout-etl {name}" not in readme]
    for name, command in commands.items():
        options = {opt for param in command.params for opt in param.opts if opt.startswith("--") and opt != "--help"}
        missing += [f"{name} {opt}" for opt in sorted(options) if not re.search(re.escape(opt) + r"(?![\w-])", readme)]
    assert missing == []


def test_cli_defaults_are_the_library_defaults():
    """Run with no options, build uses each option dataclass's own defaults."""
    from cutout_etl.cli.options import cluster_options, merge_options, output_options, read_options, split_options

    opts = {param.name: param.default for param in typer.main.get_command(app).commands["build"].params}  # type: ignore[attr-defined]
    assert read_options(opts) == ReadOptions()
    assert merge_options(opts) == pipeline.MergeOptions()
    split = split_options(opts)
    assert dataclasses.replace(split, fractions=tuple(split.fractions)) == pipeline.SplitOptions()
    assert output_options(opts) == pipeline.OutputOptions()
    assert cluster_options(opts) == ClusterOptions()
