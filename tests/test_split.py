"""The split: disjoint, covering, exactly stratified, independent of row order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutout_etl.errors import SplitError, UsageError
from cutout_etl.steps.split import assign_splits, parse_fractions, split_counts

CLASSES = ["GALAXY", "QSO", "STAR"]
FRACTIONS = st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (1.0, 0.0, 0.0), (0.34, 0.33, 0.33)])


@st.composite
def labelled_ids(draw):
    sizes = draw(st.lists(st.integers(3, 60), min_size=3, max_size=3))
    ids = np.array([f"J{i:06d}".encode() for i in range(sum(sizes))])
    codes = np.repeat(np.arange(3, dtype=np.int16), sizes)
    return ids, codes


@settings(max_examples=60, deadline=None)
@given(labelled_ids(), FRACTIONS, st.integers(0, 2**32))
def test_split_is_disjoint_covering_and_exactly_stratified(data, fractions, seed):
    ids, codes = data
    plan = assign_splits(ids, codes, CLASSES, fractions, seed)
    assert set(plan.split.tolist()) <= {0, 1, 2}
    for s, name in enumerate(("train", "val", "test")):
        members = plan.split == s
        # positions inside a split are a permutation of 0..n-1: no overlap, no gap
        assert sorted(plan.position[members].tolist()) == list(range(members.sum()))
        for code, cls in enumerate(CLASSES):
            n_class = int((codes == code).sum())
            assert plan.counts[name][cls] == split_counts(n_class, fractions)[s]
            assert int((members & (codes == code)).sum()) == plan.counts[name][cls]


@settings(max_examples=40, deadline=None)
@given(labelled_ids(), FRACTIONS, st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_split_does_not_depend_on_row_order(data, fractions, seed, rnd):
    ids, codes = data
    plan = assign_splits(ids, codes, CLASSES, fractions, seed)
    perm = np.array(rnd.sample(range(len(ids)), len(ids)))
    shuffled = assign_splits(ids[perm], codes[perm], CLASSES, fractions, seed)
    assert np.array_equal(shuffled.split, plan.split[perm])
    assert np.array_equal(shuffled.position, plan.position[perm])


def test_different_seeds_give_different_splits():
    ids = np.array([f"J{i:06d}".encode() for i in range(300)])
    codes = np.zeros(300, dtype=np.int16)
    a = assign_splits(ids, codes, CLASSES, (0.7, 0.15, 0.15), 0)
    b = assign_splits(ids, codes, CLASSES, (0.7, 0.15, 0.15), 1)
    assert not np.array_equal(a.split, b.split)


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (10, (0.7, 0.15, 0.15), [7, 2, 1]),  # remainders .5/.5: the first wins
        (100, (0.7, 0.15, 0.15), [70, 15, 15]),
        (3, (0.7, 0.15, 0.15), [1, 1, 1]),  # every non-empty split gets a row
        (7, (0.5, 0.5, 0.0), [4, 3, 0]),
    ],
)
def test_split_counts_largest_remainder(n, fractions, expected):
    assert split_counts(n, fractions) == expected
    assert sum(split_counts(n, fractions)) == n


@pytest.mark.parametrize("block", [32, 256])
def test_rows_of_each_class_are_mixed_through_the_split(block):
    """Any block of consecutive rows holds every class within two rows of its share."""
    sizes = [7000, 900, 2100]  # DESI-like balance
    ids = np.array([f"J{i:07d}".encode() for i in range(sum(sizes))])
    codes = np.repeat(np.arange(3, dtype=np.int16), sizes)
    plan = assign_splits(ids, codes, CLASSES, (0.7, 0.15, 0.15), 0)
    train = np.flatnonzero(plan.split == 0)
    in_order = codes[train[np.argsort(plan.position[train])]]
    share = np.array(sizes) / sum(sizes)
    for start in range(0, len(in_order) - block, 7):
        counts = np.bincount(in_order[start : start + block], minlength=3)
        assert np.all(np.abs(counts - share * block) <= 2), (start, counts)


def test_class_smaller_than_the_splits_is_an_error():
    ids = np.array([b"A", b"B", b"C", b"D", b"E"])
    codes = np.array([0, 0, 0, 1, 1], dtype=np.int16)
    with pytest.raises(SplitError, match="class QSO has 2 rows, fewer than the 3 non-empty splits"):
        assign_splits(ids, codes, CLASSES, (0.7, 0.15, 0.15), 0)


@pytest.mark.parametrize("bad", [(0.7, 0.2), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_fractions(bad)
