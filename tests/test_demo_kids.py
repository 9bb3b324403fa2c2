"""Tests for the hard demo preset (`demo-data --preset kids`, cutout_etl.demo_kids)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
from astropy.table import Table

from cutout_etl import demo_kids
from cutout_etl.demo import DEMO_ATTR, DEMO_FILES, SKY_SIGMA, make_class_table, write_demo_files
from cutout_etl.demo_kids_sources import BLOCK, SOURCES, block_stream

CLI = pathlib.Path(sys.executable).parent / "cutout-etl"
ROWS = 150


@pytest.fixture(scope="module")
def kids_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("kids")
    write_demo_files(directory, rows=ROWS, seed=3, preset="kids")
    return directory


def _draw(seed: int, code: int):
    return lambda name: block_stream(seed, code, name, 0)


def test_files_have_the_users_layout_and_every_row_is_its_own_object(kids_dir: pathlib.Path) -> None:
    demo_table = make_class_table("QSO", 2, seed=0)
    for name in DEMO_FILES.values():
        table = Table.read(kids_dir / name, path="data")
        assert table.colnames == demo_table.colnames
        assert len(table) == ROWS and table["image"].dtype == np.float32 and table["image"].shape[1:] == (36, 36, 4)
        images = np.asarray(table["image"]).reshape(ROWS, -1)
        assert len(np.unique(images, axis=0)) == ROWS  # no tiling: no two rows share an image
        assert len(set(table["ID"])) == ROWS
        with h5py.File(kids_dir / name) as f:
            assert json.loads(f.attrs[DEMO_ATTR])["preset"] == "kids"


def test_chunked_file_equals_the_table_made_in_one_piece(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_kids, "WRITE_CHUNK", 7)  # many chunks, none aligned with the row count
    rendered: list[int] = []
    real = demo_kids.kids_images
    monkeypatch.setattr(demo_kids, "kids_images", lambda *a: rendered.append(a[3] - a[2]) or real(*a))
    write_demo_files(tmp_path, rows=30, seed=5, preset="kids")
    assert max(rendered) <= 7  # rendered and written chunk by chunk
    expected = make_class_table("STAR", 30, seed=5, preset="kids")
    written = Table.read(tmp_path / DEMO_FILES["STAR"], path="data")
    for column in expected.colnames:
        assert np.array_equal(np.asarray(written[column]), np.asarray(expected[column])), column


def test_rows_depend_only_on_seed_class_and_index_across_blocks() -> None:
    whole = make_class_table("GALAXY", BLOCK + 6, seed=1, preset="kids")
    part = make_class_table("GALAXY", 12, seed=1, id_offset=BLOCK - 6, preset="kids")
    assert np.array_equal(np.asarray(part["image"]), np.asarray(whole["image"][BLOCK - 6 :]))
    assert list(part["ID"]) == list(whole["ID"][BLOCK - 6 :])
    other = make_class_table("GALAXY", 12, seed=2, id_offset=BLOCK - 6, preset="kids")
    assert not np.array_equal(np.asarray(other["image"]), np.asarray(part["image"]))


def test_sky_noise_per_band_on_the_border(kids_dir: pathlib.Path) -> None:
    images = np.asarray(Table.read(kids_dir / DEMO_FILES["STAR"], path="data")["image"], dtype=np.float64)
    frame = np.concatenate([images[:, :3].reshape(ROWS, -1, 4), images[:, -3:].reshape(ROWS, -1, 4)], axis=1)
    sigma = 1.4826 * np.median(np.abs(frame - np.median(frame, axis=1, keepdims=True)), axis=1)
    ratio = np.median(sigma, axis=0) / SKY_SIGMA
    assert np.all((ratio > 0.85) & (ratio < 1.3)), ratio  # depth factors 0.85-1.2, plus neighbours' light


def test_magnitudes_are_faint_heavy_in_every_class() -> None:
    for code, (key, sources) in enumerate(SOURCES.items()):
        r = -2.5 * np.log10(
            sources(4000, _draw(0, code))["flux"][:, 2] + sources(4000, _draw(0, code))["bulge_flux"][:, 2]
        )
        assert 16.9 < r.min() and r.max() < 23.01, key
        assert np.median(r) > 20.3 and np.mean(r > 21) > 0.4, key


def test_high_redshift_quasars_cross_the_stellar_locus_and_hot_stars_sit_in_the_uv_excess() -> None:
    def colours(src: dict) -> np.ndarray:
        mags = -2.5 * np.log10(src["flux"] + src["bulge_flux"])
        return np.stack([mags[:, 0] - mags[:, 1], mags[:, 1] - mags[:, 2]], axis=1)

    qso, star = SOURCES["QSO"](4000, _draw(0, 1)), SOURCES["STAR"](4000, _draw(0, 2))
    crossing = colours(qso)[(qso["z"] > 2.6) & (qso["z"] < 2.8)]
    main = colours(star)[~star["hot"]]
    near = np.min(np.hypot(*(crossing[:, None, :] - main[None, ::4, :]).transpose(2, 0, 1)), axis=1)
    assert np.mean(near < 0.1) > 0.5  # most z ~ 2.7 quasars sit within 0.1 mag of a locus star
    hot = colours(star)[star["hot"]]
    assert 0.05 < star["hot"].mean() < 0.2 and np.all(hot[:, 0] < 0.6)


def test_galaxies_shrink_with_magnitude_to_barely_resolved() -> None:
    src = SOURCES["GALAXY"](4000, _draw(0, 0))
    r = -2.5 * np.log10(src["flux"][:, 2] + src["bulge_flux"][:, 2])
    assert np.median(src["r_e"][r < 18.5]) > 1.0
    assert np.median(src["r_e"][r > 22.0]) < 0.35  # half the 0.7" r-band PSF FWHM


def test_kids_preset_refuses_tiling_and_unknown_presets(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="block must be None"):
        make_class_table("QSO", 3, preset="kids", block=2)
    with pytest.raises(ValueError, match="preset must be one of"):
        write_demo_files(tmp_path, rows=3, preset="hard")
    done = subprocess.run(
        [CLI, "demo-data", tmp_path / "x", "--rows", "3", "--preset", "hard"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "hard" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
