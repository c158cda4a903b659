"""Tables for trying gradchain on data of one's own: bundled examples, non-IID splits, CSV text.

``wine`` and ``breast_cancer`` ship inside scikit-learn (no download), and
the project's built-in tasks do not use them, so they stand in for "a
user's CSV" in the README walk-through, the testnet (``--task SPEC.json
--data DIR``) and the comparison with a centralised scikit-learn model
(examples/tabular/compare.py).

:func:`split_table` deals one table out the way a federation holds it: a
held-out evaluation set (stratified for classes) and ``n`` participants
whose label mix is skewed by a Dirichlet draw per class (Hsu et al. 2019,
as :func:`ml.shards.dirichlet_owners`); a regression is skewed the same way
over the label's quartiles. No I/O: callers write the text.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ml.datafile import Table
from ml.shards import dirichlet_owners
from ml.tasks import LABEL_COLUMN

SKLEARN_TABLES = ("wine", "breast_cancer")  # the comparison's tables: data the built-in tasks do not use
EXAMPLE_TABLES = (*SKLEARN_TABLES, "digits")  # `task example` writes these; digits as a deployable task's data
# A regression is skewed over this many label quantile bins.
REGRESS_SKEW_BINS = 4
# sklearn's column names hold spaces ("mean radius"); underscores read better in a shell.
_NAME_REPLACEMENTS = {" ": "_", ",": "_", '"': ""}


def _column_name(raw: str) -> str:
    name = raw.strip()
    for old, new in _NAME_REPLACEMENTS.items():
        name = name.replace(old, new)
    return name


def sklearn_table(name: str) -> Table:
    """One of :data:`EXAMPLE_TABLES` as a :class:`Table` with scikit-learn's column names."""
    from sklearn import datasets

    loaders = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}
    if name not in loaders:
        raise ValueError(f"unknown table {name!r}; available: {', '.join(EXAMPLE_TABLES)}")
    bunch = loaders[name]()
    features = tuple(_column_name(str(n)) for n in bunch.feature_names)
    return Table(
        np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64), features
    )


def _take(table: Table, rows: NDArray[np.int64]) -> Table:
    return Table(table.X[rows], table.y[rows], table.features)


def skew_groups(y: NDArray[np.generic]) -> NDArray[np.int64]:
    """The groups a non-IID split skews over: the classes, or a regression's label quartiles."""
    if y.dtype.kind in "iu":
        return np.asarray(y, dtype=np.int64)
    values = np.asarray(y, dtype=np.float64)
    edges = np.quantile(values, np.linspace(0.0, 1.0, REGRESS_SKEW_BINS + 1)[1:-1])
    return np.searchsorted(edges, values, side="right").astype(np.int64)


def split_table(
    table: Table, n_nodes: int, *, eval_fraction: float, alpha: float, seed: int
) -> tuple[Table, list[Table]]:
    """An evaluation set and ``n_nodes`` participants' tables, label-skewed by Dirichlet(``alpha``).

    Every row lands in exactly one part; each part keeps the rows' original order.

    Raises
    ------
    ValueError
        For an ``eval_fraction`` outside (0, 1) or too few rows for the parts.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"the evaluation share must be in (0, 1), got {eval_fraction}")
    groups = skew_groups(table.y)
    rows = np.arange(table.rows)
    train_rows, eval_rows = train_test_split(
        rows, test_size=eval_fraction, stratify=groups, random_state=seed
    )
    train_rows, eval_rows = np.sort(train_rows), np.sort(eval_rows)
    owners = dirichlet_owners(groups[train_rows], n_nodes, alpha=alpha, seed=seed)
    parts = [_take(table, train_rows[owners == k]) for k in range(n_nodes)]
    return _take(table, eval_rows), parts


def table_csv(table: Table) -> str:
    """The table as CSV text: a header (feature names, or x1..xd, then ``label``), one row per example."""
    names = table.features or tuple(f"x{i}" for i in range(1, table.X.shape[1] + 1))
    lines = [",".join((*names, LABEL_COLUMN))]
    whole = table.y.dtype.kind in "iu"
    for x, label in zip(table.X, table.y, strict=True):
        # numpy prints a float32 with the fewest digits that read back as the same float32.
        cells = [str(v) for v in np.asarray(x, dtype=np.float32)]
        cells.append(str(int(label)) if whole else str(np.float32(label)))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def centralised_accuracy(train: Table, test: Table, *, seed: int = 0) -> float:
    """Test accuracy of scikit-learn's logistic regression on the standardised union of the data.

    The reference a federation is held to: the same linear model family,
    fitted centrally (L-BFGS to convergence) on every participant's rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, random_state=seed))
    model.fit(train.X, train.y)
    return float(np.mean(model.predict(test.X) == test.y))


def concat(tables: list[Table]) -> Table:
    """Rows of several tables with the same columns, in order."""
    return Table(
        np.concatenate([t.X for t in tables]), np.concatenate([t.y for t in tables]), tables[0].features
    )
