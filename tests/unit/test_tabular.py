"""Bundled tables, non-IID splits and CSV text, and a federation on them against
a centralised scikit-learn model (the issue-19 comparison, one seed, short)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.datafile import Table, infer_spec, parse_csv
from ml.datasets import Dataset
from ml.simulation import OwnData, SimConfig, run_simulation
from ml.tabular import (
    SKLEARN_TABLES,
    centralised_accuracy,
    concat,
    skew_groups,
    sklearn_table,
    split_table,
    table_csv,
)


@pytest.mark.parametrize("name", SKLEARN_TABLES)
def test_bundled_tables_load_without_a_download(name: str) -> None:
    table = sklearn_table(name)
    assert table.X.dtype == np.float32 and table.y.dtype == np.int64
    assert len(table.features) == table.X.shape[1]
    assert all(" " not in f and "," not in f for f in table.features)
    with pytest.raises(ValueError, match="wine, breast_cancer"):
        sklearn_table("iris2")


def test_a_split_deals_every_row_once_and_skews_the_labels() -> None:
    table = sklearn_table("breast_cancer")
    tagged = Table(np.arange(table.rows, dtype=np.float32)[:, None], table.y)  # row ids as the feature
    ev, parts = split_table(tagged, 3, eval_fraction=0.25, alpha=0.5, seed=0)
    ids = np.concatenate([ev.X[:, 0], *(p.X[:, 0] for p in parts)]).astype(int)
    assert sorted(ids.tolist()) == list(range(table.rows))
    assert ev.rows == pytest.approx(0.25 * table.rows, abs=1)
    assert np.mean(ev.y) == pytest.approx(np.mean(table.y), abs=0.02)  # stratified
    shares = [np.mean(p.y) for p in parts]
    assert max(shares) - min(shares) > 0.2  # non-IID: the class mix differs by node
    again = split_table(tagged, 3, eval_fraction=0.25, alpha=0.5, seed=0)[1]
    assert all(np.array_equal(a.X, b.X) for a, b in zip(parts, again, strict=True))


def test_a_regression_is_skewed_over_its_label_quartiles() -> None:
    groups = skew_groups(np.linspace(0.0, 1.0, 100, dtype=np.float32))
    assert np.bincount(groups).tolist() == [25, 25, 25, 25]


def test_csv_text_reads_back_bit_for_bit() -> None:
    table = sklearn_table("wine")
    back = parse_csv(table_csv(table))
    assert back.features == table.features
    np.testing.assert_array_equal(back.X, table.X)
    np.testing.assert_array_equal(back.y, table.y)
    reg = Table(table.X[:5], np.array([0.1, 2.5, -3.25, 1e6, 7.0], dtype=np.float32))
    np.testing.assert_array_equal(parse_csv(table_csv(reg)).y, reg.y)


def test_a_federation_on_non_iid_tables_comes_close_to_centralised_sklearn() -> None:
    """Three participants, Dirichlet(0.5) label skew, 40 blocks of the median: within 3 points.

    The full comparison (both tables, eight seeds, 100 blocks) is
    examples/tabular/compare.py; this is its smallest honest version.
    """
    ev, parts = split_table(sklearn_table("breast_cancer"), 3, eval_fraction=0.25, alpha=0.5, seed=1)
    spec = infer_spec(concat(parts), name="breast_cancer")
    own = OwnData(spec, tuple((p.X, p.y) for p in parts), Dataset("bc", ev.X[:0], ev.y[:0], ev.X, ev.y))
    result = run_simulation(SimConfig(nodes=3, rounds=40, seed=1, f=1), own_data=own)
    central = centralised_accuracy(concat(parts), ev)
    assert result.initial_metrics["accuracy"] < 0.8
    assert result.final >= central - 0.03
    with pytest.raises(ValueError, match="3 tables for 4 nodes"):
        run_simulation(SimConfig(nodes=4, rounds=1), own_data=own)
