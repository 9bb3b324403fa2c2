"""Benchmark the training statistics: GB of pixels per CPU-second of `BandStats.update` (target >= 1 per core).

    python benchmarks/bench_stats.py [--rows 12000] [--rounds 5] [--chunk-rows 512] [--json PATH]

Pixels: the demo build's cutouts (`cutout_etl.demo`, a third per class), made in memory, with a few
invalid pixels planted as real coadds have them: 2% of cutouts lose a 6-pixel strip to no coverage
(exact zeros, as at a tile edge) and 1% carry a 3x3 patch of NaN (a masked pixel group). Each round
feeds every chunk of `--chunk-rows` rows to a fresh accumulator, as `build` does for the training split,
and times it with time.process_time (CPU of every thread: `update` measures the sky in a helper
thread) and wall time. A second pass of the round times each part in the thread that runs it
(time.thread_time around the histogram, the sky, the moments with the min/max scans and the counts);
"other" is the rest of `update`. The demo tiles ~2000 objects per class, so copies of the brightest and
faintest pixels recur and about 2 chunks in 3 need the min/max scan; distinct real objects need fewer.

Each round also times the numpy floor on the same chunks: the calls no numpy version of these statistics
can skip, with nothing around them. They are the 65,536-bin histogram of every pixel (`bit_histogram`:
one `np.bincount` per band; fast-histogram was measured no faster), the sorts of every frame row and of
its lag-2 differences (the sky), and one float64 pass over the pixels (cast, sum, sum of squares: the
moments). A target above the floor's rate needs compiled code.

Prints the median and range over rounds and the target line; exits 1 if the target is missed.
`measure(rows, rounds)` returns the same figures as a dict (what `--json` writes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TARGET_GB_PER_CPU_S = 1.0
GB = 1e9
PARTS = ("histogram", "sky", "moments", "counts")


def make_pixels(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 36, 36, 4) float32 demo cutouts, a third per class, with planted zeros and NaN."""
    from cutout_etl.demo import make_class_table

    per_class = [rows // 3 + (i < rows % 3) for i in range(3)]
    images = np.concatenate(
        [np.asarray(make_class_table(c, n, seed=seed)["image"]) for c, n in zip(("GALAXY", "QSO", "STAR"), per_class)]
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    images = images[order]  # classes mixed, as in a split
    edge = rng.random(len(images)) < 0.02
    images[edge, :, -6:] = 0.0
    masked = np.flatnonzero(rng.random(len(images)) < 0.01)
    at = rng.integers(0, 33, (len(masked), 2))
    for row, (y, x) in zip(masked, at):
        images[row, y : y + 3, x : x + 3, rng.integers(0, 4)] = np.nan
    return images


@contextmanager
def _part_timers(totals: dict[str, float]) -> Iterator[None]:
    """Add each part's CPU time (in the thread that runs it) to `totals` while the block runs."""
    from cutout_etl.steps import stats

    targets: list[tuple[object, str]] = [
        (stats, "bit_histogram"),
        (stats, "chunk_sky"),
        (stats.BandStats, "_update_moments"),
        (stats.BandStats, "_update_counts"),
    ]
    originals = [getattr(owner, name) for owner, name in targets]

    def timed(part: str, function: Callable) -> Callable:
        def run(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                totals[part] += time.thread_time() - start

        return run

    for part, (owner, name), function in zip(PARTS, targets, originals):
        setattr(owner, name, timed(part, function))
    try:
        yield
    finally:
        for (owner, name), function in zip(targets, originals):
            setattr(owner, name, function)


def _one_pass(chunks: list[np.ndarray]) -> tuple[float, float]:
    from cutout_etl.steps.stats import BandStats

    acc = BandStats(n_bands=chunks[0].shape[-1])
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in chunks:
        acc.update(chunk)
    return time.process_time() - cpu, time.perf_counter() - wall


def _floor_pass(chunks: list[np.ndarray], border: int = 4) -> float:
    """CPU seconds of the numpy floor (module docstring) over `chunks`; frames are cut outside the timing."""
    from cutout_etl.steps.sketch import bit_histogram
    from cutout_etl.steps.sky_level import _border_frame
    from cutout_etl.steps.stats import _BLOCK_BYTES

    frames = [_border_frame(chunk, border) for chunk in chunks]
    differences = [frame[:, 2:] - frame[:, :-2] for frame in frames]
    width = chunks[0][0].size
    scratch = np.empty((max(1, _BLOCK_BYTES // (8 * width)), width))  # the moments' float64 block
    cpu = time.process_time()
    for chunk, frame, difference in zip(chunks, frames, differences):
        bit_histogram(chunk)
        np.sort(frame, axis=1)
        np.sort(difference, axis=1)
        flat = chunk.reshape(len(chunk), -1)
        for start in range(0, len(flat), len(scratch)):
            block = scratch[: len(flat[start : start + len(scratch)])]
            np.copyto(block, flat[start : start + len(scratch)])
            block.sum(axis=0)
            np.einsum("ij,ij->j", block, block)
    return time.process_time() - cpu


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "range": [min(values), max(values)]}


def measure(rows: int, rounds: int, chunk_rows: int = 512) -> dict:
    """Time `BandStats.update` on `rows` demo cutouts in chunks of `chunk_rows`, `rounds` times."""
    if rows < 1 or rounds < 1 or chunk_rows < 1:
        raise ValueError("rows, rounds and chunk_rows must be at least 1")
    images = make_pixels(rows)
    gigabytes = images.nbytes / GB
    chunks = [images[start : start + chunk_rows] for start in range(0, len(images), chunk_rows)]
    cpu, wall, floor, parts = [], [], [], {name: [] for name in (*PARTS, "other")}
    for _ in range(rounds):
        floor.append(_floor_pass(chunks))
        seconds, elapsed = _one_pass(chunks)
        cpu.append(seconds)
        wall.append(elapsed)
        totals = dict.fromkeys(PARTS, 0.0)
        with _part_timers(totals):
            seconds, _ = _one_pass(chunks)
        for name in PARTS:
            parts[name].append(totals[name])
        parts["other"].append(max(seconds - sum(totals.values()), 0.0))
    rate = _spread([gigabytes / s for s in cpu])
    return {
        "rows": rows,
        "chunk_rows": chunk_rows,
        "gigabytes": gigabytes,
        "rounds": [{"cpu_s": c, "wall_s": w} for c, w in zip(cpu, wall)],
        "gb_per_cpu_s": rate,
        "gb_per_wall_s": _spread([gigabytes / w for w in wall]),
        "parts_cpu_s_per_gb": {name: _spread([v / gigabytes for v in values]) for name, values in parts.items()},
        "numpy_floor_gb_per_cpu_s": _spread([gigabytes / s for s in floor]),
        "cost_over_floor": _spread([c / f for c, f in zip(cpu, floor)]),
        "target": TARGET_GB_PER_CPU_S,
        "pass": rate["median"] >= TARGET_GB_PER_CPU_S,
    }


def report(figures: dict) -> None:
    rate, wall = figures["gb_per_cpu_s"], figures["gb_per_wall_s"]
    print(
        f"{figures['rows']} cutouts ({figures['gigabytes']:.3f} GB) in chunks of {figures['chunk_rows']}, "
        f"{len(figures['rounds'])} rounds: median [range]"
    )
    print(f"stats GB per CPU-second       {rate['median']:6.2f}  [{rate['range'][0]:.2f}-{rate['range'][1]:.2f}]")
    print(f"stats GB per wall-second      {wall['median']:6.2f}  [{wall['range'][0]:.2f}-{wall['range'][1]:.2f}]")
    for name, part in figures["parts_cpu_s_per_gb"].items():
        low, high = part["range"]
        print(f"  {name:<10} CPU-s per GB     {part['median']:6.3f}  [{low:.3f}-{high:.3f}]")
    floor, over = figures["numpy_floor_gb_per_cpu_s"], figures["cost_over_floor"]
    print(f"numpy floor GB per CPU-second {floor['median']:6.2f}  [{floor['range'][0]:.2f}-{floor['range'][1]:.2f}]")
    print(f"  statistics / floor, CPU      {over['median']:6.2f}  [{over['range'][0]:.2f}-{over['range'][1]:.2f}]")
    verdict = "PASS" if figures["pass"] else "MISS"
    print(f"stats GB/s per core  {rate['median']:.2f}  target >= {figures['target']:g}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=12000, help="cutouts in memory (20.7 KB each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-rows", type=int, default=512, help="rows per update (build's default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.rows, args.rounds, args.chunk_rows) < 1:
        parser.error("--rows, --rounds and --chunk-rows must be at least 1")
    figures = measure(args.rows, args.rounds, args.chunk_rows)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
