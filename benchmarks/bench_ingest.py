"""Benchmark `cutout-etl ingest` against reading the same FITS files with astropy in a plain loop.

    python benchmarks/bench_ingest.py [--objects 200] [--repeat 3] [--workers N] [--workdir DIR] [--keep] [--json PATH]

Writes `--objects` demo objects as per-band FITS cutouts (4 bands, 36 x 36
float64, named as the cutout generator names them) and a FITS catalogue, then
times, in each of `--repeat` rounds:
- `astropy loop`: `fits.open` + read the pixels as float32, file after file (the floor of a by-hand script);
- `ingest, 1 process`: the library in this process (`--workers 1`);
- `ingest, pool`: the default process pool (`--workers`, default the command's own).
Medians (and ranges) of files/s and MB/s (MB of FITS files on disk, 1e6 bytes)
are reported. The files are in the page cache after the first round: this
measures the work per file, not the disk. The load average is printed beside
the figures: on a busy machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from cutout_etl.demo import make_class_table
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.ingest import IngestOptions, ingest
from cutout_etl.ingest.synthetic import write_cutouts

MB = 1e6
BANDS = ("u", "g", "r", "i")


def generate(workdir: Path, objects: int) -> tuple[Path, Path, list[Path]]:
    table = make_class_table("GALAXY", objects, seed=0)
    files = write_cutouts(table, workdir / "cutouts", BANDS)
    table[["ID", "RAJ2000", "DECJ2000", "SPECTYPE"]].write(workdir / "catalogue.fits")
    return workdir / "catalogue.fits", workdir / "cutouts", files


def astropy_loop(files: list[Path]) -> float:
    """Seconds to open every file and read its pixels as float32, one after another."""
    started = time.perf_counter()
    for path in files:
        with fits.open(path, memmap=False) as hdus:
            np.asarray(hdus[0].data, dtype=np.float32)
    return time.perf_counter() - started


def run_ingest(catalogue: Path, cutouts: Path, out: Path, workers: int | None) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    ingest(catalogue, cutouts, out, IngestOptions(), cluster=ClusterOptions(workers=workers))
    return time.perf_counter() - started


def check(catalogue: Path, out: Path) -> str:
    """The round trip is bit-exact: the class file holds the demo table's images."""
    expected = make_class_table("GALAXY", len(Table.read(catalogue)), seed=0)["image"]
    back = Table.read(out / "image_table_galaxies.hdf5", path="data")["image"]
    return "OK" if np.array_equal(np.asarray(back), np.asarray(expected)) else "MISMATCH"


def figures(seconds: list[float], n_files: int, n_bytes: int) -> dict:
    median = statistics.median(seconds)
    return {
        "seconds": seconds,
        "files_per_s": n_files / median,
        "mb_per_s": n_bytes / MB / median,
        "files_per_s_range": [n_files / max(seconds), n_files / min(seconds)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="pool size [default: the command's]")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.workdir))
    try:
        catalogue, cutouts, files = generate(workdir, args.objects)
        n_bytes = sum(p.stat().st_size for p in files)
        runs: dict[str, list[float]] = {"astropy loop": [], "ingest, 1 process": [], "ingest, pool": []}
        for _ in range(args.repeat):
            runs["astropy loop"].append(astropy_loop(files))
            runs["ingest, 1 process"].append(run_ingest(catalogue, cutouts, workdir / "out", 1))
            runs["ingest, pool"].append(run_ingest(catalogue, cutouts, workdir / "out", args.workers))
        report = {
            "objects": args.objects,
            "files": len(files),
            "mb": n_bytes / MB,
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "runs": {name: figures(seconds, len(files), n_bytes) for name, seconds in runs.items()},
            "check": check(catalogue, workdir / "out"),
        }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{report['files']} FITS files ({report['mb']:.1f} MB), {args.repeat} rounds, medians:")
    for name, entry in report["runs"].items():
        low, high = entry["files_per_s_range"]
        print(f"  {name:18} {entry['files_per_s']:8.0f} files/s ({low:.0f}-{high:.0f}) {entry['mb_per_s']:7.1f} MB/s")
    load = ", ".join(f"{x:.2f}" for x in report["load_average"])
    print(f"{report['cores']} cores, load average {load} (a busy machine makes these figures noisy)")
    print(f"correctness: the class file holds the same pixels: {report['check']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["check"] == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
