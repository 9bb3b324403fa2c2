"""Benchmark `cutout-etl build` against `cp` (the I/O floor) and the by-hand way.

    python benchmarks/bench_build.py --rows 30000 [--repeat 3] [--workdir DIR] [--keep] [--scaling] [--json PATH]

Generates N demo rows per class once, then times, in each of `--repeat`
rounds, `cp`, `cutout-etl build` (HDF5 and Parquet), the by-hand astropy +
scikit-learn script and the SHA-256 of the inputs alone, on the same files,
each in its own process so that its peak RSS is its own. Medians over the
rounds are reported, with their range.

This launcher never imports numpy, astropy or cutout_etl itself: Linux carries
a process's RSS high-water mark over fork+exec into the child's ru_maxrss, so
a big launcher would inflate every measured peak. Generation, the by-hand
script and the correctness check therefore run as children too
(`--generate`, `--by-hand`, `--check`).
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MB = 1e6
CLI = Path(sys.executable).parent / "cutout-etl"
SCRIPT = Path(__file__).resolve()
SCALING_ROWS = (10_000, 100_000)
SCALING_FREE_BYTES = 20e9
BUILD_RSS_LIMIT_MB = 500.0
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


class BenchError(Exception):
    """A measured command failed or the benchmark cannot run."""


@dataclass
class Run:
    """One child process: wall time, its own peak RSS and what it printed."""

    wall_s: float
    peak_rss_mb: float
    stdout: str


@dataclass
class Ratio:
    """A measured figure against its target, e.g. value <= 2.0."""

    name: str
    value: float
    op: str  # one of OPS
    target: float

    @property
    def passed(self) -> bool:
        return OPS[self.op](self.value, self.target)

    def as_dict(self) -> dict:
        return {"value": self.value, "target": f"{self.op} {self.target:g}", "pass": self.passed}


def run(cmd: list[str | Path]) -> Run:
    """Run `cmd` to completion; peak RSS comes from wait4, not from polling."""
    args = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            message = err.read().decode(errors="replace").strip()
            raise BenchError(f"exit {proc.returncode}: {shlex.join(args)}\n{message}")
        return Run(wall, usage.ru_maxrss * 1024 / MB, out.read().decode())


def generate(directory: Path, rows: int) -> tuple[list[Path], float]:
    """Write the three class files in a child; return their paths and the time."""
    print(f"generating {rows} rows per class in {directory} ...", file=sys.stderr, flush=True)
    gen = run([sys.executable, SCRIPT, "--generate", directory, "--rows", str(rows)])
    os.sync()
    return [Path(line) for line in gen.stdout.splitlines()], gen.wall_s


def build(files: list[Path], out: Path, *options: str) -> Run:
    # At 10^5 rows per class the random demo positions put a few objects of
    # different classes within 1 arcsec: drop those (counted) as a user would.
    return run([CLI, "build", *files, "-o", out, "--quiet", "--on-conflict", "drop", *options])


def count_rows(dataset: Path) -> int:
    return int(run([sys.executable, SCRIPT, "--check", dataset]).stdout)


def require_free_disk(where: Path, needed: float) -> None:
    free = shutil.disk_usage(where).free
    if free < needed:
        raise BenchError(
            f"--scaling needs {needed / 1e9:.0f} GB free in {where} "
            f"(100,000 rows per class is 6.2 GB of input plus 6.2 GB of output); "
            f"found {free / 1e9:.1f} GB"
        )


def measure_main(workdir: Path, rows: int, repeat: int) -> dict:
    """Steps 1-4: generate once, then `repeat` rounds of cp, build, build parquet, by-hand and SHA-256.

    Each round runs every step once, so a slow spell of this shared machine
    hits all of them; ratios are taken within a round, then the median over rounds.
    """
    files, gen_s = generate(workdir / "inputs", rows)
    input_bytes = sum(f.stat().st_size for f in files)
    print(f"generation: {gen_s:.1f} s for 3 x {rows} rows ({input_bytes / MB:.0f} MB)")
    rounds = []
    for number in range(1, repeat + 1):
        print(f"round {number} of {repeat} ...", file=sys.stderr, flush=True)
        rounds.append(measure_round(workdir, files, check=number == 1))
    total = rounds[0].pop("rows_found")
    print(
        f"correctness: {total} rows accounted for (kept or dropped with a reason), expected {3 * rows}: "
        f"{'OK' if total == 3 * rows else 'MISMATCH'}"
    )
    return {
        "rows_per_class": rows,
        "input_mb": input_bytes / MB,
        "generation_s": gen_s,
        "rows_found": total,
        "rows_ok": total == 3 * rows,
        "rounds": rounds,
    }


def measure_round(workdir: Path, files: list[Path], check: bool) -> dict:
    runs: dict = {}
    (workdir / "cp").mkdir()
    runs["cp"] = run(["cp", *files, workdir / "cp"])
    shutil.rmtree(workdir / "cp")
    os.sync()  # untimed: keeps one step's writeback out of the next step's time

    (workdir / "build").mkdir()
    out = workdir / "build" / "dataset.h5"
    runs["build"] = build(files, out)
    if check:
        runs["rows_found"] = count_rows(out)
    shutil.rmtree(workdir / "build")
    os.sync()

    runs["build parquet"] = build(files, workdir / "dataset_parquet", "--format", "parquet")
    shutil.rmtree(workdir / "dataset_parquet")
    os.sync()

    by_hand_dir = workdir / "by_hand"
    by_hand_dir.mkdir()
    runs["by-hand"] = run([sys.executable, SCRIPT, "--by-hand", *files, "--out", by_hand_dir])
    shutil.rmtree(by_hand_dir)
    os.sync()

    runs["sha256 only"] = run([sys.executable, SCRIPT, "--sha256", *files])
    return runs


def main_ratios(runs: dict[str, Run]) -> list[Ratio]:
    cp, built, manual = runs["cp"], runs["build"], runs["by-hand"]
    return [
        Ratio("build time / cp time", built.wall_s / cp.wall_s, "<=", 2.0),
        Ratio("by-hand time / build time", manual.wall_s / built.wall_s, ">=", 5.0),
        Ratio("by-hand RSS / build RSS", manual.peak_rss_mb / built.peak_rss_mb, ">=", 5.0),
        Ratio("build RSS MB", built.peak_rss_mb, "<", BUILD_RSS_LIMIT_MB),
        Ratio("parquet throughput / hdf5 throughput", built.wall_s / runs["build parquet"].wall_s, ">=", 0.5),
        Ratio("build parquet RSS MB", runs["build parquet"].peak_rss_mb, "<", BUILD_RSS_LIMIT_MB),
    ]


def median_ratios(rounds: list[dict]) -> tuple[list[Ratio], dict[str, tuple[float, float]]]:
    """Each ratio's median over the rounds, and its range."""
    per_round = [main_ratios(r) for r in rounds]
    medians, ranges = [], {}
    for i, first in enumerate(per_round[0]):
        values = [ratios[i].value for ratios in per_round]
        medians.append(Ratio(first.name, statistics.median(values), first.op, first.target))
        ranges[first.name] = (min(values), max(values))
    return medians, ranges


def print_main(result: dict, ratios: list[Ratio], ranges: dict) -> None:
    rounds = result["rounds"]
    print(f"\nmedian of {len(rounds)} rounds (range in brackets)")
    print(f"{'step':<15}{'wall s':>10}{'':>16}{'input MB/s':>12}{'peak RSS MB':>14}")
    for name in rounds[0]:
        walls = [r[name].wall_s for r in rounds]
        wall = statistics.median(walls)
        spread = f"[{min(walls):.2f}-{max(walls):.2f}]"
        rss = statistics.median(r[name].peak_rss_mb for r in rounds)
        print(f"{name:<15}{wall:>10.2f}{spread:>16}{result['input_mb'] / wall:>12.0f}{rss:>14.1f}")
    sha = statistics.median(r["sha256 only"].wall_s / r["cp"].wall_s for r in rounds)
    print(f"\nSHA-256 of the inputs alone (build must store it) takes {sha:.2f}x the cp time.")
    print()
    print_ratios(ratios, ranges)


def print_ratios(ratios: list[Ratio], ranges: dict | None = None) -> None:
    for r in ratios:
        target = f"{r.op} {r.target:g}"
        spread = f"[{ranges[r.name][0]:.2f}-{ranges[r.name][1]:.2f}]" if ranges else ""
        print(f"{r.name:<38}{r.value:>8.2f} {spread:<14} target {target:<8}{'PASS' if r.passed else 'MISS'}")


def measure_scaling(base: Path) -> dict:
    """Step 6: peak RSS of build at 10k and 100k rows per class."""
    require_free_disk(base, SCALING_FREE_BYTES)
    points = {}
    for rows in SCALING_ROWS:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench_build_{rows}_", dir=base))
        try:
            files, gen_s = generate(workdir / "inputs", rows)
            print(f"generation: {gen_s:.1f} s for 3 x {rows} rows")
            built = build(files, workdir / "dataset.h5")
            total = count_rows(workdir / "dataset.h5")
        finally:
            shutil.rmtree(workdir)
        points[rows] = {
            "wall_s": built.wall_s,
            "peak_rss_mb": built.peak_rss_mb,
            "rows_found": total,
            "rows_ok": total == 3 * rows,
        }
    small, big = (points[r]["peak_rss_mb"] for r in SCALING_ROWS)
    ratio = Ratio(f"RSS({SCALING_ROWS[1] // 1000}k) / RSS({SCALING_ROWS[0] // 1000}k)", big / small, "<=", 1.25)
    print(f"\n{'rows/class':<12}{'wall s':>10}{'peak RSS MB':>14}{'rows ok':>9}")
    for rows, p in points.items():
        print(f"{rows:<12}{p['wall_s']:>10.2f}{p['peak_rss_mb']:>14.1f}{'yes' if p['rows_ok'] else 'NO':>9}")
    print()
    print_ratios([ratio])
    return {"builds": points, "ratio": ratio.as_dict()}


def print_notes() -> None:
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    print(
        "\nnotes: MB = 10^6 bytes; MB/s is input size / wall time. The page cache was not dropped"
        " (needs root): the inputs are warm in it for cp, build and by-hand alike. os.sync() ran"
        " untimed before each step. Wall time includes interpreter start-up. Linux counts the"
        f" launcher's own peak ({launcher_mb:.0f} MB) in every child's peak RSS, so cp's figure is a floor."
    )


def benchmark(args: argparse.Namespace) -> int:
    base = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        require_free_disk(base, SCALING_FREE_BYTES)  # fail before minutes of work, not after
    workdir = Path(tempfile.mkdtemp(prefix="bench_build_", dir=base))
    try:
        result = measure_main(workdir, args.rows, args.repeat)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir)
    ratios, ranges = median_ratios(result["rounds"])
    print_main(result, ratios, ranges)
    report = {
        **result,
        "rounds": [
            {k: {"wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb} for k, r in runs.items()}
            for runs in result["rounds"]
        ],
        "ratios": {r.name: {**r.as_dict(), "range": ranges[r.name]} for r in ratios},
    }
    if args.scaling:
        report["scaling"] = measure_scaling(base)
    print_notes()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = report["rows_ok"] and all(p["rows_ok"] for p in report.get("scaling", {}).get("builds", {}).values())
    return 0 if ok else 1


# --- children: each runs in its own process --------------------------------------------------


def write_inputs(directory: Path, rows: int) -> None:
    from cutout_etl.demo import write_demo_files

    for path in write_demo_files(directory, rows, seed=0):
        print(path)


def print_row_count(dataset: Path) -> None:
    import cutout_etl

    with cutout_etl.open_dataset(dataset) as ds:  # every row accounted for: kept, or dropped with a reason
        print(sum(len(ds[s]) for s in ds.splits) + sum(ds.metadata["report"]["dropped"].values()))


def sha256_only(files: list[Path]) -> None:
    """The SHA-256 of every input, read in 4 MiB blocks as build does: the part of build no code can skip."""
    import hashlib

    for f in files:
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)


def by_hand(files: list[Path], out_dir: Path) -> None:
    """What users do today: whole tables in memory, scikit-learn splits, astropy writes."""
    import numpy as np
    from astropy.table import Table, vstack
    from sklearn.model_selection import train_test_split

    table = vstack([Table.read(f, path="data") for f in files])
    images = np.array(table["image"])
    names = np.char.upper(np.char.strip(np.asarray(table["SPECTYPE"]).astype(str)))
    classes, labels = np.unique(names, return_inverse=True)
    table["label"] = labels
    rows = np.arange(len(table))
    train, rest = train_test_split(rows, test_size=0.3, stratify=labels, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=0)
    mean = np.nanmean(images[train], axis=(0, 1, 2))
    std = np.nanstd(images[train], axis=(0, 1, 2))
    out = out_dir / "by_hand.h5"
    for name, idx in (("train", train), ("val", val), ("test", test)):
        part = table[idx]
        if name == "train":
            part.meta.update(classes=classes.tolist(), mean=mean.tolist(), std=std.tolist())
        part.write(out, path=name, serialize_meta=True, append=name != "train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, help="rows per class (e.g. 30000)")
    parser.add_argument("--workdir", help="where to put the temporary files (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help=f"also build {SCALING_ROWS[0]} and {SCALING_ROWS[1]} rows per class and compare peak RSS",
    )
    parser.add_argument("--json", metavar="PATH", help="also write all numbers as JSON to PATH")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every step; medians are reported (default 3)")
    parser.add_argument(
        "--by-hand", nargs="+", type=Path, metavar="FILE", help="run only the by-hand script on FILEs (needs --out)"
    )
    parser.add_argument("--out", type=Path, help="output directory of --by-hand")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sha256", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.by_hand and args.out is None:
        parser.error("--by-hand needs --out DIR")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not (args.by_hand or args.check or args.sha256) and (args.rows is None or args.rows < 1):
        parser.error("--rows N (N >= 1) is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.by_hand:
            by_hand(args.by_hand, args.out)
        elif args.generate:
            write_inputs(args.generate, args.rows)
        elif args.check:
            print_row_count(args.check)
        elif args.sha256:
            sha256_only(args.sha256)
        else:
            return benchmark(args)
    except BenchError as exc:
        print(f"bench_build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
