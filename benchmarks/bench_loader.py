"""Benchmark every way to read a split for training against the same arrays in memory, in one run.

    python benchmarks/bench_loader.py [--rows 5000] [--batch-size 128] [--dataset PATH]
                                      [--repeats 5] [--train-steps 20] [--workdir DIR] [--json PATH]

Builds a demo dataset (N rows per class) unless --dataset (HDF5) is given, converts it to Parquet, reads
both once so that the page cache is warm (the figures are for a warm cache; a cold read is bound by the
disk), loads the train split into memory once, then measures rows/s over whole epochs of the train split:

* in memory: the Keras loader's batches (same rows, same order) sliced out of the in-memory arrays and
  copied, as an in-memory loader returning fresh arrays would (each batch kept until the next one is made,
  as the loader's loop keeps it: freeing it first let the copy reuse one hot buffer the loader cannot);
* ``open_dataset(p)["train"].batches()`` on the HDF5 file and on the Parquet directory (stored order);
* the torch ``DataLoader(open_dataset(p)["train"], batch_size, shuffle=True, num_workers=0 | 2)`` over
  the map-style split (needs torch, and a `Split` with ``len`` and ``ds[i]``: reported as unavailable,
  with the reason, where either is missing);
* the streaming iterator (`cutout_etl.streaming.StreamingBatches`, block shuffle), and its torch
  `IterableDataset` through a ``DataLoader`` with 2 workers;
* the Keras loader (`CutoutPyDataset`), as numpy batches and as backend tensors (against the in-memory
  views converted the same way), and the training step of the reference CNN (``train_on_batch``).

Each rate is the median of --repeats epochs (or step runs). Rates that are compared run in the same rounds,
one epoch of each in turn, and their ratio is the median of the ratios within a round: on a shared machine
a slow spell then hits both sides. Targets (issue 16): Parquet ``batches()``
>= 0.5x HDF5 ``batches()``; Keras loader >= 0.8x in memory (numpy batches); loader >= 10x training step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from cutout_etl import open_dataset
from cutout_etl.demo import write_demo_files
from cutout_etl.pipeline import build, convert
from cutout_etl.streaming import StreamingBatches

ROWS = [  # (key, label) in the order printed
    ("memory_numpy", "in memory, same batches copied"),
    ("batches_hdf5", "batches(), HDF5"),
    ("batches_parquet", "batches(), Parquet"),
    ("torch_map_0", "torch DataLoader, map-style, 0 workers"),
    ("torch_map_2", "torch DataLoader, map-style, 2 workers"),
    ("streaming_numpy", "streaming iterator (StreamingBatches)"),
    ("streaming_torch_2", "streaming, torch DataLoader, 2 workers"),
    ("keras_numpy", "Keras loader, numpy batches"),
    ("memory_tensor", "in memory views, as backend tensors"),
    ("keras_tensor", "Keras loader, as backend tensors"),
    ("train_step", "training step (reference CNN)"),
]
RATIOS = [  # (label, numerator, denominator, target)
    ("Parquet / HDF5 batches()", "batches_parquet", "batches_hdf5", 0.5),
    ("Keras loader / in memory (numpy)", "keras_numpy", "memory_numpy", 0.8),
    ("Keras loader / in memory (tensors)", "keras_tensor", "memory_tensor", 0.8),
    ("streaming / in memory (numpy)", "streaming_numpy", "memory_numpy", 0.8),
    ("Keras loader / training step", "keras_tensor", "train_step", 10.0),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="demo rows per class when building (default 5000)")
    parser.add_argument("--dataset", type=Path, help="measure this HDF5 dataset instead of building a demo one")
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


def parquet_copy(path: Path, workdir: Path) -> Path:
    target = workdir / f"{path.stem}.parquet"
    if not target.exists():
        print(f"converting to {target} ...", file=sys.stderr)
        convert(path, target)
    return target


def warm_page_cache(path: Path) -> None:
    for file in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]:
        with open(file, "rb") as fh:
            while fh.read(1 << 24):
                pass


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def block(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows] for rows contiguous modulo len(array), as slices (a view when it does not wrap)."""
    first, count = int(rows[0]), len(rows)
    if first + count <= len(array):
        return array[first : first + count]
    return np.concatenate([array[first:], array[: first + count - len(array)]])


def drain(iterable) -> None:
    for _ in iterable:
        pass


class Bench:
    """One measurement per rate; a measurement that cannot run is recorded as unavailable, with the reason."""

    def __init__(self, path: Path, parquet: Path, batch_size: int, repeats: int) -> None:
        self.path, self.parquet, self.batch_size, self.repeats = path, parquet, batch_size, repeats
        with open_dataset(path) as ds:
            rows = ds["train"].read()
            self.images, self.labels = np.ascontiguousarray(rows["image"]), rows["label"].astype(np.int64)
        self.rows = len(self.labels)
        self.rates: dict[str, float] = {}
        self.rounds: dict[str, list[float]] = {}  # rows/s of each round, for keys measured in the same rounds
        self.unavailable: dict[str, str] = {}

    def measure(self, key: str, run: Callable[[], object], samples: int | None = None) -> None:
        self.measure_together({key: run}, samples)

    def measure_together(self, runs: dict[str, Callable[[], object]], samples: int | None = None) -> None:
        """Each round runs every one of `runs` once, so that a slow spell of the machine hits all of them."""
        samples = self.rows if samples is None else samples
        for key, run in list(runs.items()):
            try:
                run()  # warm-up: file handles, worker processes, allocator, tracing
            except Exception as exc:  # noqa: BLE001 - any failure is reported as the row's reason
                self.unavailable[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
                del runs[key]
        rounds: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(self.repeats):
            for key, run in runs.items():
                rounds[key].append(samples / seconds(run))
        self.rounds.update(rounds)
        self.rates.update({key: statistics.median(rates) for key, rates in rounds.items()})

    def ratio(self, top: str, bottom: str) -> float:
        """Median over rounds of the ratio within a round, where both ran in the same rounds; else of medians."""
        if top in self.rounds and bottom in self.rounds and len(self.rounds[top]) == len(self.rounds[bottom]):
            return statistics.median(a / b for a, b in zip(self.rounds[top], self.rounds[bottom]))
        return self.rates[top] / self.rates[bottom]

    def unavailable_all(self, keys: list[str], reason: str) -> None:
        self.unavailable.update(dict.fromkeys(keys, reason))

    def split_batches(self) -> None:
        # A fresh open per epoch: the Parquet reader keeps decoded row groups in a bounded cache, and a split
        # that fits it would otherwise be measured as a memory copy after the first epoch.
        runs = {
            "batches_hdf5": lambda: drain_fresh(self.path, self.batch_size),
            "batches_parquet": lambda: drain_fresh(self.parquet, self.batch_size),
        }
        self.measure_together(runs)

    def torch_loaders(self) -> None:
        try:
            import torch
        except ImportError as exc:
            self.unavailable_all(["torch_map_0", "torch_map_2", "streaming_torch_2"], f"torch not installed ({exc})")
            return
        from cutout_etl.streaming_torch import TorchStreamingDataset

        DataLoader = torch.utils.data.DataLoader
        for workers in (0, 2):
            ds = open_dataset(self.path)
            loader = None
            try:
                ds["train"][0]  # fails here, in this process, with the reason, where Split is not map-style
                options = {"num_workers": workers, "persistent_workers": workers > 0}
                loader = DataLoader(ds["train"], batch_size=self.batch_size, shuffle=True, **options)
                self.measure(f"torch_map_{workers}", lambda loader=loader: drain(loader))
            except Exception as exc:  # noqa: BLE001 - e.g. a Split without len/ds[i] before the map-style change
                self.unavailable[f"torch_map_{workers}"] = f"{type(exc).__name__}: {exc}"[:160]
            finally:
                del loader
                ds.close()
        streaming = TorchStreamingDataset(self.path, "train", self.batch_size, seed=0)
        workers = DataLoader(streaming, batch_size=None, num_workers=2, persistent_workers=True)
        self.measure("streaming_torch_2", lambda: drain(workers))


def drain_fresh(path: Path, batch_size: int) -> None:
    """One epoch of `batches()` over a freshly opened dataset (no decoded data carried over)."""
    with open_dataset(path) as ds:
        drain(ds["train"].batches(batch_size))


def keras_rates(bench: Bench, train_steps: int) -> dict:
    """The Keras loader against the in-memory batches, and the training step; returns what describes the run."""
    import keras

    from cutout_etl.ml.keras_support import CutoutPyDataset, build_model, preprocessing_from_dataset

    keras.utils.set_random_seed(0)
    loader = CutoutPyDataset(bench.path, "train", batch_size=bench.batch_size, shuffle=True, seed=0)
    images, labels, batches = bench.images, bench.labels, range(len(loader))

    def loader_epoch(tensors: bool = False) -> None:
        for i in batches:
            x, y = loader[i]
            if tensors:
                keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        loader.on_epoch_end()

    def memory_epoch(tensors: bool = False) -> None:
        held: list = [None]  # the last batch: alive while the next one is allocated, as with `x, y = loader[i]`
        for i in batches:
            which = loader.rows_of(i)  # the same rows as the loader's batch i
            if tensors:
                keras.ops.convert_to_tensor(block(images, which)), keras.ops.convert_to_tensor(block(labels, which))
            else:
                held[0] = block(images, which).copy(), block(labels, which).copy()
        loader.on_epoch_end()

    streaming = StreamingBatches(bench.path, "train", bench.batch_size, seed=0)
    runs = {"memory_numpy": memory_epoch, "keras_numpy": loader_epoch, "streaming_numpy": lambda: drain(streaming)}
    bench.measure_together(runs)
    bench.measure_together({"memory_tensor": lambda: memory_epoch(True), "keras_tensor": lambda: loader_epoch(True)})
    with open_dataset(bench.path) as ds:
        model = build_model(preprocessing_from_dataset(ds), ds.image_shape, len(ds.classes))
        raw_reads = getattr(ds["train"]._table, "layout", None) is not None  # HDF5 read through its memory map
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = images[: bench.batch_size], labels[: bench.batch_size]
    model.train_on_batch(x, y)  # tracing

    def train_run() -> None:
        for _ in range(train_steps):
            model.train_on_batch(x, y)

    bench.measure("train_step", train_run, samples=train_steps * len(x))
    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "raw_reads": raw_reads,
    }


def run(path: Path, parquet: Path, args: argparse.Namespace) -> dict:
    warm_page_cache(path)
    warm_page_cache(parquet)
    bench = Bench(path, parquet, args.batch_size, args.repeats)
    setup: dict = {"rows": bench.rows, "split_mb": round(bench.images.nbytes / 1e6, 1)}
    try:
        setup.update(keras_rates(bench, args.train_steps))
    except ImportError as exc:
        bench.unavailable_all(["memory_numpy", "keras_numpy", "memory_tensor", "keras_tensor", "train_step"], str(exc))
    bench.split_batches()
    bench.torch_loaders()
    setup.update(batch_size=args.batch_size, repeats=args.repeats, cpus=os.cpu_count())
    ratios = {label: bench.ratio(top, bottom) for label, top, bottom, _ in RATIOS if {top, bottom} <= set(bench.rates)}
    results = {"rates": bench.rates, "rounds": bench.rounds, "ratios_measured": ratios}
    return {**results, "unavailable": bench.unavailable, "setup": setup}


def report(results: dict) -> tuple[str, dict]:
    rates, unavailable, setup = results["rates"], results["unavailable"], results["setup"]
    head = (
        f"train split: {setup['rows']} rows ({setup['split_mb']} MB), batch {setup['batch_size']}, "
        f"median of {setup['repeats']} epochs, keras {setup.get('keras', '-')} ({setup.get('backend', '-')}), "
        f"{setup['cpus']} CPUs, raw HDF5 reads: {setup.get('raw_reads', '-')}"
    )
    lines = [head, f"{'':42} {'rows/s':>12}"]
    for key, label in ROWS:
        shown = f"{rates[key]:12,.0f}" if key in rates else f"{'unavailable':>12}  ({unavailable.get(key, '?')})"
        lines.append(f"{label:42} {shown}")
    lines += ["", f"{'ratio':42} {'measured':>9} {'target':>8}"]
    verdicts = {}
    for label, _, _, target in RATIOS:
        if label not in results["ratios_measured"]:
            verdicts[label] = {"value": None, "target": f">= {target:g}", "pass": None}
            lines.append(f"{label:42} {'-':>9} {'>= ' + format(target, 'g'):>8}  unavailable")
            continue
        value = results["ratios_measured"][label]
        verdicts[label] = {"value": round(value, 3), "target": f">= {target:g}", "pass": value >= target}
        lines.append(
            f"{label:42} {value:9.2f} {'>= ' + format(target, 'g'):>8}  {'met' if value >= target else 'MISSED'}"
        )
    return "\n".join(lines), verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        path = args.dataset if args.dataset is not None else demo_dataset(args.rows, workdir)
        results = run(path, parquet_copy(path, workdir), args)
    text, verdicts = report(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"dataset": str(path), **results, "ratios": verdicts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
