"""The measured children of `bench_build.py`, each run in its own process (see that module's docstring).

python benchmarks/build_children.py generate DIR ROWS      # tiled demo inputs, written a chunk at a time
python benchmarks/build_children.py sha256 FILE...         # SHA-256 of each file, as build reads it
python benchmarks/build_children.py evict FILE...          # drop the files from the page cache
python benchmarks/build_children.py by-hand OUT FILE...    # the users' way: astropy + scikit-learn
python benchmarks/build_children.py count DATASET          # rows kept plus rows dropped with a reason
python benchmarks/build_children.py inspect-vs-scan FILE...  # inspect's wall time against build's pass 1
python benchmarks/build_children.py write-pass-cold FILE...  # build's pass 2 gathering from cold inputs
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

GENERATE_CHUNK = 30_000  # rows rendered and written at a time: ~1.3 GB of memory in the generator
DEMO_BLOCK = 2_000  # distinct objects per class; rows beyond it tile them (cutout_etl.demo)
READ_BLOCK = 1 << 22  # 4 MiB, as build's hasher reads
COPY_SCALE = 1e-6  # copy k of a rendered object is scaled by 1 + k * COPY_SCALE: a distinct image


def generate(directory: Path, rows: int) -> None:
    """The demo's three class files, any size, written in chunks; every image distinct, as in real data.

    The demo renders 2,000 objects per class and tiles them (`cutout_etl.demo`); copy k of an
    object here is its image times 1 + k * 1e-6, so no two rows share an image and build
    writes every row, as it would for real inputs (rows of copy 0 are the demo's own).
    """
    import numpy as np

    from cutout_etl.demo import DEMO_FILES, make_class_table
    from cutout_etl.formats.class_file import write_class_table_in_chunks

    directory.mkdir(parents=True, exist_ok=True)
    block = min(rows, DEMO_BLOCK)
    for spectype, name in DEMO_FILES.items():

        def make(start: int, stop: int, spectype: str = spectype):
            table = make_class_table(spectype, stop - start, 0, block=block, id_offset=start)
            copy = np.arange(start, stop) // block
            table["image"] *= (1 + copy * COPY_SCALE).astype(np.float32)[:, None, None, None]
            return table

        write_class_table_in_chunks(directory / name, rows, GENERATE_CHUNK, make)
        print(directory / name)


def evict(files: list[Path]) -> None:
    """Drop clean pages of `files` from the page cache (posix_fadvise DONTNEED: no root needed)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sha256(files: list[Path]) -> None:
    """The SHA-256 of every input, read in 4 MiB blocks as build does: the part of build no code can skip."""
    import hashlib

    for path in files:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, "sha256")


def sequential_read_s(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(READ_BLOCK):
                pass
    return time.perf_counter() - start


def by_hand(out_dir: Path, files: list[Path]) -> None:
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


def count(dataset: Path) -> None:
    import cutout_etl

    with cutout_etl.open_dataset(dataset) as ds:  # every row accounted for: kept, or dropped with a reason
        print(sum(len(ds[s]) for s in ds.splits) + sum(ds.metadata["report"]["dropped"].values()))


def _build_options():
    from cutout_etl.pipeline import MergeOptions

    return MergeOptions(on_conflict="drop")  # as bench_build's CLI builds


def write_pass_cold(files: list[Path]) -> None:
    """Build's pass 2 reading inputs that are not in the page cache, as with inputs larger than memory.

    Pass 1 reads every input sequentially, so at sizes that fit in memory
    pass 2 finds them cached. Here they are evicted between the passes: the
    write pass (random reads of whole rows, in stored order) is timed against
    a cold sequential read of the same files. Prints both times and bytes.
    """
    from cutout_etl.inputs.records import image_hashes
    from cutout_etl.inputs.scan import ReadOptions, scan_inputs
    from cutout_etl.pipeline import SplitOptions, plan_rows, split_layout
    from cutout_etl.schema import DEFAULT_CLASSES

    plan = plan_rows(scan_inputs(files, list(DEFAULT_CLASSES), ReadOptions()), _build_options(), image_hashes)
    layout, _ = split_layout(plan, SplitOptions())
    scan = plan.scan
    warm_s = _time_write_pass(scan, layout, files, cold=False)
    cold_s = _time_write_pass(scan, layout, files, cold=True)
    evict(files)
    read_s = sequential_read_s(files)
    print(f"{warm_s} {cold_s} {read_s} {sum(f.stat().st_size for f in files)}")


def _time_write_pass(scan, layout, files: list[Path], cold: bool) -> float:
    import contextlib

    from cutout_etl.execution import local
    from cutout_etl.formats import choose
    from cutout_etl.inputs.scan import ReadOptions
    from cutout_etl.schema import output_dtype

    dtype = output_dtype(scan.id_len, max(len(c) for c in scan.classes), scan.image_shape)
    with tempfile.TemporaryDirectory(dir=files[0].parent.parent) as tmp:
        out = Path(tmp) / "d.h5"
        out.touch()
        tables = local.tables_in_order(scan, layout)
        with contextlib.closing(choose(out, None).open_sink(out, layout.rows(), dtype, scan.classes, 0)) as sink:
            evict(files) if cold else sequential_read_s(files)
            start = time.perf_counter()
            local.write_tables(scan, tables, sink, dtype, ReadOptions().chunk_rows, _ignore, stats_table="train")
            return time.perf_counter() - start


def _ignore(stage: str, done: int, total: int) -> None:
    pass


def main(argv: list[str]) -> None:
    mode, args = argv[0], [Path(a) for a in argv[1:]]
    if mode == "generate":
        generate(args[0], int(argv[2]))
    elif mode == "by-hand":
        by_hand(args[0], args[1:])
    elif mode == "count":
        count(args[0])
    else:
        {"sha256": sha256, "evict": evict, "write-pass-cold": write_pass_cold}[mode](args)


if __name__ == "__main__":
    main(sys.argv[1:])
