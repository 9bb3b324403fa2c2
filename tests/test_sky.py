"""Leak-free splits: positional duplicates, neighbours that share pixels, sky cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cutout_etl import open_dataset, pipeline
from cutout_etl.cli import app
from cutout_etl.errors import LabelConflictError
from cutout_etl.steps import sky
from cutout_etl.steps.split import assign_splits
from cutout_etl.verify import verify

from .conftest import class_tables, lower_case_names, make_table, write_class_files, write_table

ARCSEC = 1 / 3600


def sky_files(tmp_path, tweak=None):
    """Three class files on the equator, 36 arcsec apart; `tweak(tables)` plants cases."""
    tables = class_tables(starts=(0, 100, 200), seeds=(0, 0, 0))
    if tweak:
        tweak(tables)
    return write_class_files(tmp_path, tables, lower_case_names(".h5"))


def place(table, row, ra, dec=0.0):
    table["RAJ2000"][row], table["DECJ2000"][row] = ra, dec


def test_same_object_under_two_ids_is_kept_once_and_reported(tmp_path):
    def twin(tables):  # QSO row 5 sits 0.3 arcsec from QSO row 4, under another ID
        place(tables["QSO"], 5, tables["QSO"]["RAJ2000"][4] + 0.3 * ARCSEC)

    metadata = pipeline.build(sky_files(tmp_path, twin), tmp_path / "out.h5")
    report = metadata["report"]
    assert report["dropped"]["duplicate_position"] == 1
    assert report["duplicate_positions"]["same_label_groups"] == 1
    assert report["duplicate_positions"]["examples"] == ["OBJ J00000104"]  # the smallest ID is kept
    ids = {bytes(i) for s in ("train", "val", "test") for i in open_dataset(tmp_path / "out.h5")[s].read()["ID"]}
    assert b"OBJ J00000104" in ids and b"OBJ J00000105" not in ids


def test_one_position_two_labels_is_refused_or_dropped(tmp_path):
    def clash(tables):  # a STAR 0.3 arcsec from GALAXY row 3
        place(tables["STAR"], 0, tables["GALAXY"]["RAJ2000"][3] + 0.3 * ARCSEC)

    files = sky_files(tmp_path, clash)
    with pytest.raises(
        LabelConflictError,
        match=r"^1 objects within 1 arcsec of another carry conflicting labels: 'OBJ J00000003' \(GALAXY in 'OBJ J00000003' \(galaxy.h5 row 3\), STAR in 'OBJ J00000200' \(star.h5 row 0\)\)",
    ):
        pipeline.build(files, tmp_path / "out.h5")
    dropped = pipeline.build(files, tmp_path / "out.h5", merge_options=pipeline.MergeOptions(on_conflict="drop"))
    assert dropped["report"]["dropped"]["conflicting_position"] == 2


def test_close_pair_shares_a_split(tmp_path):
    def pairs(tables):  # every GALAXY 3 arcsec from a STAR: they share pixels
        for row in range(20):
            place(tables["STAR"], row, tables["GALAXY"]["RAJ2000"][row] + 3 * ARCSEC)

    metadata = pipeline.build(sky_files(tmp_path, pairs), tmp_path / "out.h5")
    assert metadata["report"]["rows_kept"] == 60  # 3 arcsec is no duplicate
    assert metadata["split"]["groups_of_several_rows"] == 20
    where = {}
    with open_dataset(tmp_path / "out.h5") as ds:
        for s in ds.splits:
            for i in ds[s].read()["ID"]:
                where[int(bytes(i)[-8:])] = s
    assert all(where[row] == where[200 + row] for row in range(20))
    assert verify(tmp_path / "out.h5")["ok"]


def test_sky_cells_never_straddle_splits_and_keep_class_fractions(tmp_path):
    rng = np.random.default_rng(0)

    def spread(tables):  # 60 x 20 objects per class over a 20 x 6 degree patch
        for t in tables.values():
            t["RAJ2000"] = rng.uniform(150, 170, len(t))
            t["DECJ2000"] = rng.uniform(-3, 3, len(t))

    files = []
    for k in range(20):  # many small files: 400 objects per class
        tables = {
            "GALAXY": make_table(20, b"GALAXY", 1000 * k),
            "QSO": make_table(20, b"QSO", 1000 * k + 300),
            "STAR": make_table(20, b"STAR", 1000 * k + 600),
        }
        spread(tables)
        files += [write_table(t, tmp_path / f"{name}{k}.h5") for name, t in tables.items()]
    options = pipeline.SplitOptions(group_by="sky", cell_deg=0.5)
    metadata = pipeline.build(files, tmp_path / "out.h5", split_options=options)
    split = metadata["split"]
    assert split["group_by"] == "sky" and split["within_tolerance"], split["achieved_fractions"]
    assert split["max_fraction_deviation"] <= 0.02
    cells = {}
    with open_dataset(tmp_path / "out.h5") as ds:
        for s in ds.splits:
            rows = ds[s].read()
            for cell in sky.sky_cells(rows["RAJ2000"], rows["DECJ2000"], 0.5):
                cells.setdefault(int(cell), set()).add(s)
    assert len(cells) > 100 and all(len(where) == 1 for where in cells.values())


@st.composite
def clustered_sky(draw):
    """Points in clumps: many pairs closer than 5 arcsec, some chains."""
    n_clumps = draw(st.integers(5, 40))
    centres = [(draw(st.floats(0, 359)), draw(st.floats(-60, 60))) for _ in range(n_clumps)]
    ra, dec = [], []
    for c_ra, c_dec in centres:
        for _ in range(draw(st.integers(1, 6))):
            ra.append(c_ra + draw(st.floats(-8, 8)) * ARCSEC)
            dec.append(c_dec + draw(st.floats(-8, 8)) * ARCSEC)
    return np.array(ra), np.array(dec)


@settings(max_examples=60, deadline=None)
@given(clustered_sky(), st.integers(0, 2**31), st.sampled_from([(0.7, 0.15, 0.15), (0.5, 0.25, 0.25)]))
def test_no_pair_closer_than_the_group_radius_is_split(positions, seed, fractions):
    ra, dec = positions
    n = len(ra)
    ids = np.array([f"J{i:06d}".encode() for i in range(n)])
    codes = (np.arange(n) % 3).astype(np.int16)
    if min(np.bincount(codes, minlength=3)) < 3:
        return
    radius = 5.09
    groups = sky.components(n, sky.pairs_within(ra, dec, radius))
    plan = assign_splits(ids, codes, ["A", "B", "C"], fractions, seed, groups)
    pairs = sky.pairs_within(ra, dec, radius)
    assert np.all(plan.split[pairs[:, 0]] == plan.split[pairs[:, 1]])
    assert np.all(plan.split >= 0)


def test_pairs_within_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    ra = rng.uniform(10, 10.01, 400)
    dec = rng.uniform(-0.005, 0.005, 400)
    found = {tuple(p) for p in sky.pairs_within(ra, dec, 5.0)}
    i, j = np.triu_indices(400, 1)
    brute = {(a, b) for a, b, d in zip(i, j, sky.separation_arcsec(ra[i], dec[i], ra[j], dec[j])) if d <= 5.0}
    assert found == brute and len(brute) > 50


def test_inspect_reports_positions(tmp_path):
    def planted(tables):
        place(tables["QSO"], 5, tables["QSO"]["RAJ2000"][4] + 0.3 * ARCSEC)  # duplicate, one label
        place(tables["STAR"], 0, tables["GALAXY"]["RAJ2000"][3] + 0.3 * ARCSEC)  # duplicate, two labels
        place(tables["STAR"], 1, tables["GALAXY"]["RAJ2000"][7] + 3 * ARCSEC)  # neighbours

    result = CliRunner().invoke(app, ["inspect", *map(str, sky_files(tmp_path, planted)), "--json"])
    report = json.loads(result.stdout)
    assert report["positions"]["duplicate_groups_same_label"] == 1
    assert report["positions"]["duplicate_groups_conflicting"] == 1
    assert report["positions"]["neighbour_groups"] == 3 and report["positions"]["largest_neighbour_group"] == 2
    messages = [p["message"] for p in report["problems"]]
    assert any(m.startswith("objects within 1 arcsec of another with a different label") for m in messages)


def test_verify_catches_neighbours_in_two_splits(tmp_path):
    def pairs(tables):
        for row in range(20):
            place(tables["STAR"], row, tables["GALAXY"]["RAJ2000"][row] + 3 * ARCSEC)

    out = tmp_path / "out.h5"
    pipeline.build(sky_files(tmp_path, pairs), out, split_options=pipeline.SplitOptions(group_radius=0))
    import h5py

    with h5py.File(out, "r+") as f:  # claim a 5.09 arcsec grouping that the split did not honour
        meta = json.loads(f.attrs["cutout_etl"])
        meta["split"]["group_radius_arcsec"] = 5.09
        f.attrs["cutout_etl"] = json.dumps(meta)
    failures = verify(out)["failures"]
    assert any("pairs of neighbours within 5.09 arcsec are in different splits" in f for f in failures)
