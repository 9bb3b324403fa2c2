"""Which preprocessing serves classification: the reference CNN trained with each, against aperture photometry.

    python benchmarks/bench_preprocessing.py [--rows 2000] [--epochs 150] [--patience 12] [--seeds 0 1 2]
        [--methods asinh robust seed seed-noeps minmax none photometry] [--no-augment] [--softening K]
        [--lr-schedule constant|plateau] [--tta] [--no-apertures] [--data-seed 0] [--workdir DIR] [--keep]
        [--json PATH] [--quick]

Writes the hard synthetic preset (``cutout-etl demo-data --preset kids``, --rows per class), builds it
(``cutout-etl build``: split 70/15/15, train-only statistics), loads the splits into memory (the benchmark's
sizes fit; the tool itself streams) and, for every method and seed, trains the same reference CNN
(`cutout_etl.ml.model.build_model`, Adam 1e-3, batch 128, class weights, the 8 exact flips and 90-degree
rotations, up to 150 epochs with early stopping on the val loss after 12 without improvement keeping the best
weights: `cutout_etl.ml.model.TRAINING_DEFAULTS`, the defaults of ``examples/train_keras.py`` too; for ``asinh``,
``robust`` and ``none`` with its central aperture-flux input unless ``--no-apertures``) and evaluates it on
the test split (``--tta``: also averaged over the 8 flips and rotations of each test image, as ``method+tta``):

* ``asinh``: the default `FluxPreprocessing`, asinh((x - m_b) / (k sigma_b)) from the stored statistics
  (``--softening K`` replaces the stored k);
* ``robust``: clip((x - median_b) / MAD-sigma_b, +-1000) from the stored statistics;
* ``seed``: what the seed notebook does, per image and band ``clip((x - p2) / (p98 - p2 + 1e-8), 0, 1)``
  with p2, p98 that image's 2nd and 98th percentiles in that band;
* ``seed-noeps``: the same without the 1e-8 epsilon;
* ``minmax``: per image and band ``(x - min) / (max - min)``;
* ``none``: `FluxPreprocessing` mode none: no per-band transform, the flux divided by one global constant
  (the median over bands of the stored sky noise);
* ``raw``: raw flux (pixels ~1e-12) into the network (what ``none`` was before it had a global scale);
* ``photometry``: no CNN: scikit-learn's ``HistGradientBoostingClassifier`` on aperture photometry measured
  from the same images (per band: sky from the outer 4-pixel frame, sky-subtracted fluxes in circular
  apertures of radius 2, 3, 5 and 8 px, as asinh magnitudes; colours; concentration ratios). Needs
  ``pip install 'cutout-etl[bench]'``.

Prints per method: macro-F1 mean and spread (sample standard deviation over seeds), per-class recall, and
test accuracy by r-band magnitude bin (r from the sky-subtracted 5 px aperture flux, so the bins are what a
survey would measure, the same for every method); then the paired macro-F1 difference of each method
against ``asinh`` and against ``photometry`` over the seeds. ``--quick`` (a few rows, one epoch, one seed) only checks that everything
runs: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from cutout_etl import open_dataset
from cutout_etl.ml.keras_support import build_model, classification_report, preprocessing_from_dataset
from cutout_etl.ml.model import LR_SCHEDULES, TRAINING_DEFAULTS, training_callbacks
from cutout_etl.ml.photometry import DEFAULT_RADII
from cutout_etl.ml.preprocessing import FluxPreprocessing

CNN_METHODS = ("asinh", "robust", "seed", "seed-noeps", "minmax", "none", "raw")
METHODS = (*CNN_METHODS, "photometry")
R_BINS = (19.0, 20.0, 21.0, 22.0)  # edges: < 19, 19-20, 20-21, 21-22, >= 22
APERTURES_PX = (2.0, 3.0, 5.0, 8.0)
BORDER = 4
CLI = Path(sys.executable).parent / "cutout-etl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per class of the kids preset (default 2000)")
    parser.add_argument("--epochs", type=int, default=TRAINING_DEFAULTS["epochs"], help="maximum epochs (%(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="default: all")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=TRAINING_DEFAULTS["augment"],
        help="random exact flips and 90-degree rotations (default on)",
    )
    parser.add_argument("--softening", type=float, help="asinh softening k in sky sigmas (default: stored, 3)")
    parser.add_argument(
        "--no-apertures",
        action="store_true",
        help="the CNN without its aperture-flux input (build_model apertures=None)",
    )
    parser.add_argument(
        "--patience", type=int, default=TRAINING_DEFAULTS["patience"], help="early-stopping patience (%(default)s)"
    )
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=TRAINING_DEFAULTS["lr_schedule"],
        help="plateau: halve Adam's rate after --patience/3 epochs without val-loss improvement (%(default)s)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="also score each CNN averaged over the 8 flips/rotations (method+tta)"
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the data and dataset in --workdir")
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    parser.add_argument("--quick", action="store_true", help="30 rows per class, 1 epoch, seed 0: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.seeds = 30, 1, [0]
    return args


def make_dataset(rows: int, data_seed: int, workdir: Path) -> Path:
    """demo-data --preset kids, then build, through the CLI a user would run."""
    data, dataset = workdir / "kids", workdir / "kids.h5"
    quiet = ["--quiet", "--overwrite"]
    demo = [CLI, "demo-data", data, "--rows", str(rows), "--seed", str(data_seed), "--preset", "kids", *quiet]
    subprocess.run([str(c) for c in demo], check=True)
    subprocess.run([str(c) for c in [CLI, "build", *sorted(data.glob("*.hdf5")), "-o", dataset, *quiet]], check=True)
    return dataset


def load_splits(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    with open_dataset(path) as ds:
        splits = {name: _concat(ds[name].batches(4096)) for name in ("train", "val", "test")}
        return splits, ds.classes


def _concat(batches) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*batches)
    return np.concatenate(images), np.concatenate(labels)


# --- per-image scalings (numpy, applied before the network) ------------------


def per_image(x: np.ndarray, method: str) -> np.ndarray:
    """The per-image scalings users apply by hand, per image and band, in float32 as they would."""
    if method == "minmax":
        low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
        return (x - low) / (high - low)
    low, high = (np.percentile(x, q, axis=(1, 2), keepdims=True).astype(np.float32) for q in (2, 98))
    denominator = high - low + (np.float32(1e-8) if method == "seed" else np.float32(0))
    return np.clip((x - low) / denominator, 0, 1)


def preprocessing_layer(dataset: Path, method: str, softening: float | None) -> FluxPreprocessing:
    if method not in ("asinh", "robust", "none"):
        return FluxPreprocessing("none", name="flux_preprocessing")  # raw, or scaled before the network
    layer = preprocessing_from_dataset(dataset, method)
    if method == "asinh" and softening is not None:
        with open_dataset(dataset) as ds:
            k = [ds.stats["bands"][b]["transform"]["k"] for b in ds.bands]
        scale = [s / k_b * softening for s, k_b in zip(layer.scale, k)]
        layer = FluxPreprocessing("asinh", offset=layer.offset, scale=scale, bands=layer.bands)
    return layer


class Augmented(keras.utils.PyDataset):
    """Shuffled batches, each image turned by one of the 8 exact flips/90-degree rotations (no interpolation)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = self.x[rows]
        if self.augment:
            turns, flips = self.rng.integers(0, 4, len(x)), self.rng.random(len(x)) < 0.5
            x = np.stack([np.rot90(img[:, ::-1] if f else img, k) for img, k, f in zip(x, turns, flips)])
        return x, self.y[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def train_cnn(dataset: Path, splits: dict, classes: list[str], method: str, seed: int, args) -> tuple[dict, int]:
    keras.backend.clear_session()  # a fresh graph per run: no retracing across models
    keras.utils.set_random_seed(seed)
    x = {name: split[0] for name, split in splits.items()}
    if method in ("seed", "seed-noeps", "minmax"):
        x = {name: per_image(images, method) for name, images in x.items()}
    y = {name: split[1] for name, split in splits.items()}
    # the aperture fluxes need the stored constants: not for the per-image scalings and raw flux
    apertures = None if args.no_apertures or method not in ("asinh", "robust", "none") else DEFAULT_RADII
    layer = preprocessing_layer(dataset, method, args.softening)
    model = build_model(layer, x["train"].shape[1:], len(classes), apertures=apertures)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    counts = np.bincount(y["train"], minlength=len(classes))
    weights = {c: len(y["train"]) / (len(classes) * n) if n else 0.0 for c, n in enumerate(counts)}
    history = model.fit(
        Augmented(x["train"], y["train"], 128, seed, args.augment),
        validation_data=(x["val"], y["val"]),
        epochs=args.epochs,
        class_weight=weights,
        callbacks=training_callbacks(args.patience, args.lr_schedule),
        verbose=0,
    )
    result = {"predicted": model.predict(x["test"], batch_size=512, verbose=0).argmax(axis=1)}
    if args.tta:
        result["predicted_tta"] = symmetric_probabilities(model, x["test"]).argmax(axis=1)
    return result, len(history.history["loss"])


def symmetric_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities averaged over the 8 exact flips and 90-degree rotations of each image."""
    total = 0.0
    for flip in (False, True):
        for turns in range(4):
            moved = np.rot90(images[:, :, ::-1] if flip else images, turns, axes=(1, 2))
            total = total + model.predict(np.ascontiguousarray(moved), batch_size=512, verbose=0)
    return total / 8


# --- aperture photometry -------------------------------------------------------


def aperture_fluxes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted fluxes (N, apertures, bands) in circular apertures about the centre, and sky sigma (N, bands)."""
    x = images.astype(np.float64)
    size = x.shape[1]
    frame = np.ones((size, size), bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    border = x[:, frame]  # (N, K, bands)
    sky = np.median(border, axis=1)
    sigma = 1.4826 * np.median(np.abs(border - sky[:, None]), axis=1)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(yy, xx)
    fluxes = np.stack(
        [((x - sky[:, None, None]) * (radius <= r)[None, :, :, None]).sum(axis=(1, 2)) for r in APERTURES_PX], 1
    )
    return fluxes, sigma


def r_magnitude(images: np.ndarray, bands: list[str]) -> np.ndarray:
    """r from the 5 px aperture (AB, zero point 0); NaN where the flux is not positive."""
    flux = aperture_fluxes(images)[0][:, APERTURES_PX.index(5.0), bands.index("r")]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def photometry_features(images: np.ndarray) -> np.ndarray:
    """asinh magnitudes per aperture and band, colours between adjacent bands, concentration per band."""
    fluxes, sigma = aperture_fluxes(images)
    softening = np.median(sigma, axis=0) * 10  # one constant per band, so the features keep colour
    mags = np.arcsinh(fluxes / softening[None, None, :])
    colours = mags[:, :, :-1] - mags[:, :, 1:]
    concentration = mags[:, 0, :] - mags[:, -1, :]
    return np.concatenate([mags.reshape(len(images), -1), colours.reshape(len(images), -1), concentration], axis=1)


def train_photometry(splits: dict, seed: int) -> tuple[dict, int]:
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        raise SystemExit("the photometry baseline needs scikit-learn: pip install 'cutout-etl[bench]'") from None
    features = {name: photometry_features(split[0]) for name, split in splits.items()}
    model = HistGradientBoostingClassifier(max_iter=500, learning_rate=0.05, early_stopping=True, random_state=seed)
    model.fit(features["train"], splits["train"][1])
    return {"predicted": model.predict(features["test"])}, int(model.n_iter_)


# --- report ----------------------------------------------------------------------


def evaluate(predicted: np.ndarray, y_test: np.ndarray, r_test: np.ndarray, classes: list[str]) -> dict:
    report = classification_report(y_test, predicted, classes)
    which = np.digitize(np.nan_to_num(r_test, nan=99.0), R_BINS)
    by_bin = {
        label: float(np.mean(predicted[which == i] == y_test[which == i])) if np.any(which == i) else None
        for i, label in enumerate(bin_labels())
    }
    return {
        "macro_f1": report["macro_f1"],
        "accuracy": report["accuracy"],
        "recall": {name: row["recall"] for name, row in report["per_class"].items()},
        "accuracy_by_r": by_bin,
        "confusion": report["confusion_matrix"]["counts"],
    }


def bin_labels() -> list[str]:
    edges = [f"{e:g}" for e in R_BINS]
    return [f"r<{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)), f"r>={edges[-1]}"]


def summarise(runs: dict[str, list[dict]], classes: list[str], n_bins: dict[str, int]) -> str:
    head = f"{'method':<11} {'macro-F1':>8} {'spread':>6} " + " ".join(f"{'rec ' + c[:4]:>8}" for c in classes)
    head += " " + " ".join(f"{label:>7}" for label in bin_labels()) + "  epochs"
    lines = [head, " " * 27 + " " * 9 * len(classes) + " ".join(f"{'n=' + str(n_bins[b]):>7}" for b in bin_labels())]
    for method, results in runs.items():
        f1 = [r["macro_f1"] for r in results]
        spread = statistics.stdev(f1) if len(f1) > 1 else float("nan")
        recall = " ".join(f"{statistics.fmean(r['recall'][c] for r in results):8.3f}" for c in classes)
        by_r = " ".join(_mean_or_dash([r["accuracy_by_r"][b] for r in results]) for b in bin_labels())
        epochs = ",".join(str(r["iterations"]) for r in results)
        lines.append(f"{method:<11} {statistics.fmean(f1):8.3f} {spread:6.3f} {recall} {by_r}  {epochs}")
    for base in ("asinh", "photometry"):
        if base in runs:
            lines.extend(_paired(runs, base))
    return "\n".join(lines)


def _paired(runs: dict[str, list[dict]], base: str) -> list[str]:
    lines = [f"paired macro-F1 difference against {base} (mean over seeds, sample std):"]
    reference = [r["macro_f1"] for r in runs[base]]
    for method, results in runs.items():
        if method != base and len(results) == len(reference):
            diff = [r["macro_f1"] - b for r, b in zip(results, reference)]
            spread = statistics.stdev(diff) if len(diff) > 1 else float("nan")
            lines.append(f"  {method:<11} {statistics.fmean(diff):+.3f} (sd {spread:.3f}, n {len(diff)})")
    return lines


def _mean_or_dash(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values):7.3f}" if values else f"{'-':>7}"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_preprocessing_") as tmp:
        workdir = Path(tmp) if not args.keep or args.workdir is None else args.workdir
        dataset = make_dataset(args.rows, args.data_seed, workdir)
        splits, classes = load_splits(dataset)
        r_test = r_magnitude(splits["test"][0], ["u", "g", "r", "i"])
        runs: dict[str, list[dict]] = {}
        for method in args.methods:
            for seed in args.seeds:
                started = time.perf_counter()
                if method == "photometry":
                    result, iterations = train_photometry(splits, seed)
                else:
                    result, iterations = train_cnn(dataset, splits, classes, method, seed, args)
                seconds = round(time.perf_counter() - started, 1)
                for suffix, predicted in (("", result["predicted"]), ("+tta", result.get("predicted_tta"))):
                    if predicted is not None:
                        entry = evaluate(predicted, splits["test"][1], r_test, classes)
                        entry.update(seed=seed, iterations=iterations, seconds=seconds)
                        runs.setdefault(method + suffix, []).append(entry)
                        print(
                            f"{method + suffix} seed {seed}: macro-F1 {entry['macro_f1']:.3f} ({seconds} s)", flush=True
                        )
                figures = report(args, splits, r_test, runs)  # after every run: a stopped run keeps its numbers
    print(summarise(runs, classes, figures["test_rows_by_r"]))
    return figures


def report(args: argparse.Namespace, splits: dict, r_test: np.ndarray, runs: dict[str, list[dict]]) -> dict:
    """Every number so far, written to ``--json`` if given."""
    which = np.digitize(np.nan_to_num(r_test, nan=99.0), R_BINS)
    figures = {
        "command": " ".join(sys.argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "split_rows": {name: len(split[1]) for name, split in splits.items()},
        "test_rows_by_r": {label: int(np.sum(which == i)) for i, label in enumerate(bin_labels())},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
