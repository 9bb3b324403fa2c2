"""The Keras extra: streaming loader, in-model preprocessing, reference example.

CI installs the `keras` extra, so these run there; the importorskip only
guards a bare install. One module-scoped training run of
examples/train_keras.py on a small synthetic demo dataset (no tiled
duplicates: rows per class < the demo block) backs the end-to-end checks.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from cutout_etl import open_dataset
from cutout_etl.demo import write_demo_files
from cutout_etl.ml.keras_support import (
    CutoutPyDataset,
    FluxPreprocessing,
    PreprocessingError,
    build_model,
    classification_report,
    load_model,
    preprocessing_from_dataset,
)
from cutout_etl.pipeline import build

from .test_hdf5_mapped import chunked_copy

pytestmark = [
    # Keras 3 (up to 3.15 at least) calls np.array(variable, copy=False) on
    # TensorFlow variables when saving; numpy 2 warns. Not ours to fix.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_keras.py"
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_preprocessing.py"
ROWS_PER_CLASS = 400
EPOCHS = 6


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    """Demo data, 400 rows per class (840 train, 180 val, 180 test), seed 3."""
    tmp = tmp_path_factory.mktemp("keras")
    build(write_demo_files(tmp / "raw", rows=ROWS_PER_CLASS, seed=3), tmp / "dataset.h5")
    return tmp / "dataset.h5"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_keras_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(example, dataset_path, tmp_path_factory):
    """(model before saving, metrics, output dir) of one short example run."""
    out = tmp_path_factory.mktemp("run")
    model, metrics = example.run(
        [str(dataset_path), "--epochs", str(EPOCHS), "--batch-size", "64", "--out", str(out), "--seed", "1"]
    )
    return model, metrics, out


def _images(path: Path, split: str = "test", stop: int = 96) -> np.ndarray:
    with open_dataset(path) as ds:
        return np.ascontiguousarray(ds[split].read(0, stop)["image"])


def _preprocessing_output(model, images: np.ndarray) -> np.ndarray:
    layer = model.get_layer("flux_preprocessing")
    return keras.ops.convert_to_numpy(layer(images))


# ------------------------------------------------------------------ end to end


def test_example_writes_outputs_and_beats_majority(trained):
    _, metrics, out = trained
    for name in ("metrics.json", "model.keras", "history.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    written = json.loads((out / "metrics.json").read_text())
    test = written["test"]
    assert test == metrics["test"]
    assert test["n"] == 3 * 60
    assert test["confusion_matrix"]["classes"] == ["GALAXY", "QSO", "STAR"]
    assert np.sum(test["confusion_matrix"]["counts"]) == test["n"]
    assert set(test["per_class"]) == {"GALAXY", "QSO", "STAR"}
    assert 1 <= written["training"]["epochs_run"] <= EPOCHS
    # Balanced classes: majority rate 1/3. A working pipeline separates the
    # synthetic classes (colour and morphology); broken flux handling does not.
    assert test["majority_rate"] == pytest.approx(1 / 3)
    assert test["accuracy"] >= 0.8, test
    assert test["macro_f1"] >= 0.75, test


def test_saved_model_reloads_in_safe_mode_with_same_predictions(trained, dataset_path):
    model, _, out = trained
    reloaded = keras.saving.load_model(out / "model.keras", safe_mode=True)
    images = _images(dataset_path)
    before = model.predict(images, verbose=0)
    after = reloaded.predict(images, verbose=0)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    assert reloaded.get_layer("flux_preprocessing").get_config() == model.get_layer("flux_preprocessing").get_config()


def test_model_preprocessing_equals_formula_with_stored_stats(trained, dataset_path):
    _, _, out = trained
    model = load_model(out / "model.keras")
    images = _images(dataset_path)
    images[0, 0, 0, 0] = np.nan
    images[1, 5, 5, 2] = np.inf
    images[2, 7, 3, 1] = -np.inf
    with open_dataset(dataset_path) as ds:
        bands = [ds.stats["bands"][b] for b in ds.bands]
    assert all(b["transform"]["k"] == 3.0 for b in bands)
    m = np.array([b["sky_median"]["p50"] for b in bands])
    sigma = np.array([b["sky_sigma"]["p50"] for b in bands])
    with np.errstate(invalid="ignore"):
        expected = np.arcsinh((images.astype(np.float64) - m) / (3.0 * sigma))
    expected[~np.isfinite(expected)] = 0.0
    got = _preprocessing_output(model, images)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[0, 0, 0, 0] == 0 and got[1, 5, 5, 2] == 0 and got[2, 7, 3, 1] == 0
    # Not a no-op and not squashed: sky pixels spread over ~+-1, sources reach several units.
    assert 0.2 < np.std(got[:, :4]) < 1.0
    assert got.max() > 4


def test_brighter_sky_changes_model_input(trained, dataset_path):
    """x10 every image (a brighter sky, same objects): absolute flux must reach the network."""
    model, _, _ = trained
    images = _images(dataset_path)
    plain, bright = _preprocessing_output(model, images), _preprocessing_output(model, 10 * images)
    assert np.mean(np.abs(bright - plain)) > 0.3
    # Sky-noise pixels (top rows) leave the linear part of asinh: ~0.5 -> ~1.8 wide.
    assert np.std(bright[:, :4]) > 3 * np.std(plain[:, :4])
    predictions = model.predict(images, verbose=0), model.predict(10 * images, verbose=0)
    assert not np.allclose(*predictions, atol=1e-3)


def test_preprocessing_maps_each_pixel_by_its_band_only(dataset_path):
    """No per-image rescaling (what users did before, which hides absolute flux): one bright pixel
    changes no other pixel's input, nor does the rest of the batch; only the flux itself does."""
    layer = preprocessing_from_dataset(dataset_path)
    images = _images(dataset_path, stop=8)
    flared = images.copy()
    flared[:, 0, 0, :] = 100 * np.abs(images).max()
    plain, with_flare = (keras.ops.convert_to_numpy(layer(x)) for x in (images, flared))
    np.testing.assert_allclose(with_flare[:, 1:], plain[:, 1:], rtol=1e-6, atol=0)
    np.testing.assert_allclose(with_flare[:, 0, 1:], plain[:, 0, 1:], rtol=1e-6, atol=0)
    assert (with_flare[:, 0, 0] > plain[:, 0, 0] + 1).all()
    alone = keras.ops.convert_to_numpy(layer(images[3:4]))
    np.testing.assert_allclose(alone, plain[3:4], rtol=1e-6, atol=0)
    brighter = keras.ops.convert_to_numpy(layer(10 * images))
    assert np.mean(np.abs(brighter - plain)) > 0.3


# ------------------------------------------------------------------ loader


def test_loader_epoch_covers_every_row_once_in_contiguous_blocks(dataset_path):
    with open_dataset(dataset_path) as ds:
        rows = ds["train"].read()
    loader = CutoutPyDataset(dataset_path, "train", batch_size=100, seed=7)
    assert loader.shuffle and len(loader) == math.ceil(len(rows) / 100)
    seen = []
    for i in range(len(loader)):
        images, labels = loader[i]
        which = loader.rows_of(i)
        assert images.dtype == np.float32 and images.flags.c_contiguous and labels.dtype == np.int64
        np.testing.assert_array_equal(images, rows["image"][which])
        np.testing.assert_array_equal(labels, rows["label"][which])
        assert np.all(np.diff(which) % len(rows) == 1)  # contiguous, modulo the wrap-around
        seen.append(which)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(len(rows)))
    # Each block holds the classes in proportion (stored interleaved).
    assert all(
        np.bincount(loader[i][1], minlength=3).min() >= 30 for i in range(len(loader)) if len(loader.rows_of(i)) == 100
    )


def test_loader_shuffle_is_per_epoch_and_seeded(dataset_path):
    def order(seed: int, epoch: int) -> list[int]:
        loader = CutoutPyDataset(dataset_path, "train", batch_size=64, seed=seed)
        loader.set_epoch(epoch)
        return [int(loader.rows_of(i)[0]) for i in range(len(loader))]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) != order(2, 1)
    loader = CutoutPyDataset(dataset_path, "train", batch_size=64, seed=1)
    loader.on_epoch_end()
    assert loader.epoch == 1 and [int(loader.rows_of(i)[0]) for i in range(len(loader))] == order(1, 1)
    stored = CutoutPyDataset(dataset_path, "val", batch_size=64)
    assert not stored.shuffle
    np.testing.assert_array_equal(
        np.concatenate([stored.rows_of(i) for i in range(len(stored))]), np.arange(stored.rows)
    )


def test_loader_augments_exactly_like_streaming_batches(dataset_path):
    from cutout_etl.streaming import StreamingBatches

    plain = CutoutPyDataset(dataset_path, "train", batch_size=64, seed=5)
    augmented = CutoutPyDataset(dataset_path, "train", batch_size=64, seed=5, augment=True)
    streaming = StreamingBatches(dataset_path, "train", batch_size=64, seed=5, augment=True)
    for loader in (plain, augmented):
        loader.set_epoch(2)
    moved = 0
    for i, (expected_x, expected_y) in enumerate(streaming.iter_epoch(2)):
        (x, y), (ax, ay) = plain[i], augmented[i]
        np.testing.assert_array_equal(ax, expected_x)  # the same draw from (seed, epoch, block)
        np.testing.assert_array_equal(ay, y)
        np.testing.assert_array_equal(np.sort(x.reshape(len(x), -1)), np.sort(ax.reshape(len(ax), -1)))
        moved += int(np.sum(np.any(x != ax, axis=(1, 2, 3))))
    assert moved > 0  # something was turned or flipped; each image keeps its pixel values


def test_example_and_benchmark_defaults_are_the_documented_training(example):
    """The example's defaults and the benchmark's are one configuration: the one the README measured."""
    from cutout_etl.ml.keras_support import TRAINING_DEFAULTS, training_callbacks

    bench_spec = importlib.util.spec_from_file_location("bench_preprocessing", BENCHMARK)
    bench = importlib.util.module_from_spec(bench_spec)
    bench_spec.loader.exec_module(bench)
    example_args, bench_args = example.parse_args(["x.h5"]), bench.parse_args([])
    for key, value in TRAINING_DEFAULTS.items():
        assert getattr(example_args, key) == getattr(bench_args, key) == value, key
    assert example_args.preprocessing == "asinh" and not example_args.no_apertures and not bench_args.no_apertures
    assert TRAINING_DEFAULTS["epochs"] >= 100 and TRAINING_DEFAULTS["patience"] >= 10  # trained to convergence
    stop, *schedule = training_callbacks(12, "plateau")
    assert isinstance(stop, keras.callbacks.EarlyStopping) and stop.patience == 12 and stop.restore_best_weights
    assert isinstance(schedule[0], keras.callbacks.ReduceLROnPlateau) and schedule[0].patience == 4
    assert len(training_callbacks(12, "constant")) == 1
    with pytest.raises(ValueError, match="lr_schedule"):
        training_callbacks(12, "cosine")


def test_loader_pickles_and_matches_h5py_fallback(dataset_path, tmp_path):
    loader = CutoutPyDataset(dataset_path, "test", batch_size=50, shuffle=True, seed=4)
    loader[0]
    copy = pickle.loads(pickle.dumps(loader))
    chunked_copy(dataset_path, tmp_path / "chunked.h5")  # read through h5py, not the memory map
    fallback = CutoutPyDataset(tmp_path / "chunked.h5", "test", batch_size=50, shuffle=True, seed=4)
    for i in range(len(loader)):
        for other in (copy, fallback):
            a, b = loader[i], other[i]
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    loader.close()
    assert loader[0][0].shape[0] == 50


def test_loader_reads_parquet_like_hdf5(dataset_path, tmp_path):
    from cutout_etl.pipeline import convert

    convert(dataset_path, tmp_path / "dataset.parquet")
    hdf5 = CutoutPyDataset(dataset_path, "train", batch_size=128, seed=2)
    parquet = CutoutPyDataset(tmp_path / "dataset.parquet", "train", batch_size=128, seed=2)
    with open_dataset(dataset_path) as ds:
        assert ds["train"]._table.layout is not None  # HDF5 through its memory map
    for i in range(len(hdf5)):
        np.testing.assert_array_equal(hdf5[i][0], parquet[i][0])
        np.testing.assert_array_equal(hdf5[i][1], parquet[i][1])
    np.testing.assert_array_equal(hdf5.labels(), parquet.labels())


class _RecordingLoader(CutoutPyDataset):
    """Records which rows each batch served, under the epoch it was served in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served: dict[int, list[np.ndarray]] = {}

    def __getitem__(self, index):
        images, labels = super().__getitem__(index)
        self.served.setdefault(self.epoch, []).append(self.rows_of(index))
        return images, labels


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_sees_every_row_once_per_epoch_in_a_new_order(dataset_path, workers):
    """Keras prefetching (and worker threads) must not mix two epochs' block orders."""
    loader = _RecordingLoader(dataset_path, "val", batch_size=32, shuffle=True, seed=0, workers=workers)
    inputs = keras.Input((36, 36, 4))
    x = keras.layers.GlobalAveragePooling2D()(preprocessing_from_dataset(dataset_path)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(loader, epochs=3, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # Keras calls on_epoch_end once before the first epoch (fit resets its
    # iterator), so the three training epochs are the last three recorded.
    epochs = sorted(loader.served)[-3:]
    assert epochs == list(range(loader.epoch - 3, loader.epoch))
    orders = []
    for epoch in epochs:
        rows = np.concatenate(loader.served[epoch])
        np.testing.assert_array_equal(np.sort(rows), np.arange(loader.rows))
        orders.append(rows.tolist())
    assert orders[0] != orders[1] != orders[2]


def test_loader_rejects_bad_arguments(dataset_path):
    with pytest.raises(KeyError, match="no split 'nope'"):
        CutoutPyDataset(dataset_path, "nope")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        CutoutPyDataset(dataset_path, "train", batch_size=0)
    loader = CutoutPyDataset(dataset_path, "val", batch_size=64)
    with pytest.raises(IndexError):
        loader[len(loader)]


# ------------------------------------------------------------------ preprocessing layer


def test_layer_round_trips_in_safe_mode_and_stays_float32(dataset_path, tmp_path):
    layer = preprocessing_from_dataset(dataset_path)
    model = keras.Sequential([keras.Input((36, 36, 4)), layer])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    images = _images(dataset_path, stop=8)
    np.testing.assert_array_equal(again.predict(images, verbose=0), model.predict(images, verbose=0))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        assert FluxPreprocessing.from_config(layer.get_config()).compute_dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_robust_and_none_modes(dataset_path):
    with open_dataset(dataset_path) as ds:
        bands = [ds.stats["bands"][b] for b in ds.bands]
    images = _images(dataset_path, stop=16)
    images[0, 0, 0] = np.nan
    robust = keras.ops.convert_to_numpy(preprocessing_from_dataset(dataset_path, "robust", clip=50.0)(images))
    median = np.array([b["quantiles"]["p50"] for b in bands])
    mad = np.array([b["mad_sigma"] for b in bands])
    with np.errstate(invalid="ignore"):
        expected = np.clip((images.astype(np.float64) - median) / mad, -50, 50)
    expected[~np.isfinite(expected)] = 0.0
    np.testing.assert_allclose(robust, expected, rtol=1e-5, atol=1e-5)
    assert robust.max() == 50.0
    # none: no per-band transform, one global scale (the median of the bands' sky noise), so the network can learn
    linear = keras.ops.convert_to_numpy(preprocessing_from_dataset(dataset_path, "none")(images))
    scale = np.float32(np.median([b["sky_sigma"]["p50"] for b in bands]))
    np.testing.assert_array_equal(linear, np.nan_to_num(images / scale, nan=0.0))
    assert 0.5 < np.median(np.abs(linear)) < 50  # of order one, not 1e-12


def test_missing_or_zero_scale_is_an_error_not_an_epsilon(dataset_path):
    ds = open_dataset(dataset_path)
    try:
        ds.metadata["stats"]["bands"]["g"]["transform"]["scale"] = None
        with pytest.raises(
            PreprocessingError, match=r"band 'g': cannot build the asinh transform.*not replaced by an epsilon"
        ):
            preprocessing_from_dataset(ds)
        ds.metadata["stats"]["bands"]["r"]["mad_sigma"] = 0.0
        with pytest.raises(PreprocessingError, match=r"band 'r': cannot build the robust transform: mad_sigma = 0.0"):
            preprocessing_from_dataset(ds, "robust")
        ds.metadata["stats"]["split"] = "val"
        with pytest.raises(PreprocessingError, match="statistics come from split 'val', expected 'train'"):
            preprocessing_from_dataset(ds)
        del ds.metadata["stats"]
        with pytest.raises(PreprocessingError, match="no statistics stored"):
            preprocessing_from_dataset(ds)
    finally:
        ds.close()
    with pytest.raises(ValueError, match=r"band u: scale must be finite and > 0 \(got 0.0\)"):
        FluxPreprocessing("asinh", offset=[0.0] * 4, scale=[0.0, 1e-12, 1e-12, 1e-12], bands="ugri")
    with pytest.raises(ValueError, match="mode must be one of asinh, robust, none"):
        FluxPreprocessing("minmax")


# ------------------------------------------------------------------ metrics


def test_classification_report_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 3, 500))  # class 3 never predicted
    report = classification_report(y_true, y_pred, ["A", "B", "C", "D"])
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0
    )
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))
    for i, name in enumerate("ABCD"):
        row = report["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    assert report["confusion_matrix"]["counts"] == metrics.confusion_matrix(y_true, y_pred).tolist()


def test_mask_channel_marks_invalid_pixels_and_survives_saving(dataset_path, tmp_path):
    images = _images(dataset_path, stop=4)
    images[0, 3, 5, 1] = np.nan
    images[2, 0, 0, 3] = -np.inf
    layer = preprocessing_from_dataset(dataset_path, "asinh", mask_channel=True)
    out = keras.ops.convert_to_numpy(layer(images))
    assert out.shape == (*images.shape[:-1], images.shape[-1] + 1)
    expected_mask = np.zeros(images.shape[:-1], np.float32)
    expected_mask[0, 3, 5] = expected_mask[2, 0, 0] = 1.0
    np.testing.assert_array_equal(out[..., -1], expected_mask)
    plain = keras.ops.convert_to_numpy(preprocessing_from_dataset(dataset_path, "asinh")(images))
    np.testing.assert_array_equal(out[..., :-1], plain)
    with open_dataset(dataset_path) as ds:
        model = build_model(layer, ds.image_shape, len(ds.classes))
    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("flux_preprocessing").mask_channel
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)
