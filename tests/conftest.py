"""Shared fixtures: small demo class files and a writer for hand-made tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import settings

from cutout_etl.demo import write_demo_files

DEMO_ROWS = 120

# Fuzz tests take their number of examples from the profile: a quick one locally, the full one in CI (CI=true).
settings.register_profile("quick", max_examples=30)
settings.register_profile("ci", max_examples=300)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "quick")


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> list[Path]:
    """Three synthetic class files, DEMO_ROWS rows each (galaxies, qso, stars)."""
    return write_demo_files(tmp_path_factory.mktemp("demo"), rows=DEMO_ROWS, seed=1)


def make_table(
    n: int = 20,
    label: str | bytes = b"GALAXY",
    start: int = 0,
    shape: tuple[int, ...] = (36, 36, 4),
    dtype: str = "f4",
    seed: int = 0,
    prefix: str = "OBJ",
) -> Table:
    """A small valid class table: sky noise at 2e-12, one label.

    Row i is object number start + i: its ID and position follow from that
    number alone (objects 36 arcsec apart along the equator), so the same
    object in two tables has the same ID and position.
    """
    rng = np.random.default_rng(seed)
    number = start + np.arange(n)
    t = Table()
    t["ID"] = np.array([f"{prefix} J{k:08d}".encode() for k in number], dtype="S29")
    t["RAJ2000"] = 120 + number * 0.01
    t["DECJ2000"] = np.zeros(n)
    t["SPECTYPE"] = np.array([label] * n, dtype="S6" if isinstance(label, bytes) else "U6")
    t["image"] = (rng.standard_normal((n, *shape)) * 2e-12).astype(dtype)
    return t


def write_table(table: Table, path: Path, table_path: str = "data", append: bool = False) -> Path:
    """Write like the users' files: astropy HDF5 with serialized metadata."""
    table.write(path, format="hdf5", path=table_path, serialize_meta=True, overwrite=not append, append=append)
    return path


@pytest.fixture
def class_files(tmp_path) -> list[Path]:
    """Three small hand-made class files with disjoint IDs (30, 20, 25 rows)."""
    return [
        write_table(make_table(30, b"GALAXY", 0, seed=1), tmp_path / "galaxies.hdf5"),
        write_table(make_table(20, b"QSO ", 1000, seed=2), tmp_path / "qso.hdf5"),
        write_table(make_table(25, b"STAR", 2000, seed=3), tmp_path / "stars.hdf5"),
    ]
