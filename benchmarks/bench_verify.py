"""Benchmark `cutout-etl verify`'s peak memory at two dataset sizes: it must not grow with the rows.

    python benchmarks/bench_verify.py [--small 10000] [--large 100000] [--workdir DIR] [--keep] [--json PATH]

For each size (rows in total, a third per class), a child writes the demo class
files and builds a dataset from them (the inputs are deleted then, to save
disk); another fresh child runs verify on it and reports its own peak RSS
(getrusage in the child) as JSON. Prints both peaks and their ratio; exits 1 if
the ratio exceeds 1.25 or the large dataset's peak exceeds 300 MB.

This launcher never imports numpy or cutout_etl: Linux carries a process's RSS
high-water mark over fork+exec into the child, so a big launcher would inflate
the measured peaks.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6
SCRIPT = Path(__file__).resolve()
RATIO_LIMIT = 1.25
LARGE_RSS_LIMIT_MB = 300.0


class BenchError(Exception):
    """A child failed or the benchmark cannot run."""


def child(*args: str | Path) -> str:
    """Run this script as a child; its stdout, or BenchError with its stderr."""
    done = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"exit {done.returncode}: {' '.join(map(str, args))}\n{done.stderr.strip()}")
    return done.stdout


def require_free_disk(where: Path, rows: int) -> None:
    needed = rows * 2 * 36 * 36 * 4 * 4 * 1.1  # inputs and output of the demo's 36x36x4 float32 cutouts
    free = shutil.disk_usage(where).free
    if free < needed:
        raise BenchError(f"{rows} rows need about {needed / 1e9:.1f} GB free in {where}; found {free / 1e9:.1f} GB")


def measure(base: Path, rows: int, keep: bool) -> dict:
    """Build a dataset of `rows` rows in a child, then verify it in another: rows, wall time and peak RSS."""
    require_free_disk(base, rows)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench_verify_{rows}_", dir=base))
    try:
        print(f"building {rows} rows in {workdir} ...", file=sys.stderr, flush=True)
        dataset = Path(child("--generate", workdir, "--rows", str(rows)).strip())
        print(f"verifying {dataset} ...", file=sys.stderr, flush=True)
        return json.loads(child("--measure", dataset))
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir)


def benchmark(args: argparse.Namespace) -> int:
    base = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    points = {"small": measure(base, args.small, args.keep), "large": measure(base, args.large, args.keep)}
    ratio = points["large"]["peak_rss_mb"] / points["small"]["peak_rss_mb"]
    checks = {
        "RSS(large) / RSS(small)": {"value": ratio, "target": f"<= {RATIO_LIMIT:g}", "pass": ratio <= RATIO_LIMIT},
        "RSS(large) MB": {
            "value": points["large"]["peak_rss_mb"],
            "target": f"<= {LARGE_RSS_LIMIT_MB:g}",
            "pass": points["large"]["peak_rss_mb"] <= LARGE_RSS_LIMIT_MB,
        },
    }
    print(f"{'size':<8}{'rows':>10}{'verify s':>10}{'peak RSS MB':>14}{'ok':>5}")
    for name, p in points.items():
        print(f"{name:<8}{p['rows']:>10}{p['wall_s']:>10.2f}{p['peak_rss_mb']:>14.1f}{'yes' if p['ok'] else 'NO':>5}")
        for failure in p["failures"]:
            print(f"  verify failure: {failure}")
    print()
    for name, c in checks.items():
        print(f"{name:<26}{c['value']:>8.2f}  target {c['target']:<8}{'PASS' if c['pass'] else 'MISS'}")
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    print(f"\nnotes: MB = 10^6 bytes; peak RSS is the verify child's own ru_maxrss (launcher: {launcher_mb:.0f} MB).")
    if args.json:
        Path(args.json).write_text(json.dumps({"points": points, "checks": checks}, indent=2) + "\n")
    return 0 if all(c["pass"] for c in checks.values()) and all(p["ok"] for p in points.values()) else 1


# --- children: each runs in its own process --------------------------------------------------


def generate(workdir: Path, rows: int) -> None:
    """Demo class files of `rows` rows in total, built into workdir/dataset.h5; the inputs are then removed."""
    from cutout_etl import pipeline
    from cutout_etl.demo import write_demo_files

    files = write_demo_files(workdir / "inputs", rows=max(1, rows // 3), seed=0)
    out = workdir / "dataset.h5"
    # random demo positions put a few objects of different classes within 1 arcsec: drop those, as a user would
    pipeline.build(files, out, merge_options=pipeline.MergeOptions(on_conflict="drop"))
    shutil.rmtree(workdir / "inputs")
    print(out)


def measure_verify(dataset: Path) -> None:
    from cutout_etl import open_dataset
    from cutout_etl.verify import verify

    start = time.perf_counter()
    result = verify(dataset)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    with open_dataset(dataset) as ds:
        rows = sum(len(ds[s]) for s in ds.splits)
    print(
        json.dumps(
            {"rows": rows, "wall_s": wall, "peak_rss_mb": peak, "ok": result["ok"], "failures": result["failures"][:5]}
        )
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="rows in total of the small dataset (default 10000)")
    parser.add_argument(
        "--large", type=int, default=100_000, help="rows in total of the large dataset (default 100000)"
    )
    parser.add_argument("--workdir", help="where to put the temporary files (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated datasets")
    parser.add_argument("--json", metavar="PATH", help="also write all numbers as JSON to PATH")
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.small, args.large) < 3:
        parser.error("--small and --large need at least 3 rows (one per class)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.generate:
            generate(args.generate, args.rows)
        elif args.measure:
            measure_verify(args.measure)
        else:
            return benchmark(args)
    except BenchError as exc:
        print(f"bench_verify: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
