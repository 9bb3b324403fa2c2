"""Tests for the synthetic demo data (cutout_etl.demo)."""

from __future__ import annotations

import pathlib
import re

import h5py
import numpy as np
import pytest
from astropy.table import Table

from cutout_etl import demo_sources
from cutout_etl.demo import DEMO_FILES, SKY_SIGMA, make_class_table, write_demo_files
from cutout_etl.demo_sources import format_ids

ROWS = 300
ID_PATTERN = re.compile(rb"^KiDSDR5 J(\d\d)(\d\d)(\d\d\.\d{3})([+-])(\d\d)(\d\d)(\d\d\.\d\d)$")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("demo") / "created" / "here"
    paths = write_demo_files(directory, rows=ROWS, seed=0)
    assert paths == [directory / name for name in DEMO_FILES.values()]
    return directory


@pytest.fixture(scope="module")
def tables(demo_dir: pathlib.Path) -> dict[str, Table]:
    return {cls: Table.read(demo_dir / name, path="data") for cls, name in DEMO_FILES.items()}


def _images(table: Table) -> np.ndarray:
    return np.asarray(table["image"], dtype=np.float64)


def test_file_names() -> None:
    assert DEMO_FILES == {
        "GALAXY": "image_table_galaxies.hdf5",
        "QSO": "image_table_qso.hdf5",
        "STAR": "image_table_stars.hdf5",
    }


def test_columns_dtypes_and_shapes(tables: dict[str, Table]) -> None:
    expected_spectype = {"GALAXY": "S6", "QSO": "S4", "STAR": "S4"}
    for cls, table in tables.items():
        assert table.colnames == ["ID", "RAJ2000", "DECJ2000", "SPECTYPE", "image"]
        assert len(table) == ROWS
        assert table["ID"].dtype == np.dtype("S29")
        assert table["RAJ2000"].dtype == np.float64
        assert table["DECJ2000"].dtype == np.float64
        assert table["SPECTYPE"].dtype == np.dtype(expected_spectype[cls])
        assert table["image"].dtype == np.float32
        assert table["image"].shape == (ROWS, 36, 36, 4)


def test_hdf5_layout_is_the_users(demo_dir: pathlib.Path) -> None:
    """One contiguous compound dataset plus astropy's column metadata."""
    with h5py.File(demo_dir / DEMO_FILES["QSO"], "r") as f:
        assert set(f.keys()) == {"data", "data.__table_column_meta__"}
        data = f["data"]
        assert data.dtype.names == ("ID", "RAJ2000", "DECJ2000", "SPECTYPE", "image")
        assert data.chunks is None and data.compression is None
        assert data.dtype["image"].shape == (36, 36, 4)


def test_spectype_values(tables: dict[str, Table]) -> None:
    expected = {"GALAXY": b"GALAXY", "QSO": b"QSO ", "STAR": b"STAR"}
    for cls, table in tables.items():
        assert set(np.asarray(table["SPECTYPE"]).tolist()) == {expected[cls]}


def test_ids_unique_across_files_and_match_positions(tables: dict[str, Table]) -> None:
    all_ids = np.concatenate([np.asarray(t["ID"]) for t in tables.values()])
    assert len(np.unique(all_ids)) == 3 * ROWS
    for table in tables.values():
        for id_, ra, dec in zip(np.asarray(table["ID"]), table["RAJ2000"], table["DECJ2000"]):
            match = ID_PATTERN.match(id_)
            assert match, id_
            h, m, s, sign, d, am, asec = match.groups()
            ra_id = (int(h) + int(m) / 60 + float(s) / 3600) * 15
            dec_id = int(d) + int(am) / 60 + float(asec) / 3600
            # IAU style: truncated, so the position lies inside the ID's cell.
            assert 0 <= ra - ra_id < 0.001 * 15 / 3600
            assert (sign == b"-") == (dec < 0)
            assert 0 <= abs(dec) - dec_id < 0.01 / 3600


def test_id_format_example() -> None:
    ra_ms = np.array([(8 * 3600 + 37 * 60 + 27) * 1000 + 19])
    dec_cell = np.array([(2 * 3600 + 51 * 60 + 47) * 100 + 11])
    assert format_ids(ra_ms, dec_cell).tolist() == [b"KiDSDR5 J083727.019+025147.11"]
    assert format_ids(ra_ms, -dec_cell - 1).tolist() == [b"KiDSDR5 J083727.019-025147.11"]


def test_positions_in_kids_like_patches(tables: dict[str, Table]) -> None:
    for table in tables.values():
        ra, dec = np.asarray(table["RAJ2000"]), np.asarray(table["DECJ2000"])
        north = (ra >= 120) & (ra <= 240) & (dec >= -3.01) & (dec <= 3.01)
        south = ((ra >= 330) | (ra <= 52)) & (dec >= -35.01) & (dec <= -26.99)
        assert np.all(north | south)
        assert north.any() and south.any()


def test_same_seed_same_bytes_different_seed_differs(tables: dict[str, Table]) -> None:
    again = make_class_table("GALAXY", ROWS, seed=0)
    assert np.asarray(again["image"]).tobytes() == np.asarray(tables["GALAXY"]["image"]).tobytes()
    assert np.array_equal(np.asarray(again["ID"]), np.asarray(tables["GALAXY"]["ID"]))
    other = make_class_table("GALAXY", 20, seed=1)
    assert np.asarray(other["image"]).tobytes() != np.asarray(again["image"][:20]).tobytes()


def test_tiling_reuses_block_images_with_new_ids() -> None:
    table = make_class_table("STAR", 25, seed=3, block=10)
    images = np.asarray(table["image"])
    assert np.array_equal(images[13], images[3])
    assert not np.array_equal(images[13], images[4])
    assert len(np.unique(np.asarray(table["ID"]))) == 25
    tail = make_class_table("STAR", 10, seed=3, block=10, id_offset=15)
    assert np.array_equal(np.asarray(tail["image"]), images[15:])
    assert np.array_equal(np.asarray(tail["ID"]), np.asarray(table["ID"][15:]))


def test_block_objects_do_not_depend_on_block_size() -> None:
    small = np.asarray(make_class_table("QSO", 8, seed=5)["image"])
    large = np.asarray(make_class_table("QSO", 30, seed=5)["image"])
    assert small.tobytes() == large[:8].tobytes()


def test_galaxies_are_more_extended_than_point_sources(tables: dict[str, Table]) -> None:
    concentration = {}
    for cls, table in tables.items():
        r = _images(table)[..., 2]
        concentration[cls] = np.median(r[:, 16:20, 16:20].sum(axis=(1, 2)) / r.sum(axis=(1, 2)))
    assert concentration["STAR"] > 0.4 and concentration["QSO"] > 0.4
    assert concentration["GALAXY"] < 0.6 * concentration["STAR"]


def test_quasars_are_bluer_than_stars_in_u_minus_g(tables: dict[str, Table]) -> None:
    u_g = {}
    for cls in ("QSO", "STAR"):
        aperture = _images(tables[cls])[:, 10:26, 10:26].sum(axis=(1, 2))
        u_g[cls] = -2.5 * np.log10(np.median(aperture[:, 0]) / np.median(aperture[:, 1]))
    assert u_g["QSO"] < 0.6
    assert u_g["STAR"] > u_g["QSO"] + 0.7


def test_flux_scale_is_maggies(tables: dict[str, Table]) -> None:
    """Summed r flux of point sources gives magnitudes in the drawn range."""
    for cls, (low, high) in {"STAR": (17.0, 22.0), "QSO": (18.0, 22.0)}.items():
        r_total = _images(tables[cls])[..., 2].sum(axis=(1, 2))
        mag = -2.5 * np.log10(np.median(r_total))
        assert low + 0.5 < mag < high - 0.5


def test_peak_pixels_realistic(tables: dict[str, Table]) -> None:
    peaks = np.concatenate([_images(t).max(axis=(1, 2)) for t in tables.values()])
    assert np.all(peaks > 0)
    assert np.percentile(peaks[:, 2], 99) < 1.5e-8
    assert peaks.max() < 3e-8


def test_sky_noise_on_border_frame(tables: dict[str, Table]) -> None:
    for cls in ("STAR", "QSO"):
        images = _images(tables[cls])
        frame = np.ones((36, 36), dtype=bool)
        frame[4:-4, 4:-4] = False
        border = images[:, frame, :]
        std = np.median(border.std(axis=1), axis=0)
        np.testing.assert_allclose(std, SKY_SIGMA, rtol=0.3)
        assert np.all(np.abs(np.median(border, axis=(0, 1))) < 0.1 * SKY_SIGMA)


def test_rejects_unknown_class_and_bad_numbers() -> None:
    with pytest.raises(ValueError, match="got 'AGN'"):
        make_class_table("AGN", 5)
    with pytest.raises(ValueError, match="rows"):
        make_class_table("STAR", -1)
    with pytest.raises(ValueError, match="block"):
        make_class_table("STAR", 5, block=0)


def test_zero_rows() -> None:
    table = make_class_table("QSO", 0)
    assert len(table) == 0 and table["image"].shape == (0, 36, 36, 4)


def test_colliding_positions_still_get_unique_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Squeeze every position into one ID cell: later rows move north, in steps of 3 cells."""
    tiny = (100.0, 1e-9, 0.0, 1e-9)
    monkeypatch.setattr(demo_sources, "_PATCHES", (tiny, tiny))
    tables = [make_class_table(cls, 12, block=2) for cls in DEMO_FILES]
    ids = np.concatenate([np.asarray(t["ID"]) for t in tables])
    assert len(np.unique(ids)) == 36
    for table in tables:
        assert np.ptp(np.asarray(table["DECJ2000"])) < 12 * 0.03 / 3600
