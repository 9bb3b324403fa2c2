"""Benchmark `cutout-etl build`, warm and cold, against `cp`, SHA-256 and the by-hand way; memory growth.

    python benchmarks/bench_build.py --rows 30000 [--repeat 3] [--scaling] [--workdir DIR] [--keep] [--json PATH]

Generates N demo rows per class once (tiled: see `build_children.generate`),
then runs `--repeat` rounds. Each round times, each step in its own process
(so that its peak RSS is its own):

* warm (inputs in the page cache): `cp` of the inputs, their SHA-256 alone,
  `cutout-etl build` to HDF5 and to Parquet, the by-hand astropy +
  scikit-learn script;
* cold (the inputs evicted from the page cache before each step with
  posix_fadvise DONTNEED, no root needed): `cp`, SHA-256, build HDF5 and Parquet.

Ratios are taken within a round, then their median and range over rounds
are printed against the targets. Once, after the rounds: the training
statistics' cost per GB of pixels (`bench_stats.py`), `inspect` against the
scan pass of build, and build's write pass gathering rows from cold inputs
(what inputs larger than memory cost) against a cold sequential read.
`--scaling` builds 10^4 and 3 x 10^5 rows per class (18.7 GB of input; skipped
with a message when the disk lacks room) and compares peak RSS.

The demo renders 2,000 objects per class and tiles them; the generator scales
each copy's image by 1 + k * 1e-6, so every image is distinct and build writes
every row, as with real data (builds use `--on-conflict drop`: at 10^5 random
positions per class a few objects of different classes fall within 1 arcsec).

This launcher never imports numpy, astropy or cutout_etl itself: Linux carries
a process's RSS high-water mark over fork+exec into the child's ru_maxrss, so
a big launcher would inflate every measured peak.
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
HERE = Path(__file__).resolve().parent
CHILDREN = HERE / "build_children.py"
SCALING_ROWS = (10_000, 300_000)
ROW_BYTES = 20_800  # one input row of 36x36x4 float32 plus its columns, for the disk check
RSS_LIMIT_MB = 300.0
STATS_ROWS = 12_000  # cutouts bench_stats.py measures the statistics on (0.25 GB, in memory)
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}
BUILD = ("--quiet", "--on-conflict", "drop")
WARM = ("cp", "sha256", "build", "build parquet", "by-hand")
COLD = ("cold cp", "cold sha256", "cold build", "cold build parquet")


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


def run(cmd: list[str | Path], allowed: tuple[int, ...] = (0,)) -> Run:
    """Run `cmd` to completion (exit status in `allowed`); peak RSS comes from wait4, not from polling."""
    args = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
        out.seek(0)
        err.seek(0)
        if proc.returncode not in allowed:
            message = err.read().decode(errors="replace").strip()
            raise BenchError(f"exit {proc.returncode}: {shlex.join(args)}\n{message}")
        return Run(wall, usage.ru_maxrss * 1024 / MB, out.read().decode())


def child(mode: str, *args: str | Path) -> Run:
    return run([sys.executable, CHILDREN, mode, *args])


def generate(directory: Path, rows: int) -> tuple[list[Path], float]:
    print(f"generating {rows} rows per class in {directory} ...", file=sys.stderr, flush=True)
    gen = child("generate", directory, str(rows))
    os.sync()
    return [Path(line) for line in gen.stdout.splitlines()], gen.wall_s


def require_free_disk(where: Path, rows: int) -> None:
    needed = 2 * 3 * rows * ROW_BYTES * 1.05  # inputs and one output
    free = shutil.disk_usage(where).free
    if free < needed:
        raise BenchError(
            f"{rows} rows per class needs {needed / 1e9:.0f} GB free in {where}; found {free / 1e9:.1f} GB"
        )


def measure_round(workdir: Path, files: list[Path]) -> dict[str, Run]:
    """One round: every warm step, `inspect` against build's scan pass, every cold step; each after an untimed sync."""
    runs: dict[str, Run] = {"inspect / scan": inspect_against_scan(workdir, files)}
    for cold in (False, True):
        for step in COLD if cold else WARM:
            os.sync()  # untimed: keeps one step's writeback out of the next step's time
            if cold:
                child("evict", *files)
            runs[step] = measure_step(step.removeprefix("cold "), workdir, files)
    return runs


def inspect_against_scan(workdir: Path, files: list[Path]) -> Run:
    """`bench_inspect.py`'s round: inspect's wall time, then build's up to its last scan report, in one child.

    The Run's wall_s is the ratio of the two (what the target is about); the child's own figures are in stdout.
    """
    os.sync()
    done = run([sys.executable, HERE / "bench_inspect.py", "--round", *files, "--workdir", workdir])
    return Run(json.loads(done.stdout)["ratio"], done.peak_rss_mb, done.stdout)


def measure_step(step: str, workdir: Path, files: list[Path]) -> Run:
    out = workdir / "out"
    out.mkdir()
    try:
        if step == "cp":
            return run(["cp", *files, out])
        if step == "sha256":
            return child("sha256", *files)
        if step == "by-hand":
            return child("by-hand", out, *files)
        extra = ("--format", "parquet") if step == "build parquet" else ()
        return run([CLI, "build", *files, "-o", out / "dataset", *BUILD, *extra])
    finally:
        shutil.rmtree(out)


def round_ratios(runs: dict[str, Run]) -> list[Ratio]:
    wall = {name: r.wall_s for name, r in runs.items()}
    return [
        Ratio("inspect / scan pass of build", wall["inspect / scan"], "<=", 1.5),
        Ratio("warm: build / (cp + SHA-256)", wall["build"] / (wall["cp"] + wall["sha256"]), "<=", 1.5),
        Ratio("warm: by-hand / build", wall["by-hand"] / wall["build"], ">=", 6.0),
        Ratio("warm: Parquet / HDF5 throughput", wall["build"] / wall["build parquet"], ">=", 0.8),
        Ratio("cold: build / (cp + SHA-256)", wall["cold build"] / (wall["cold cp"] + wall["cold sha256"]), "<=", 2.0),
        Ratio("build peak RSS MB", runs["build"].peak_rss_mb, "<", RSS_LIMIT_MB),
        Ratio("build parquet peak RSS MB", runs["build parquet"].peak_rss_mb, "<", RSS_LIMIT_MB),
    ]


def median_ratios(rounds: list[dict[str, Run]]) -> tuple[list[Ratio], dict[str, tuple[float, float]]]:
    """Each ratio's median over the rounds, and its range."""
    per_round = [round_ratios(r) for r in rounds]
    medians, ranges = [], {}
    for i, first in enumerate(per_round[0]):
        values = [ratios[i].value for ratios in per_round]
        medians.append(Ratio(first.name, statistics.median(values), first.op, first.target))
        ranges[first.name] = (min(values), max(values))
    return medians, ranges


def once_figures(workdir: Path, files: list[Path], rows: int) -> tuple[list[Ratio], dict]:
    """Statistics cost, and the write pass from cold inputs."""
    warm_s, cold_s, read_s, size = map(float, child("write-pass-cold", *files).stdout.split())
    stats_json = workdir / "stats.json"
    stats_run = [sys.executable, HERE / "bench_stats.py", "--rows", str(min(rows, STATS_ROWS)), "--rounds", "3"]
    run([*stats_run, "--json", stats_json], allowed=(0, 1))  # 1: its target missed, reported below
    stats = json.loads(stats_json.read_text())
    figures = {
        "write_pass_warm_s": warm_s,
        "write_pass_cold_s": cold_s,
        "cold_sequential_read_s": read_s,
        "input_bytes": size,
        "stats": stats,
    }
    return [Ratio("stats GB/s per core", stats["gb_per_cpu_s"]["median"], ">=", stats["target"])], figures


def print_steps(rounds: list[dict[str, Run]], input_mb: float) -> None:
    print(f"\nmedian of {len(rounds)} rounds (range in brackets)")
    print(f"{'step':<20}{'wall s':>8}{'':>16}{'input MB/s':>12}{'peak RSS MB':>14}")
    for name in [n for n in rounds[0] if n != "inspect / scan"]:
        walls = [r[name].wall_s for r in rounds]
        wall = statistics.median(walls)
        rss = statistics.median(r[name].peak_rss_mb for r in rounds)
        spread = f"[{min(walls):.2f}-{max(walls):.2f}]"
        print(f"{name:<20}{wall:>8.2f}{spread:>16}{input_mb / wall:>12.0f}{rss:>14.1f}")


def print_once(figures: dict) -> None:
    size = figures["input_bytes"] / MB
    print(
        f"\nwrite pass alone (pass 2 of build, {size:.0f} MB): warm {figures['write_pass_warm_s']:.2f} s; inputs"
        f" evicted after pass 1 (as when they exceed memory) {figures['write_pass_cold_s']:.2f} s; a cold sequential"
        f" read of the inputs {figures['cold_sequential_read_s']:.2f} s"
    )
    stats, rate = figures["stats"], figures["stats"]["gb_per_cpu_s"]
    parts = ", ".join(f"{k} {v['median']:.2f}" for k, v in stats["parts_cpu_s_per_gb"].items())
    print(
        f"training statistics (bench_stats.py, {stats['gigabytes']:.2f} GB of pixels in memory): {rate['median']:.2f}"
        f" GB per CPU-second [{rate['range'][0]:.2f}-{rate['range'][1]:.2f}]; CPU-s per GB: {parts}"
    )
    floor = stats["numpy_floor_gb_per_cpu_s"]
    print(
        f"numpy floor of the statistics (bench_stats.py's docstring): {floor['median']:.2f} GB per CPU-second"
        f" [{floor['range'][0]:.2f}-{floor['range'][1]:.2f}]; statistics / floor {stats['cost_over_floor']['median']:.2f}"
    )


def print_ratios(ratios: list[Ratio], ranges: dict | None = None) -> None:
    for r in ratios:
        target = f"{r.op} {r.target:g}"
        spread = f"[{ranges[r.name][0]:.2f}-{ranges[r.name][1]:.2f}]" if ranges and r.name in ranges else ""
        print(f"{r.name:<38}{r.value:>8.2f} {spread:<16} target {target:<8}{'PASS' if r.passed else 'MISS'}")


def measure_scaling(base: Path) -> dict:
    """Peak RSS of build at 10^4 and 3 x 10^5 rows per class."""
    points = {}
    for rows in SCALING_ROWS:
        try:
            require_free_disk(base, rows)
        except BenchError as exc:
            print(f"scaling: skipped {rows} rows per class: {exc}")
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"bench_build_{rows}_", dir=base))
        try:
            files, gen_s = generate(workdir / "inputs", rows)
            print(f"generation: {gen_s:.1f} s for 3 x {rows} rows", file=sys.stderr)
            built = run([CLI, "build", *files, "-o", workdir / "dataset.h5", *BUILD])
            total = int(child("count", workdir / "dataset.h5").stdout)
        finally:
            shutil.rmtree(workdir)
        points[rows] = {"wall_s": built.wall_s, "peak_rss_mb": built.peak_rss_mb, "rows_ok": total == 3 * rows}
    print(f"\n{'rows/class':<12}{'wall s':>10}{'peak RSS MB':>14}{'rows ok':>9}")
    for rows, p in points.items():
        print(f"{rows:<12}{p['wall_s']:>10.2f}{p['peak_rss_mb']:>14.1f}{'yes' if p['rows_ok'] else 'NO':>9}")
    if len(points) < 2:
        return {"builds": points}
    small, big = (points[r]["peak_rss_mb"] for r in SCALING_ROWS)
    ratios = [
        Ratio(f"RSS({SCALING_ROWS[1]:.0e}) / RSS({SCALING_ROWS[0]:.0e})", big / small, "<=", 1.25),
        Ratio(f"RSS MB at {SCALING_ROWS[1]:.0e} rows/class", big, "<", RSS_LIMIT_MB),
    ]
    print()
    print_ratios(ratios)
    return {"builds": points, "ratios": {r.name: r.as_dict() for r in ratios}}


def benchmark(args: argparse.Namespace) -> int:
    base = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_build_", dir=base))
    try:
        files, gen_s = generate(workdir / "inputs", args.rows)
        input_mb = sum(f.stat().st_size for f in files) / MB
        print(f"generation: {gen_s:.1f} s for 3 x {args.rows} rows ({input_mb:.0f} MB)")
        rounds = []
        for number in range(1, args.repeat + 1):
            print(f"round {number} of {args.repeat} ...", file=sys.stderr, flush=True)
            rounds.append(measure_round(workdir, files))
        once, figures = once_figures(workdir, files, args.rows)
        out = workdir / "check.h5"
        run([CLI, "build", *files, "-o", out, *BUILD])
        found = int(child("count", out).stdout)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir)
    rows_ok = found == 3 * args.rows
    print(f"correctness: {found} rows accounted for (kept or dropped with a reason), expected {3 * args.rows}: "
          f"{'OK' if rows_ok else 'MISMATCH'}")  # fmt: skip
    ratios, ranges = median_ratios(rounds)
    print_steps(rounds, input_mb)
    print_once(figures)
    print()
    print_ratios(ratios + once, ranges)
    report = {
        "rows_per_class": args.rows,
        "input_mb": input_mb,
        "generation_s": gen_s,
        "rows_found": found,
        "rows_ok": rows_ok,
        "rounds": [{k: {"wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb} for k, r in rr.items()} for rr in rounds],
        "ratios": {r.name: {**r.as_dict(), "range": ranges.get(r.name)} for r in ratios + once},
        "once": figures,
    }
    if args.scaling:
        report["scaling"] = measure_scaling(base)
    print_notes()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if rows_ok and all(p["rows_ok"] for p in report.get("scaling", {}).get("builds", {}).values()) else 1


def print_notes() -> None:
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    print(
        "\nnotes: MB = 10^6 bytes; MB/s is input size / wall time; wall time includes interpreter start-up."
        " os.sync() ran untimed before each step. 'cold' steps start with the inputs evicted from the page"
        " cache; at this size build's pass 1 reads them back, so its pass 2 is warm (the write-pass line shows"
        f" what colder inputs cost). Linux counts the launcher's own peak ({launcher_mb:.0f} MB) in every"
        " child's peak RSS, so cp's figure is a floor."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="rows per class (e.g. 30000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every step; medians are reported (default 3)")
    parser.add_argument("--workdir", help="where to put the temporary files (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    parser.add_argument("--scaling", action="store_true", help="also compare peak RSS at 10^4 and 3x10^5 rows/class")
    parser.add_argument("--json", metavar="PATH", help="also write all numbers as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return benchmark(args)
    except BenchError as exc:
        print(f"bench_build: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
