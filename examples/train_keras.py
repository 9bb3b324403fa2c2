"""Train the reference CNN on a cutout-etl dataset and evaluate it on the test split.

    python examples/train_keras.py demo/dataset.h5 --epochs 20 --out runs/demo

Needs ``pip install 'cutout-etl[keras,plot]'``. Streams the train and val
splits with `CutoutPyDataset`, normalises inside the model with the stored
training statistics (`FluxPreprocessing`, asinh by default), gives the model
central aperture fluxes and colours measured from the raw flux beside its
convolutions (`ApertureFluxes`; ``--no-apertures`` turns them off), weights classes
by their stored counts, stops early on the val loss (keeping the best
weights), saves ``model.keras``, reloads it in safe mode and evaluates the
reloaded model on the test split. Writes to ``--out``: ``metrics.json``
(accuracy, macro-F1, per-class precision/recall/F1, confusion matrix with
class names, training history), ``model.keras``, ``history.png`` and
``confusion.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

# Before TensorFlow is first imported (by keras): no C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from cutout_etl import __version__, open_dataset
from cutout_etl.ml.keras_support import (
    LR_SCHEDULES,
    MODES,
    TRAINING_DEFAULTS,
    CutoutPyDataset,
    build_model,
    class_weights,
    classification_report,
    load_model,
    predict_split,
    preprocessing_from_dataset,
    training_callbacks,
)
from cutout_etl.ml.photometry import DEFAULT_RADII


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a dataset written by `cutout-etl build`")
    parser.add_argument(
        "--epochs",
        type=int,
        default=TRAINING_DEFAULTS["epochs"],
        help="maximum epochs (early stopping ends sooner; %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument("--out", type=Path, default=Path("keras_run"), help="output directory (default keras_run)")
    parser.add_argument("--seed", type=int, default=0, help="weights, dropout and batch order (default 0)")
    parser.add_argument(
        "--patience",
        type=int,
        default=TRAINING_DEFAULTS["patience"],
        help="epochs without val-loss improvement before stopping (default %(default)s)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=TRAINING_DEFAULTS["lr_schedule"],
        help="plateau: halve the rate after patience/3 epochs without val-loss improvement (default %(default)s)",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=TRAINING_DEFAULTS["augment"],
        help="train on random exact flips and 90-degree rotations (default on)",
    )
    parser.add_argument("--preprocessing", choices=MODES, default="asinh", help="flux transform (default asinh)")
    parser.add_argument(
        "--mask-channel", action="store_true", help="add a channel marking NaN/inf input pixels (filled with 0)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument(
        "--no-apertures", action="store_true", help="the CNN alone, without its central aperture-flux input"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train, save, reload in safe mode, evaluate; print and return the metrics."""
    return run(argv)[1]


def run(argv: list[str] | None = None) -> tuple[keras.Model, dict]:
    """As `main`, also returning the trained model as it was before saving."""
    args = parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after training
        raise SystemExit(
            "train_keras.py draws history.png and confusion.png with matplotlib: pip install 'cutout-etl[plot]'"
        )
    keras.utils.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(args.dataset)
    train = CutoutPyDataset(ds, "train", args.batch_size, shuffle=True, seed=args.seed, augment=args.augment)
    val = CutoutPyDataset(ds, "val", args.batch_size, shuffle=False)
    test = CutoutPyDataset(ds, "test", args.batch_size, shuffle=False)

    model = build_model(
        preprocessing_from_dataset(ds, args.preprocessing, mask_channel=args.mask_channel),
        ds.image_shape,
        len(ds.classes),
        apertures=None if args.no_apertures else DEFAULT_RADII,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    weights = class_weights(ds)
    callbacks = training_callbacks(args.patience, args.lr_schedule)
    stop = callbacks[0]  # the early stopping: which epoch's weights were kept
    started = time.perf_counter()
    # shuffle=False: the loader shuffles its row blocks from --seed itself.
    history = model.fit(
        train,
        validation_data=val,
        epochs=args.epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,
        verbose=2,
    )
    train_seconds = time.perf_counter() - started

    model_path = args.out / "model.keras"
    model.save(model_path)
    reloaded = load_model(model_path)  # safe mode: no code runs from the file
    y_true, probabilities = predict_split(reloaded, test)
    report = classification_report(y_true, probabilities.argmax(axis=1), ds.classes)

    epochs_run = len(history.history["loss"])
    metrics = {
        "dataset": str(args.dataset),
        "split_rows": {split: len(ds[split]) for split in ds.splits},
        "test": report,
        "training": {
            "epochs_run": epochs_run,
            "best_epoch": int(stop.best_epoch) + 1 if stop.best is not None and epochs_run else epochs_run,
            "seconds": round(train_seconds, 2),
            "batch_size": args.batch_size,
            "seed": args.seed,
            "learning_rate": args.learning_rate,
            "lr_schedule": args.lr_schedule,
            "augment": args.augment,
            "class_weight": {ds.classes[k]: v for k, v in weights.items()},
            "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        },
        "preprocessing": model.get_layer("flux_preprocessing").get_config(),
        "versions": {"cutout_etl": __version__, "keras": keras.__version__, "backend": keras.backend.backend()},
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_history(metrics["training"]["history"], metrics["training"]["best_epoch"], args.out / "history.png")
    plot_confusion(report, args.out / "confusion.png")
    print(summary(report, args.out), file=sys.stdout)
    ds.close()
    return model, metrics


def summary(report: dict, out: Path) -> str:
    lines = [
        (
            f"test: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} "
            f"(n = {report['n']}; majority-class rate {report['majority_rate']:.4f})"
        ),
        f"{'class':>10} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for name, row in report["per_class"].items():
        lines.append(f"{name:>10} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} {row['support']:8d}")
    matrix = report["confusion_matrix"]
    lines.append("confusion (rows true, columns predicted): " + " ".join(matrix["classes"]))
    for name, counts in zip(matrix["classes"], matrix["counts"]):
        lines.append(f"{name:>10} " + " ".join(f"{c:6d}" for c in counts))
    lines.append(f"wrote {out}/metrics.json, model.keras, history.png, confusion.png")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: dict, best_epoch: int, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="val")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(report: dict, path: Path) -> None:
    plt = _pyplot()
    matrix = report["confusion_matrix"]
    names, counts = matrix["classes"], matrix["counts"]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 1.3 * len(names) + 1.5))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in counts) if counts else 0
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_title(f"test accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
