"""Benchmark `inspect` against the scan pass of `build` (issue 17, target 5: inspect <= 1.5x the scan pass).

    python benchmarks/bench_inspect.py FILE... [--repeat 5] [--workdir DIR]

Warm page cache. Each round runs in its own process: `inspect_files` (wall and CPU seconds of all
its threads), then `build` into a temporary directory under DIR (default: the system's), whose
scan pass ends at its last 'scan' progress report. Prints every round, and the median and range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.5


def one_round(files: list[Path], workdir: Path | None) -> dict:
    from cutout_etl import pipeline
    from cutout_etl.inspection import inspect_files
    from cutout_etl.pipeline import MergeOptions

    for f in files:
        with f.open("rb") as stream:  # warm the page cache
            while stream.read(1 << 24):
                pass
    wall, cpu = time.perf_counter(), time.process_time()
    inspect_files(files)
    inspect_wall, inspect_cpu = time.perf_counter() - wall, time.process_time() - cpu
    last: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        last[stage] = time.perf_counter()

    with tempfile.TemporaryDirectory(dir=workdir) as work:
        wall = time.perf_counter()
        options = MergeOptions(on_conflict="drop")
        pipeline.build(files, Path(work) / "out.h5", merge_options=options, progress=progress)
    scan = last["scan"] - wall
    return {"inspect_s": inspect_wall, "inspect_cpu_s": inspect_cpu, "scan_s": scan, "ratio": inspect_wall / scan}


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--round", action="store_true", help=argparse.SUPPRESS)  # one round, in a child
    args = parser.parse_args()
    if args.round:
        print(json.dumps(one_round(args.files, args.workdir)))
        return
    child = [sys.executable, __file__, "--round", *map(str, args.files)]
    child += ["--workdir", str(args.workdir)] if args.workdir else []
    rounds = [
        json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout) for _ in range(args.repeat)
    ]
    for r in rounds:
        print(" ".join(f"{k} {v:.2f}" for k, v in r.items()))
    for key in ("inspect_s", "inspect_cpu_s", "scan_s"):
        print(f"{key}: {spread([r[key] for r in rounds])}")
    print(f"inspect / scan pass: {spread([r['ratio'] for r in rounds])} (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
