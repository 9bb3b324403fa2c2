"""`cutout-etl ingest`: per-band FITS cutouts, written as the cutout generator writes them, back to class files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack

from cutout_etl.demo import make_class_table
from cutout_etl.errors import CutoutFileError, OutputExistsError
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.ingest import IngestOptions, ingest
from cutout_etl.ingest.synthetic import cutout_path, cutout_wcs, trim_cutout, write_cutouts
from cutout_etl.schema import Columns

from .conftest import SCRIPT

BANDS = ("u", "g", "r", "i")
ALL = 16
HERE = ClusterOptions(workers=1)  # read in this process: the tests stay fast; the CLI test uses the pool


@pytest.fixture
def objects(tmp_path) -> tuple[Table, Path, Path]:
    """Sixteen objects of three classes, their cutouts in every band and a FITS catalogue of them."""
    table = vstack([make_class_table(c, n, seed=4) for c, n in (("GALAXY", 6), ("QSO", 5), ("STAR", 5))])
    write_cutouts(table, tmp_path / "cutouts", BANDS)
    table[["ID", "RAJ2000", "DECJ2000", "SPECTYPE"]].write(tmp_path / "catalogue.fits")
    return table, tmp_path / "catalogue.fits", tmp_path / "cutouts"


def cli(*args: object) -> subprocess.CompletedProcess:
    """`cutout-etl *args` in a real process."""
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


def run(objects, out: Path, **options) -> dict:
    _, catalogue, cutouts = objects
    return ingest(catalogue, cutouts, out, IngestOptions(**options), cluster=HERE)


def read_back(out: Path, name: str) -> Table:
    return Table.read(out / name, path="data")


def file_of(objects, row: int, band: str) -> Path:
    table, _, cutouts = objects
    return cutout_path(cutouts, band, table["RAJ2000"][row], table["DECJ2000"][row])


def test_cutouts_come_back_bit_exact_in_band_order_and_pass_inspect_and_build(objects, tmp_path):
    table, catalogue, cutouts = objects
    out = tmp_path / "classes"
    done = cli(
        "ingest",
        "--catalog",
        catalogue,
        "--cutouts",
        cutouts,
        "-o",
        out,
        "--workers",
        "2",
        "--chunk-rows",
        "3",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows_kept"] == ALL and report["dropped"] == {} and report["max_relative_rounding"] == 0.0
    for name, spectype in (
        ("image_table_galaxies.hdf5", "GALAXY"),
        ("image_table_qso.hdf5", "QSO"),
        ("image_table_stars.hdf5", "STAR"),
    ):
        back, expected = read_back(out, name), table[np.char.strip(table["SPECTYPE"].astype(str)) == spectype]
        assert back.colnames == ["ID", "RAJ2000", "DECJ2000", "SPECTYPE", "image"]
        assert back["image"].dtype == np.float32 and back["image"].shape[1:] == (36, 36, 4)
        assert np.array_equal(np.asarray(back["image"]).view(np.uint32), np.asarray(expected["image"]).view(np.uint32))
        assert list(back["ID"]) == list(expected["ID"]) and np.array_equal(back["RAJ2000"], expected["RAJ2000"])
    files = sorted(out.glob("image_table_*.hdf5"))
    for command in (["inspect", *files], ["build", *files, "-o", tmp_path / "dataset.h5"]):
        checked = cli(*command, "--quiet")
        assert checked.returncode == 0, checked.stderr


def test_a_band_file_holding_another_band_is_an_error_naming_it(objects, tmp_path):
    wrong = file_of(objects, 1, "u")
    fits.setval(wrong, "FILTER", value="OCAM_g_SDSS")
    with pytest.raises(CutoutFileError, match=rf"{wrong.name}.*holds band g, not band u"):
        run(objects, tmp_path / "classes")
    assert not (tmp_path / "classes").exists() or list((tmp_path / "classes").iterdir()) == []


def test_the_right_band_in_the_header_is_accepted(objects, tmp_path):
    fits.setval(file_of(objects, 1, "r"), "FILTER", value="OCAM_r_SDSS")
    assert run(objects, tmp_path / "classes")["rows_kept"] == ALL


@pytest.mark.parametrize("side", ["left", "right"])
def test_an_edge_cutout_is_padded_with_nan_on_the_side_the_tile_ended(objects, tmp_path, side):
    table = objects[0]
    trim_cutout(file_of(objects, 0, "r"), 2, side)  # 36 rows x 34 columns
    report = run(objects, tmp_path / "classes")
    image = np.asarray(read_back(tmp_path / "classes", "image_table_galaxies.hdf5")["image"][0])
    expected = np.array(table["image"][0])
    missing = slice(0, 2) if side == "left" else slice(34, 36)
    assert np.isnan(image[:, missing, 2]).all()
    expected[:, missing, 2] = np.nan
    np.testing.assert_array_equal(image, expected)  # every other pixel in place, the other bands untouched
    assert report["kept_changed"] == {"padded_trimmed_at_edge": 1} and report["rows_kept"] == ALL


def test_an_edge_cutout_is_dropped_and_counted_by_policy(objects, tmp_path):
    trim_cutout(file_of(objects, 0, "r"), 2, "left")
    report = run(objects, tmp_path / "classes", smaller="drop")
    assert report["dropped"] == {"trimmed_at_edge": 1} and report["rows_kept"] == ALL - 1
    assert len(read_back(tmp_path / "classes", "image_table_galaxies.hdf5")) == 5


def test_a_missing_band_is_dropped_or_nan_filled_and_counted(objects, tmp_path):
    file_of(objects, 6, "g").unlink()  # the first QSO
    dropped = run(objects, tmp_path / "drop")
    assert dropped["dropped"] == {"missing_band": 1} and dropped["rows_kept"] == ALL - 1
    filled = run(objects, tmp_path / "nan", missing_band="nan")
    assert filled["kept_changed"] == {"nan_filled_missing_band": 1} and filled["rows_kept"] == ALL
    qso = np.asarray(read_back(tmp_path / "nan", "image_table_qso.hdf5")["image"][0])
    assert np.isnan(qso[:, :, 1]).all() and np.isfinite(qso[:, :, [0, 2, 3]]).all()


def test_an_unmatched_file_is_reported(objects, tmp_path):
    cutouts = objects[2]
    extra = cutout_path(cutouts, "u", 10.5, 1.25)
    extra.write_bytes(file_of(objects, 0, "u").read_bytes())
    (cutouts / "i" / "notes.txt").write_text("not a cutout")
    report = run(objects, tmp_path / "classes")
    assert report["bands_report"]["u"]["unmatched_files"] == 1
    assert report["bands_report"]["u"]["unmatched_examples"] == [extra.name]
    assert report["bands_report"]["i"]["unrecognised_examples"] == ["notes.txt"]


def test_objects_listed_without_overlap_are_counted_as_such(objects, tmp_path):
    table, _, cutouts = objects
    for band in BANDS:
        file_of(objects, 5, band).unlink()
    table[5:6][["ID", "RAJ2000", "DECJ2000", "SPECTYPE"]].write(cutouts / "u" / "no_overlap_objects.fits")
    report = run(objects, tmp_path / "classes")
    assert report["dropped"] == {"no_overlap": 1} and report["bands_report"]["u"]["listed_no_overlap"] == 1


def test_a_name_printed_with_fewer_digits_matches_within_the_tolerance(objects, tmp_path):
    table = objects[0]
    ra, dec = table["RAJ2000"][2], table["DECJ2000"][2]
    original = file_of(objects, 2, "i")
    original.rename(original.with_name(f"cutout_i_RA{ra:.7f}_DEC{dec:.7f}.fits"))
    report = run(objects, tmp_path / "classes")
    assert report["rows_kept"] == ALL and report["bands_report"]["i"]["matched_within_tolerance"] == 1
    assert run(objects, tmp_path / "strict", match_tolerance=0)["dropped"] == {"missing_band": 1}


def test_a_file_whose_wcs_puts_the_object_elsewhere_is_an_error(objects, tmp_path):
    wrong = file_of(objects, 4, "g")
    fits.setval(wrong, "CRPIX1", value=fits.getval(wrong, "CRPIX1") + 3)
    with pytest.raises(CutoutFileError, match=wrong.name):
        run(objects, tmp_path / "classes")


def test_float64_pixels_are_rounded_to_float32_and_the_largest_rounding_reported(objects, tmp_path):
    path = file_of(objects, 0, "u")
    with fits.open(path, mode="update") as hdus:
        hdus[0].data = hdus[0].data * (1 + 1e-9)  # no longer float32-representable
    report = run(objects, tmp_path / "classes")
    assert 0 < report["max_relative_rounding"] <= 2.0**-24


def test_a_csv_catalogue_with_its_own_column_names(objects, tmp_path):
    table, _, cutouts = objects
    csv = Table({"name": table["ID"].astype(str), "ra": table["RAJ2000"], "dec": table["DECJ2000"]})
    csv["cls"] = table["SPECTYPE"].astype(str)
    csv.write(tmp_path / "catalogue.csv")
    report = run(
        (table, tmp_path / "catalogue.csv", cutouts),
        tmp_path / "classes",
        columns=Columns(id="name", label="cls", ra="ra", dec="dec"),
    )
    assert report["rows_kept"] == ALL


def test_existing_class_files_are_kept_without_overwrite(objects, tmp_path):
    run(objects, tmp_path / "classes")
    with pytest.raises(OutputExistsError):
        run(objects, tmp_path / "classes")
    assert run(objects, tmp_path / "classes", overwrite=True)["rows_kept"] == ALL


def test_cli_errors_are_one_line_with_exit_codes(objects, tmp_path):
    _, catalogue, cutouts = objects
    missing = cli("ingest", "--catalog", tmp_path / "nope.fits", "--cutouts", cutouts, "-o", tmp_path / "o")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope.fits" in missing.stderr
    bad = cli("ingest", "--catalog", catalogue, "--cutouts", cutouts, "-o", tmp_path / "o", "--bands", "u,u")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--bands" in bad.stderr


def test_dask_workers_write_the_same_class_files(objects, tmp_path):
    _, catalogue, cutouts = objects
    here = ingest(catalogue, cutouts, tmp_path / "here", IngestOptions(chunk_rows=5), cluster=HERE)
    dask = ingest(catalogue, cutouts, tmp_path / "dask", IngestOptions(chunk_rows=5), cluster=ClusterOptions("dask", 1))
    assert dask["rows_kept"] == here["rows_kept"] == ALL
    for name in ("image_table_galaxies.hdf5", "image_table_qso.hdf5", "image_table_stars.hdf5"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_ctrl_c_stops_the_pool_and_leaves_no_class_file(tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: workers and parent; one line, no class file."""
    table = make_class_table("STAR", 80, seed=5)
    write_cutouts(table, tmp_path / "cutouts", BANDS)
    table[["ID", "RAJ2000", "DECJ2000", "SPECTYPE"]].write(tmp_path / "catalogue.fits")
    args = ["ingest", "--catalog", tmp_path / "catalogue.fits", "--cutouts", tmp_path / "cutouts", "-o", tmp_path / "o"]
    process = subprocess.Popen(
        [SCRIPT, *map(str, args), "--workers", "2", "--chunk-rows", "2"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    assert process.stderr.readline().startswith("ingest:")  # the pass has started (the pool is starting)
    deadline = time.monotonic() + 120
    while len(children(process.pid)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # until the pool's workers run (a bounded wait, not a timed assertion)
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    # the last line says why; no traceback from the parent or a worker (Rich may repeat the progress line that
    # the signal interrupted while it was being written, a race of the shared render layer)
    assert stderr.strip().splitlines()[-1] == "interrupted by SIGINT: no output written"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert list((tmp_path / "o").iterdir()) == []  # no class file, no temporary


def test_a_larger_cutout_is_cropped_around_the_object_or_dropped(objects, tmp_path):
    table = objects[0]
    path = file_of(objects, 7, "i")
    big = np.random.default_rng(0).normal(0, 1e-12, (40, 40))
    big[2:38, 2:38] = fits.getdata(path)  # the object's 36 x 36 in the middle of a 40 x 40 cutout
    header = cutout_wcs(float(table["RAJ2000"][7]), float(table["DECJ2000"][7]), (40, 40), 0.2).to_header()
    fits.PrimaryHDU(big, header=header).writeto(path, overwrite=True)
    cropped = run(objects, tmp_path / "crop")
    assert cropped["kept_changed"] == {"cropped_larger_than_size": 1} and cropped["rows_kept"] == ALL
    qso = np.asarray(read_back(tmp_path / "crop", "image_table_qso.hdf5")["image"][1])
    np.testing.assert_array_equal(qso, np.asarray(table["image"][7]))
    dropped = run(objects, tmp_path / "drop", larger="drop")
    assert dropped["dropped"] == {"larger_than_size": 1} and dropped["kept_changed"] == {}


def test_a_dropped_row_counts_under_its_drop_reason_only(objects, tmp_path):
    file_of(objects, 0, "u").unlink()
    trim_cutout(file_of(objects, 0, "g"), 3, "right")
    report = run(objects, tmp_path / "classes", missing_band="nan", smaller="drop")
    assert report["dropped"] == {"trimmed_at_edge": 1} and report["kept_changed"] == {}
