"""A participant's own data file, parsed strictly and checked against a task's schema.

Two forms hold the same table:

CSV
    A header row, then one example per line: the feature columns first and a
    final column named ``label`` -- a whole class number ``0 .. C-1`` for a
    classify task, any number for a regress task. Cells are plain decimal
    numbers (``1.5``, ``-2e-3``; a cell may be wrapped in double quotes).
    Blank lines are skipped. A price-series task (``window`` > 0, the stock
    example) reads ``date,close`` rows instead (:func:`ml.datasets.parse_price_csv`)
    and builds its windowed examples from them.
``.npz``
    numpy's archive with exactly the arrays ``X`` (n x d numbers) and ``y``
    (n numbers), and optionally ``features`` (d column names as a string
    array). Loaded with ``allow_pickle=False``: no object array is ever built.

Every problem is a :class:`DataFileError` that says where it is (the line
and column of a CSV, the row and column of an array) and what is wrong: a
missing label, a cell that is not a number, a row of the wrong width, a NaN
or infinity, a class out of the task's range, a column name other than the
task's. The message ends with what to do about it where that is not obvious.

Nothing here touches a file: the node reads the bytes and passes them in
(``node/datafile.py`` keeps them encrypted and follows appended rows).
:func:`infer_spec` turns a table into a first task for it: what
``gradchain task init`` writes.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.datasets import latest_returns, parse_price_csv, price_examples
from ml.tasks import LABEL_COLUMN, MAX_NAME_LEN, TaskSpec

NPZ_ARRAYS = frozenset({"X", "y"})
NPZ_OPTIONAL = frozenset({"features"})
# A label column with at most this many whole, non-negative values is read as
# classes; more (or any fraction or negative value) makes the task a regression.
MAX_INFERRED_CLASSES = 100
# Characters a number cell may hold (Python's float() also takes '_', 'nan', 'inf').
_NUMBER_CHARS = frozenset("0123456789+-.eE")
# A column whose values never vary keeps scale 1, so it does not divide by zero.
CONSTANT_COLUMN_SCALE = 1.0


class DataFileError(ValueError):
    """A data file that does not fit the task; ``line``/``column`` say where (1-based, or None)."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Table:
    """Examples read from a data file: X float32 ``(n, d)``; y int64 (classes) or float32 (values)."""

    X: NDArray[np.float32]
    y: NDArray[np.generic]
    features: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


# -- CSV -------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    """Split one CSV line on commas; strip spaces and one pair of surrounding double quotes."""
    out = []
    for raw in line.split(","):
        cell = raw.strip()
        if len(cell) >= 2 and cell[0] == cell[-1] == '"':
            cell = cell[1:-1].strip()
        out.append(cell)
    return out


def _where(line: int, column: int, names: tuple[str, ...]) -> str:
    name = names[column - 1] if column - 1 < len(names) else ""
    return f"line {line}, column {column}" + (f" ({name!r})" if name else "")


def parse_number(cell: str, line: int, column: int, names: tuple[str, ...]) -> float:
    """One cell as a finite float, or a :class:`DataFileError` saying where and why."""
    where = _where(line, column, names)
    if cell == "":
        what = "the label is missing" if names and column == len(names) else "the cell is empty (a missing value)"
        raise DataFileError(f"{where}: {what}; every row needs a number in every column", line=line, column=column)
    if not set(cell) <= _NUMBER_CHARS:
        lowered = cell.lower()
        if lowered.lstrip("+-") in ("nan", "inf", "infinity"):
            raise DataFileError(f"{where}: {cell!r} is not a finite number (NaN and infinity are not data)",
                                line=line, column=column)
        raise DataFileError(f"{where}: {cell!r} is not a number", line=line, column=column)
    try:
        value = float(cell)
    except ValueError:
        raise DataFileError(f"{where}: {cell!r} is not a number", line=line, column=column) from None
    if not math.isfinite(value):
        raise DataFileError(f"{where}: {cell!r} overflows (not a finite number)", line=line, column=column)
    return value


def parse_header(line: str, spec: TaskSpec | None, *, lineno: int = 1) -> tuple[str, ...]:
    """The column names of a CSV header, checked against ``spec`` (its width and its ``features``)."""
    names = tuple(_cells(line))
    if not names or names[-1] != LABEL_COLUMN:
        last = names[-1] if names else ""
        hint = " (is the header row missing?)" if _looks_numeric(last) else ""
        raise DataFileError(
            f"line {lineno}: the last column must be named {LABEL_COLUMN!r}, got {last!r}{hint}; "
            "put the feature columns first and the label last",
            line=lineno, column=len(names),
        )
    for column, name in enumerate(names[:-1], start=1):
        if not name or len(name) > MAX_NAME_LEN or name == LABEL_COLUMN:
            raise DataFileError(
                f"line {lineno}, column {column}: column name {name!r} must be 1-{MAX_NAME_LEN} "
                f"characters and not {LABEL_COLUMN!r}",
                line=lineno, column=column,
            )
    if len(set(names)) != len(names):
        raise DataFileError(f"line {lineno}: column names repeat: {list(names)}", line=lineno)
    if spec is not None:
        _check_features(names[:-1], len(names) - 1, spec, lambda c: _where(lineno, c, names), lineno)
    return names


def _looks_numeric(cell: str) -> bool:
    return bool(cell) and set(cell) <= _NUMBER_CHARS


def _check_features(
    names: tuple[str, ...] | None, width: int, spec: TaskSpec, where: Callable[[int], str], line: int | None
) -> None:
    """The file's feature columns against the task: their count, and their names if both have names."""
    if width != spec.input_dim:
        raise DataFileError(
            f"the file has {width} feature column(s); task {spec.name!r} takes {spec.input_dim} "
            f"(then {LABEL_COLUMN!r})",
            line=line,
        )
    if names and spec.features:
        for column, (got, want) in enumerate(zip(names, spec.features, strict=True), start=1):
            if got != want:
                raise DataFileError(
                    f"{where(column)}: column {got!r} where task {spec.name!r} has {want!r}; "
                    "the columns must be the task's, in its order",
                    line=line, column=column,
                )


def parse_matrix(
    lines: list[str], names: tuple[str, ...], *, first_line: int
) -> tuple[NDArray[np.float64], list[int]]:
    """Every non-blank line as a row of ``len(names)`` finite numbers, and each row's line number."""
    width = len(names)
    labelled = names[-1] == LABEL_COLUMN
    rows: list[list[float]] = []
    linenos: list[int] = []
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        lineno = first_line + offset
        cells = _cells(line)
        if len(cells) != width:
            what = f"{width - 1} features and {LABEL_COLUMN!r}" if labelled else "one per column"
            missing = " (is the label missing?)" if labelled and len(cells) == width - 1 else ""
            raise DataFileError(
                f"line {lineno}: {len(cells)} values, expected {width} ({what}){missing}",
                line=lineno, column=min(len(cells), width) + 1,
            )
        rows.append([parse_number(cell, lineno, c, names) for c, cell in enumerate(cells, start=1)])
        linenos.append(lineno)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width), linenos


def parse_rows(
    lines: list[str], names: tuple[str, ...], spec: TaskSpec | None, *, first_line: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Data rows (no header) as float64 ``(X, labels)``; ``first_line`` numbers ``lines[0]``.

    Checks the width of every row, that every cell is a finite number and,
    given a task, that every label is one of its classes.
    """
    width = len(names)
    data, linenos = parse_matrix(lines, names, first_line=first_line)
    labels = data[:, -1].copy()
    if spec is not None:
        check_labels(labels, spec, lambda i: linenos[i], column=width, unit="line")
    return data[:, :-1], labels


def check_labels(
    labels: NDArray[np.float64], spec: TaskSpec, line_of: Callable[[int], int], *, column: int, unit: str
) -> None:
    """Labels fit the task: whole classes in ``0 .. C-1`` for classify; anything finite for regress."""
    if spec.head != "classify" or labels.size == 0:
        return
    bad = np.flatnonzero((labels != np.floor(labels)) | (labels < 0) | (labels >= spec.output_dim))
    if bad.size:
        i = int(bad[0])
        line = line_of(i)
        value = float(labels[i])
        shown = int(value) if value == math.floor(value) else value
        raise DataFileError(
            f"{unit} {line}, column {column} ({LABEL_COLUMN!r}): class {shown} is not one of "
            f"task {spec.name!r}'s classes 0..{spec.output_dim - 1}",
            line=line, column=column,
        )


def _table(X: NDArray[np.float64], labels: NDArray[np.float64], names: tuple[str, ...], spec: TaskSpec | None) -> Table:
    regress = spec is not None and spec.head == "regress"
    y = labels.astype(np.float32) if regress or not _whole(labels) else labels.astype(np.int64)
    return Table(X.astype(np.float32), y, names)


def _whole(labels: NDArray[np.float64]) -> bool:
    return bool(np.all(labels == np.floor(labels)))


def parse_csv(text: str, spec: TaskSpec | None = None) -> Table:
    """A whole CSV file (header first) as a :class:`Table`, checked against ``spec`` if given.

    With ``spec`` None (``task init``) only the form is checked; labels that
    are all whole numbers come back as int64, otherwise float32. A
    price-series ``spec`` reads ``date,close`` rows into windowed examples.

    Raises
    ------
    DataFileError
        Naming the line and column of the first problem.
    """
    if spec is not None and spec.window > 0:
        return price_table(text, spec)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise DataFileError("the file is empty; it needs a header row and at least one example")
    names = parse_header(lines[start], spec, lineno=start + 1)
    X, labels = parse_rows(lines[start + 1 :], names, spec, first_line=start + 2)
    if X.shape[0] == 0:
        raise DataFileError("the file has a header but no example rows", line=start + 1)
    return _table(X, labels, names[:-1], spec)


def price_table(text: str, spec: TaskSpec) -> Table:
    """A ``date,close`` CSV as the windowed examples of a price-series task."""
    try:
        closes = parse_price_csv(text)
    except ValueError as exc:
        raise DataFileError(str(exc)) from None
    X, y = price_examples(closes, spec.window)
    return Table(X, y)


def parse_inputs(blob: bytes, spec: TaskSpec, *, npz: bool) -> tuple[NDArray[np.float32], NDArray[np.generic] | None]:
    """Rows to predict: the task's feature columns, with or without the ``label`` column.

    With labels (a data file, an evaluation set) they come back too, to
    score the predictions; without, None. A price-series task takes a
    ``date,close`` file and predicts the day after its last close.
    """
    if spec.window > 0:
        try:
            closes = parse_price_csv(_text(blob))
            return latest_returns(closes, spec.window)[None, :], None
        except ValueError as exc:
            raise DataFileError(str(exc)) from None
    if npz:
        return _npz_inputs(blob, spec)
    lines = _text(blob).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        raise DataFileError("the file is empty; it needs a header row and rows of features")
    names = tuple(_cells(lines[start]))
    if names[-1] == LABEL_COLUMN:
        table = parse_csv(_text(blob), spec)
        return table.X, table.y
    _check_features(names, len(names), spec, lambda c: _where(start + 1, c, names), start + 1)
    data, _ = parse_matrix(lines[start + 1 :], names, first_line=start + 2)
    if data.shape[0] == 0:
        raise DataFileError("the file has a header but no rows", line=start + 1)
    return data.astype(np.float32), None


def _npz_inputs(blob: bytes, spec: TaskSpec) -> tuple[NDArray[np.float32], NDArray[np.generic] | None]:
    """An ``.npz`` with ``X`` alone (rows to predict), or a whole data file (``X`` and ``y``)."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            X = archive["X"] if set(archive.files) == {"X"} else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFileError(f"not a readable .npz archive ({exc}); save it with numpy.savez") from None
    if X is None:
        table = parse_npz(blob, spec)
        return table.X, table.y
    if X.ndim != 2 or X.shape[1] != spec.input_dim or X.dtype.kind not in "iuf" or X.shape[0] == 0:
        raise DataFileError(f"'X' must be (n >= 1, {spec.input_dim}) numbers, got {X.dtype} {X.shape}")
    if not np.all(np.isfinite(X)):
        row, col = (int(v) + 1 for v in np.argwhere(~np.isfinite(X))[0])
        raise DataFileError(f"array 'X' row {row}, column {col}: not a finite number (NaN or infinity)")
    return X.astype(np.float32), None


def _text(blob: bytes) -> str:
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"the CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


# -- npz -------------------------------------------------------------------------------------


def parse_npz(blob: bytes, spec: TaskSpec | None = None) -> Table:
    """An ``.npz`` archive (arrays ``X``, ``y`` and optional ``features``) as a :class:`Table`."""
    if spec is not None and spec.window > 0:
        raise DataFileError(f"task {spec.name!r} is a price series: give it a date,close CSV, not .npz")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            keys = set(archive.files)
            if not NPZ_ARRAYS <= keys or not keys <= NPZ_ARRAYS | NPZ_OPTIONAL:
                raise DataFileError(
                    f"the .npz holds arrays {sorted(keys)}; it needs exactly 'X' and 'y' "
                    "(and optionally 'features')"
                )
            X = archive["X"]
            y = archive["y"]
            names = archive["features"] if "features" in keys else None
    except DataFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFileError(f"not a readable .npz archive ({exc}); save it with numpy.savez") from None
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise DataFileError(f"'X' must be (n, d) and 'y' (n,) with n >= 1, got {X.shape} and {y.shape}")
    for array, label in ((X, "X"), (y, "y")):
        if array.dtype.kind not in "iuf":
            raise DataFileError(f"array {label!r} holds {array.dtype}, not numbers")
    features: tuple[str, ...] = ()
    if names is not None:
        if names.dtype.kind != "U" or names.shape != (X.shape[1],):
            raise DataFileError(f"'features' must be {X.shape[1]} strings, got {names.dtype} {names.shape}")
        features = tuple(str(n) for n in names)
    Xf = X.astype(np.float64)
    labels = y.astype(np.float64)
    for array, label in ((Xf, "X"), (labels, "y")):
        bad = np.argwhere(~np.isfinite(array.reshape(array.shape[0], -1)))
        if bad.size:
            row, col = (int(v) + 1 for v in bad[0])
            raise DataFileError(f"array {label!r} row {row}, column {col}: not a finite number (NaN or infinity)",
                                line=row, column=col)
    if spec is not None:
        _check_features(features, Xf.shape[1], spec, lambda c: f"'features' entry {c}", None)
        check_labels(labels, spec, lambda i: i + 1, column=1, unit="array 'y' row")
    return _table(Xf, labels, features, spec)


def parse_data(blob: bytes, spec: TaskSpec | None = None, *, npz: bool) -> Table:
    """A data file's bytes as a :class:`Table`: ``.npz`` if ``npz``, else UTF-8 CSV text."""
    if npz:
        return parse_npz(blob, spec)
    return parse_csv(_text(blob), spec)


# -- a first task for a table ----------------------------------------------------------------


def infer_head(labels: NDArray[np.generic]) -> tuple[str, int]:
    """``("classify", C)`` when the labels are whole numbers ``0 .. C-1`` with ``C <= 100``,
    else ``("regress", 1)``; a label column with a single value is an error."""
    values = np.asarray(labels, dtype=np.float64)
    if values.size == 0 or values.min() == values.max():
        raise DataFileError(
            f"every {LABEL_COLUMN!r} in the file is the same ({values[0] if values.size else 'none'}); "
            "a task needs labels that differ (two classes or more, or varying values)"
        )
    if _whole(values) and values.min() >= 0 and values.max() < MAX_INFERRED_CLASSES:
        return "classify", int(values.max()) + 1
    return "regress", 1


def column_stats(X: NDArray[np.floating]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-column mean and standard deviation, rounded to float32 (how the model applies them)."""
    data = np.asarray(X, dtype=np.float64)
    mean = data.mean(axis=0).astype(np.float32)
    std = data.std(axis=0).astype(np.float32)
    std = np.where(std >= np.finfo(np.float32).tiny, std, np.float32(CONSTANT_COLUMN_SCALE))
    return _f32_tuple(mean), _f32_tuple(std)


def _f32_tuple(values: NDArray[np.floating]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float32))


@dataclass(frozen=True)
class FirstRunDefaults:
    """What ``gradchain task init`` puts in a new task besides what the data decides.

    A linear model (softmax regression, or linear regression for a regress
    head) on standardised inputs: it trains from any scale of columns and
    cannot overfit a small table the way a wide network does. The rest
    matches the built-in tasks: the median with ``f`` 1 needs three updates
    a block, which a three-node testnet gives. ``norm_bound`` is measured on
    standardised tables (docs/tasks.md).
    """

    model: str = "softmax"
    init_seed: int = 1
    lr: float = 0.1
    local_steps: int = 20
    batch_size: int = 32
    server_lr: float = 1.0
    rule: str = "median"
    f: int = 1
    norm_bound: float = 10.0
    max_updates_per_block: int = 4
    # A deployed task pays these from its bounty at each round's end (the miner
    # of the round's last block, each counted update), so they are small: a
    # round of three participants costs about 5.8 M, and twenty rounds
    # (``gradchain task deploy``'s default bounty) a few genesis block rewards.
    block_reward: int = 1_000_000
    contributor_reward: int = 100_000
    target_block_time_s: int = 5
    # rounds and bonds as digits has them (docs/DESIGN-NOTES.md); a user task has no
    # committed validation set, so no round gate, hence the vote rule of 16-block rounds
    # measured best without one
    round_blocks: int = 16
    vote_rule: str = "lowclip+median"
    bond_amount: int = 1_000_000
    bond_maturity: int = 4
    unbond_delay: int = 32


def infer_spec(
    table: Table, *, name: str, head: str | None = None, defaults: FirstRunDefaults = FirstRunDefaults()
) -> TaskSpec:
    """A complete, valid task for ``table``: what ``gradchain task init`` writes.

    The data decides the feature count and names, the head and classes
    (:func:`infer_head`, unless ``head`` says), and the standardisation of
    the inputs (and of a regression's label); ``defaults`` the rest.

    Raises
    ------
    DataFileError
        If ``head`` is ``classify`` but the labels are not whole classes.
    """
    inferred, classes = infer_head(table.y)
    if head is None:
        head = inferred
    elif head == "classify" and inferred != "classify":
        raise DataFileError(
            f"the labels are not whole class numbers 0..{MAX_INFERRED_CLASSES - 1} (at least two), "
            "so they cannot be classes; use --head regress"
        )
    shift, scale = column_stats(table.X)
    label_shift, label_scale = 0.0, 1.0
    if head == "regress":
        (label_shift,), (label_scale,) = column_stats(np.asarray(table.y, dtype=np.float64)[:, None])
    return TaskSpec(
        name=name,
        model=defaults.model,
        head=head,
        input_dim=int(table.X.shape[1]),
        hidden=(),
        output_dim=classes if head == "classify" else 1,
        init_seed=defaults.init_seed,
        lr=defaults.lr,
        local_steps=defaults.local_steps,
        batch_size=defaults.batch_size,
        server_lr=defaults.server_lr,
        rule=defaults.rule,
        f=defaults.f,
        rule_params=(),
        norm_bound=defaults.norm_bound,
        max_updates_per_block=defaults.max_updates_per_block,
        block_reward=defaults.block_reward,
        contributor_reward=defaults.contributor_reward,
        target_block_time_s=defaults.target_block_time_s,
        data_seed=0,
        window=0,
        round_blocks=defaults.round_blocks,
        vote_rule=defaults.vote_rule,
        bond_amount=defaults.bond_amount,
        bond_maturity=defaults.bond_maturity,
        unbond_delay=defaults.unbond_delay,
        features=table.features,
        input_shift=shift,
        input_scale=scale,
        label_shift=label_shift,
        label_scale=label_scale,
    )
