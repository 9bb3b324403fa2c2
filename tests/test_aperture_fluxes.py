"""The model's aperture-photometry input: fluxes as numpy measures them, saved and reloaded in safe mode."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from cutout_etl.ml.keras_support import FluxPreprocessing, build_model, load_model
from cutout_etl.ml.photometry import ApertureFluxes

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

SIZE, BANDS = 36, 4
OFFSET = [1e-13, -2e-13, 0.0, 5e-13]
SIGMA = [4e-12, 1.8e-12, 1.7e-12, 6.9e-12]
RADII = [2.0, 3.0, 5.0, 8.0]


def planted_images(seed: int = 0) -> np.ndarray:
    """Sky noise at the survey's level, a point source of a different flux per band at the centre, one NaN."""
    rng = np.random.default_rng(seed)
    images = rng.normal(OFFSET, SIGMA, (3, SIZE, SIZE, BANDS)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    profile = np.exp(-(yy**2 + xx**2) / (2 * 1.5**2))
    for i, total in enumerate([1e-9, 1e-11, 3e-12]):
        images[i] += (total * profile[..., None] * np.array([0.5, 1.0, 1.5, 2.0]) / profile.sum()).astype(np.float32)
    images[1, 17, 18, 2] = np.nan  # inside every aperture: counts as the sky level
    images[2, 18, 17, 0] = np.inf
    return images


def numpy_aperture_features(images: np.ndarray) -> np.ndarray:
    """The same features in float64 numpy, written out plainly."""
    x = images.astype(np.float64)
    x = np.where(np.isfinite(x), x, np.asarray(OFFSET))  # non-finite pixels count as the sky
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    distance = np.hypot(yy, xx)
    mags = []
    for r in RADII:
        inside = distance <= r
        flux = (x[:, inside, :] - np.asarray(OFFSET)).sum(axis=1)  # (N, bands)
        mags.append(np.arcsinh(flux / (np.asarray(SIGMA) * np.sqrt(inside.sum()))))
    mags_array = np.stack(mags, axis=1)  # (N, radii, bands)
    colours = mags_array[:, :, :-1] - mags_array[:, :, 1:]
    return np.concatenate([mags_array.reshape(len(x), -1), colours.reshape(len(x), -1)], axis=1)


def test_aperture_fluxes_equal_a_numpy_measurement_on_planted_sources():
    images = planted_images()
    layer = ApertureFluxes(OFFSET, SIGMA, RADII)
    got = keras.ops.convert_to_numpy(layer(images))
    expected = numpy_aperture_features(images)
    assert got.dtype == np.float32 and got.shape == (3, len(RADII) * BANDS + len(RADII) * (BANDS - 1))
    # asinh magnitudes are O(1-10): float32 sums of ~80 terms of O(1) agree to ~1e-5 relative
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.all(np.isfinite(got))
    # the planted source is seen: brightest in the first image, above the noise (asinh 2: 3.6 noise units) in every band and aperture
    assert np.all(got[0, : len(RADII) * BANDS] > 2) and np.all(got[0] != got[2])


def test_aperture_fluxes_have_no_weights_and_reject_unusable_scales():
    layer = ApertureFluxes(OFFSET, SIGMA, RADII)
    layer(planted_images())
    assert layer.weights == [] and not layer.trainable
    with pytest.raises(ValueError, match="scales finite and > 0"):
        ApertureFluxes(OFFSET, [0.0, *SIGMA[1:]], RADII)
    with pytest.raises(ValueError, match="4 bands"):
        ApertureFluxes(OFFSET, SIGMA, RADII)(planted_images()[..., :3])


def test_model_with_apertures_saves_and_loads_in_safe_mode(tmp_path):
    preprocessing = FluxPreprocessing("asinh", offset=OFFSET, scale=[3 * s for s in SIGMA], name="flux_preprocessing")
    model = build_model(preprocessing, (SIZE, SIZE, BANDS), 3)
    aperture_layer = model.get_layer("aperture_fluxes")
    assert aperture_layer.scale == pytest.approx([3 * s for s in SIGMA], rel=1e-15)
    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")  # safe mode: the layer comes back from its config alone
    images = planted_images(1)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)
    assert reloaded.get_layer("aperture_fluxes").get_config()["radii"] == aperture_layer.radii


def test_build_model_without_apertures_is_the_plain_cnn():
    preprocessing = FluxPreprocessing("asinh", offset=OFFSET, scale=SIGMA)
    model = build_model(preprocessing, (SIZE, SIZE, BANDS), 3, apertures=None)
    assert "aperture_fluxes" not in [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="apertures=None"):
        build_model(FluxPreprocessing("none"), (SIZE, SIZE, BANDS), 3)
