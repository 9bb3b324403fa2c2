"""Benchmark the streaming `CutoutPyDataset` against the same arrays in memory and the training step.

    python benchmarks/bench_loader.py [--rows 5000] [--batch-size 128] [--dataset PATH]
                                      [--repeats 5] [--train-steps 20] [--workdir DIR] [--json PATH]

Builds a demo dataset (N rows per class) unless --dataset is given, reads
the file once so that the page cache is warm (the figures are for a warm
cache; a cold read is bound by the disk instead), loads the train split into
memory once, then measures on the train split, in one process:

* loader: samples/s of ``loader[i]`` over whole shuffled epochs;
* in memory: the same batches (same rows, same order) sliced out of the
  in-memory arrays and copied, as an in-memory PyDataset returning fresh
  arrays would;
* both again as backend tensors (``keras.ops.convert_to_tensor``), which is
  what training consumes: there the in-memory batches are views, converted
  with one copy;
* the training step: ``train_on_batch`` of the reference CNN
  (`cutout_etl.ml.keras_support.build_model`) on in-memory batches.

Each rate is the median of --repeats runs. Targets (issue 4): loader >= 50%
of the in-memory rate, and >= 10x the training step rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from cutout_etl import open_dataset
from cutout_etl.demo import write_demo_files
from cutout_etl.ml.keras_support import CutoutPyDataset, build_model, preprocessing_from_dataset
from cutout_etl.pipeline import build


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="demo rows per class when building (default 5000)")
    parser.add_argument("--dataset", type=Path, help="measure this dataset instead of building a demo one")
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument("--repeats", type=int, default=5, help="epochs (or step runs) per measurement (default 5)")
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps per run (default 20)")
    parser.add_argument("--workdir", type=Path, help="where to build the demo dataset (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def demo_dataset(rows: int, workdir: Path) -> Path:
    path = workdir / f"bench_loader_{rows}.h5"
    if not path.exists():
        print(f"building {path} ({rows} demo rows per class) ...", file=sys.stderr)
        build(write_demo_files(workdir / f"raw_{rows}", rows=rows, seed=0), path)
    return path


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def median_rate(samples: int, run, repeats: int) -> float:
    """Median samples/s of `repeats` calls of run()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return samples / statistics.median(times)


def block(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows] for rows contiguous modulo len(array), as slices (a view when it does not wrap)."""
    first, count = int(rows[0]), len(rows)
    if first + count <= len(array):
        return array[first : first + count]
    return np.concatenate([array[first:], array[: first + count - len(array)]])


def measure(path: Path, batch_size: int, repeats: int, train_steps: int) -> dict:
    warm_page_cache(path)
    loader = CutoutPyDataset(path, "train", batch_size=batch_size, shuffle=True, seed=0)
    n = loader.rows
    with open_dataset(path) as ds:
        rows = ds["train"].read()
        images, labels = np.ascontiguousarray(rows["image"]), rows["label"].copy()
        del rows
        model = build_model(preprocessing_from_dataset(ds), ds.image_shape, len(ds.classes))
    batches = range(len(loader))

    def loader_epoch(tensors: bool = False) -> None:
        for i in batches:
            x, y = loader[i]
            if tensors:
                keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        loader.on_epoch_end()

    def memory_epoch(tensors: bool = False) -> None:
        for i in batches:
            which = loader.rows_of(i)  # the same rows as the loader's batch i
            x, y = block(images, which), block(labels, which)
            if tensors:
                keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
            else:
                x, y = x.copy(), y.copy()
        loader.on_epoch_end()

    loader_epoch()  # first touch: file descriptor, allocator
    results = {
        "loader_numpy": median_rate(n, loader_epoch, repeats),
        "memory_numpy": median_rate(n, memory_epoch, repeats),
        "loader_tensor": median_rate(n, lambda: loader_epoch(True), repeats),
        "memory_tensor": median_rate(n, lambda: memory_epoch(True), repeats),
    }

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = images[:batch_size], labels[:batch_size]
    for _ in range(3):  # tracing and warm-up
        model.train_on_batch(x, y)

    def train_run() -> None:
        for _ in range(train_steps):
            model.train_on_batch(x, y)

    results["train_step"] = median_rate(train_steps * batch_size, train_run, repeats)
    results.update(
        rows=n,
        batch_size=batch_size,
        repeats=repeats,
        split_mb=round(images.nbytes / 1e6, 1),
        raw_reads=loader.reader.layout is not None,
        keras=keras.__version__,
        backend=keras.backend.backend(),
        cpus=os.cpu_count(),
    )
    return results


def report(r: dict) -> tuple[str, dict]:
    ratios = {
        "loader / in memory (numpy batches)": (r["loader_numpy"] / r["memory_numpy"], 0.5),
        "loader / in memory (backend tensors)": (r["loader_tensor"] / r["memory_tensor"], 0.5),
        "loader / training step": (r["loader_tensor"] / r["train_step"], 10.0),
    }
    lines = [
        (
            f"train split: {r['rows']} rows ({r['split_mb']} MB), batch {r['batch_size']}, median of {r['repeats']} runs, "
            f"keras {r['keras']} ({r['backend']}), {r['cpus']} CPUs, raw preadv reads: {r['raw_reads']}"
        ),
        f"{'':38} {'samples/s':>12}",
        f"{'loader, numpy batches':38} {r['loader_numpy']:12,.0f}",
        f"{'in memory, same batches copied':38} {r['memory_numpy']:12,.0f}",
        f"{'loader, as backend tensors':38} {r['loader_tensor']:12,.0f}",
        f"{'in memory views, as backend tensors':38} {r['memory_tensor']:12,.0f}",
        f"{'training step (reference CNN)':38} {r['train_step']:12,.0f}",
        "",
        f"{'ratio':38} {'measured':>9} {'target':>8}",
    ]
    verdicts = {}
    for name, (value, target) in ratios.items():
        met = value >= target
        verdicts[name] = {"value": round(value, 3), "target": f">= {target:g}", "pass": met}
        lines.append(f"{name:38} {value:9.2f} {'>= ' + format(target, 'g'):>8}  {'met' if met else 'MISSED'}")
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.dataset is not None:
        path = args.dataset
        results = measure(path, args.batch_size, args.repeats, args.train_steps)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = args.workdir or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            path = demo_dataset(args.rows, workdir)
            results = measure(path, args.batch_size, args.repeats, args.train_steps)
    text, verdicts = report(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"dataset": str(path), "rates": results, "ratios": verdicts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
