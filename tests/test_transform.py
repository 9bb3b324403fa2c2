"""The numpy flux transform: the Keras layer's values, outside Keras."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from cutout_etl import open_dataset
from cutout_etl.transform import FluxTransform, PreprocessingError


@pytest.fixture(scope="module")
def images(small_dataset):
    """Demo cutouts with a NaN, +-inf and a huge flux (overflows to inf in asinh's argument) mixed in."""
    with open_dataset(small_dataset) as ds:
        images, _ = ds["train"][0:64]
    images[0, 0, 0, 0], images[1, 5, 5, 1], images[2, 7, 7, 2], images[3, 1, 2, 3] = np.nan, np.inf, -np.inf, 3e38
    return images


@pytest.mark.parametrize("mode", ["asinh", "robust", "none"])
def test_numpy_transform_equals_the_keras_layer(small_dataset, images, mode):
    import keras  # `make test` installs the keras extra; the numpy transform itself needs no framework

    from cutout_etl.ml.preprocessing import preprocessing_from_dataset

    transform = FluxTransform.from_dataset(small_dataset, mode, clip=5.0)
    layer = preprocessing_from_dataset(small_dataset, mode, clip=5.0)
    got, expected = transform(images), keras.ops.convert_to_numpy(layer(images))
    assert got.dtype == np.float32 and got.shape == images.shape and np.isfinite(got).all()
    assert got[0, 0, 0, 0] == 0 and got[1, 5, 5, 1] == 0 and got[2, 7, 7, 2] == 0
    # float32 maths in both: a few ulps apart at most (asinh's implementations differ in the last bit)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        got, expected, rtol=4 * np.finfo(np.float32).eps, atol=4 * np.finfo(np.float32).eps * scale
    )
    assert layer.offset == (None if transform.offset is None else list(transform.offset))
    assert layer.get_config()["scale"] == (None if transform.scale is None else list(transform.scale))


def test_constants_are_the_stored_training_statistics(small_dataset):
    with open_dataset(small_dataset) as ds:
        transform = FluxTransform.from_dataset(ds)
        stored = [ds.stats["bands"][band]["transform"] for band in ds.bands]
    assert transform.offset == tuple(entry["offset"] for entry in stored)
    assert transform.scale == tuple(entry["scale"] for entry in stored)
    assert pickle.loads(pickle.dumps(transform)) == transform  # goes to DataLoader workers as it is


def test_asinh_of_a_known_pixel():
    transform = FluxTransform("asinh", offset=(1e-12,), scale=(2e-12,))
    x = np.array([[[[5e-12]]]], np.float32)
    assert transform(x)[0, 0, 0, 0] == pytest.approx(np.arcsinh(2.0), rel=1e-6)


def test_no_usable_scale_is_refused_not_patched():
    with pytest.raises(ValueError, match="no epsilon"):
        FluxTransform("asinh", offset=(0.0,), scale=(0.0,))
    with pytest.raises(ValueError, match="robust mode needs a finite clip"):
        FluxTransform("robust", offset=(0.0,), scale=(1.0,))
    with pytest.raises(PreprocessingError, match="mode must be one of"):
        FluxTransform.from_dataset("unused.h5", "log")
