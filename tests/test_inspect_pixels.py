"""inspect's per-band pixel summary: min, max and NaN/inf counts exact, the median within the sketch's bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cutout_etl.inputs import readers
from cutout_etl.inspection import inspect_files
from cutout_etl.steps.pixel_summary import PixelSummary
from cutout_etl.steps.sketch import quantile_bound

from .conftest import class_tables, invoke, lower_case_names, write_class_files

BANDS = ["u", "g", "r"]


def faint_images(n: int = 300, seed: int = 7) -> np.ndarray:
    """Sky noise at 1e-12 and a few bright sources, with NaN and inf pixels; band u of cutout 7 has none finite."""
    rng = np.random.default_rng(seed)
    images = (rng.standard_normal((n, 12, 12, 3)) * 1e-12).astype(np.float32)
    images[rng.integers(0, n, 20), 6, 6, :] = 3e-9
    images[5, 2, 3, 1] = np.nan
    images[7, ..., 0] = np.nan
    images[9, 0, 0, 2] = np.inf
    images[10, 1, 1, 2] = -np.inf
    return images


def as_rows(images: np.ndarray) -> np.ndarray:
    """Structured rows as the readers give them: the image field is a view, not a contiguous array."""
    rows = np.zeros(len(images), dtype=[("ID", "S8"), ("image", images.dtype, images.shape[1:])])
    rows["image"] = images
    return rows


def summarise(images: np.ndarray, chunk: int = 64, known_finite: bool = True) -> dict:
    summary = PixelSummary(n_bands=images.shape[-1])
    for start in range(0, len(images), chunk):
        part = as_rows(images[start : start + chunk])["image"]
        all_finite = np.isfinite(part).all(axis=(1, 2, 3)) if known_finite else None
        summary.update(part, all_finite)
    return summary.summary(BANDS)


def exact_median(values: np.ndarray) -> float:
    return float(np.quantile(values, 0.5, method="inverted_cdf"))


@pytest.mark.parametrize("known_finite", [True, False])
def test_min_max_and_counts_are_numpys_and_the_median_is_within_the_sketch_bound(known_finite):
    images = faint_images()
    summary = summarise(images, known_finite=known_finite)
    for band, name in enumerate(BANDS):
        values = images[..., band]
        finite = values[np.isfinite(values)]
        got = summary[name]
        assert (got["min"], got["max"]) == (float(finite.min()), float(finite.max()))
        assert got["nan_pixels"] == int(np.isnan(values).sum())
        assert got["inf_pixels"] == int(np.isinf(values).sum())
        assert got["cutouts_no_finite"] == int((~np.isfinite(values).any(axis=(1, 2))).sum())
        exact = exact_median(finite)
        assert abs(got["median"] - exact) <= quantile_bound(exact) <= 2**-8 * abs(exact)
        assert got["median_bound"] == quantile_bound(exact)
    assert summary["u"]["cutouts_no_finite"] == 1 and summary["r"]["inf_pixels"] == 2


def test_chunking_merging_byte_order_and_float64_give_the_same_summary():
    images = faint_images()
    whole = summarise(images, chunk=len(images))
    first, second = PixelSummary(3), PixelSummary(3)
    first.update(images[:100])
    second.update(images[100:])
    assert first.merge(second).summary(BANDS) == whole
    assert summarise(images, chunk=17) == whole
    assert summarise(images.astype(">f4")) == whole
    assert summarise(images.astype("f8")) == whole


def test_a_band_without_finite_pixels_has_no_min_median_or_max():
    images = faint_images(20)
    images[..., 1] = np.nan
    band = summarise(images)["g"]
    assert band == {
        "min": None,
        "median": None,
        "median_bound": None,
        "max": None,
        "nan_pixels": 20 * 12 * 12,
        "inf_pixels": 0,
        "cutouts_no_finite": 20,
    }


def test_inspect_reports_the_median_within_its_bound_and_says_it_is_approximate(tmp_path):
    files = write_class_files(tmp_path, class_tables((30, 20, 25)), lower_case_names(".hdf5"))
    report = json.loads(invoke("inspect", *files, "--json").stdout)
    for path, file in zip(files, report["files"]):
        with h5py.File(path, "r") as f:
            images = f["data"]["image"]
        for band, name in enumerate(["u", "g", "r", "i"]):
            exact = exact_median(images[..., band].ravel())
            pixels = file["pixels"][name]
            assert abs(pixels["median"] - exact) <= pixels["median_bound"] <= 2**-8 * abs(exact)
    text = invoke("inspect", *files).stderr  # the rendered report goes to stderr
    assert "≈ median" in text and "within 2^-8 × |median| of the exact median" in text


def test_files_of_equal_size_are_hashed_only_when_their_rows_agree(tmp_path, monkeypatch):
    """A copy is still found, but files whose rows differ are not read a second time to hash them."""
    files = write_class_files(tmp_path, class_tables((20, 20, 20)), lower_case_names(".hdf5"))
    copy = Path(shutil.copy(files[1], tmp_path / "qso_copy.hdf5"))
    assert len({p.stat().st_size for p in [*files, copy]}) == 1
    hashed = []
    real = readers.sha256_file

    def recording(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(readers, "sha256_file", recording)
    report = inspect_files([*files, copy])
    assert sorted(hashed) == ["qso.hdf5", "qso_copy.hdf5"]
    assert [p["message"] for p in report["problems"] if p["level"] == "error"] == [
        f"{copy}: identical content to {files[1]}, given twice; give each file once"
    ]
