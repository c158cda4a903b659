"""A participant's own data file: strict CSV/npz parsing against a task's schema,
and the first task ``gradchain task init`` infers from a table."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from ml.datafile import (
    DataFileError,
    Table,
    infer_head,
    infer_spec,
    parse_csv,
    parse_data,
    parse_inputs,
    parse_npz,
)
from ml.models import standardise_inputs
from ml.tasks import TaskSpec, builtin_task

CSV = """a,b,label
1.5,-2,0
3,4e-1,2
"0.25", 7 ,1
"""


def spec3(**changes: object) -> TaskSpec:
    """A classify task over columns a, b with classes 0..2."""
    table = parse_csv(CSV)
    return dataclasses.replace(infer_spec(table, name="t"), **changes)  # type: ignore[arg-type]


def test_a_csv_becomes_float32_features_and_int_labels() -> None:
    table = parse_csv(CSV)
    assert table.features == ("a", "b")
    assert table.X.dtype == np.float32 and table.y.dtype == np.int64
    np.testing.assert_array_equal(table.X, np.array([[1.5, -2], [3, 0.4], [0.25, 7]], dtype=np.float32))
    np.testing.assert_array_equal(table.y, [0, 2, 1])
    assert parse_csv(CSV, spec3()).rows == 3


def test_blank_lines_and_a_byte_order_mark_are_fine() -> None:
    table = parse_data(("\ufeff" + CSV.replace("\n3,", "\n\n3,")).encode(), npz=False)
    assert table.rows == 3


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("a,b,label\n1,2,0\n1,2\n", 3, 3, "label missing"),
        ("a,b,label\n1,2,\n", 2, 3, "label is missing"),
        ("a,b,label\n1,x2,0\n", 2, 2, "'x2' is not a number"),
        ("a,b,label\n1,,0\n", 2, 2, "empty"),
        ("a,b,label\n1,2,0,5\n", 2, 4, "4 values, expected 3"),
        ("a,b,label\n1,nan,0\n", 2, 2, "not a finite number"),
        ("a,b,label\n1,2,0\n-inf,2,0\n", 3, 1, "not a finite number"),
        ("a,b,label\n1,1e999,0\n", 2, 2, "overflows"),
        ("a,b,label\n1,1_000,0\n", 2, 2, "not a number"),
        ("a,b,label\n1,2,3\n", 2, 3, "class 3 is not one of"),
        ("a,b,label\n1,2,1.5\n", 2, 3, "class 1.5"),
        ("a,b,label\n1,2,-1\n", 2, 3, "class -1"),
    ],
)
def test_bad_rows_are_named_by_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(DataFileError, match=words) as info:
        parse_csv(text, spec3())
    assert (info.value.line, info.value.column) == (line, column)
    assert f"line {line}" in str(info.value)


def test_the_column_name_is_in_the_message() -> None:
    with pytest.raises(DataFileError, match=r"line 2, column 2 \('b'\)"):
        parse_csv("a,b,label\n1,oops,0\n", spec3())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a,b,target\n1,2,0\n", "must be named 'label'"),
        ("1,2,0\n3,4,1\n", "header row missing"),
        ("a,a,label\n1,2,0\n", "repeat"),
        ("", "empty"),
        ("a,b,label\n", "no example rows"),
    ],
)
def test_a_bad_header_or_an_empty_file_is_refused(text: str, words: str) -> None:
    with pytest.raises(DataFileError, match=words):
        parse_csv(text)


def test_the_header_must_match_the_tasks_columns() -> None:
    with pytest.raises(DataFileError, match="1 feature column.*takes 2"):
        parse_csv("a,label\n1,0\n", spec3())
    with pytest.raises(DataFileError, match=r"column 2 .*'c' where task 't' has 'b'") as info:
        parse_csv("a,c,label\n1,2,0\n", spec3())
    assert info.value.column == 2
    # A task without column names checks only the count.
    assert parse_csv("p,q,label\n1,2,0\n", spec3(features=())).rows == 1


def test_regress_labels_stay_numbers() -> None:
    spec = infer_spec(parse_csv("a,label\n1,0.5\n2,7.25\n"), name="r")
    assert spec.head == "regress"
    table = parse_csv("a,label\n1,-3.5\n", spec)
    assert table.y.dtype == np.float32 and table.y[0] == -3.5


def test_non_utf8_text_is_refused() -> None:
    with pytest.raises(DataFileError, match="UTF-8"):
        parse_data(b"a,label\n\xff,1\n", npz=False)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_npz_holds_the_same_table() -> None:
    X = np.array([[1.5, -2], [3, 0.4]], dtype=np.float64)
    blob = npz_bytes(X=X, y=np.array([0, 2]), features=np.array(["a", "b"]))
    table = parse_npz(blob, spec3())
    np.testing.assert_array_equal(table.X, X.astype(np.float32))
    assert table.y.tolist() == [0, 2] and table.features == ("a", "b")


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"X": np.ones((2, 2))}, "exactly 'X' and 'y'"),
        ({"X": np.ones((2, 2)), "y": np.zeros(2), "z": np.zeros(1)}, "exactly 'X' and 'y'"),
        ({"X": np.ones((2, 3)), "y": np.zeros(2)}, "3 feature column"),
        ({"X": np.ones((2, 2)), "y": np.zeros(3)}, r"\(n, d\)"),
        ({"X": np.array([[1.0, np.nan], [1, 1]]), "y": np.zeros(2)}, "row 1, column 2"),
        ({"X": np.ones((2, 2)), "y": np.array([0, 5])}, "array 'y' row 2.*class 5"),
        ({"X": np.array([[1, 2]], dtype=object), "y": np.zeros(1)}, "readable"),
        ({"X": np.ones((1, 2)), "y": np.zeros(1), "features": np.array(["a", "z"])}, "'z' where"),
    ],
)
def test_bad_npz_files_are_refused(arrays: dict[str, np.ndarray], words: str) -> None:
    with pytest.raises(DataFileError, match=words):
        parse_npz(npz_bytes(**arrays), spec3())


def test_garbage_is_not_an_npz() -> None:
    with pytest.raises(DataFileError, match="not a readable .npz"):
        parse_npz(b"PK\x03\x04 but not really")


def test_a_price_series_task_reads_date_close_rows() -> None:
    stock = builtin_task("stock")
    closes = [100.0 * 1.01**i for i in range(stock.window + 6)]
    text = "date,close\n" + "".join(f"2020-01-{i + 1:02d},{c}\n" for i, c in enumerate(closes))
    table = parse_csv(text, stock)
    assert table.X.shape == (5, stock.window)
    np.testing.assert_allclose(table.y, 1.0, rtol=1e-4)
    with pytest.raises(DataFileError, match="line 3"):
        parse_csv("date,close\n2020-01-01,1\n2020-01-02,x\n", stock)
    with pytest.raises(DataFileError, match="price series"):
        parse_npz(npz_bytes(X=np.ones((1, 2)), y=np.zeros(1)), stock)


# -- the first task for a table --------------------------------------------------------------


def test_infer_head_reads_classes_or_values() -> None:
    assert infer_head(np.array([0, 2, 1, 2])) == ("classify", 3)
    assert infer_head(np.array([0.5, 1.0])) == ("regress", 1)
    assert infer_head(np.array([-1, 1])) == ("regress", 1)
    assert infer_head(np.array([0, 500])) == ("regress", 1)  # too many to be classes
    with pytest.raises(DataFileError, match="the same"):
        infer_head(np.array([1, 1, 1]))


def test_infer_spec_writes_a_complete_valid_task_that_standardises_its_inputs() -> None:
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(200, 3)) * [1.0, 1000.0, 0.001] + [0.0, 5e4, -3.0]).astype(np.float32)
    X[:, 2] = 4.0  # a constant column keeps scale 1
    table = Table(X, rng.integers(0, 4, size=200), ("x", "big", "const"))
    spec = infer_spec(table, name="mine")
    assert (spec.head, spec.output_dim, spec.input_dim, spec.features) == ("classify", 4, 3, table.features)
    assert spec.input_scale[2] == 1.0
    Z = standardise_inputs(spec, X)
    np.testing.assert_allclose(Z[:, :2].mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(Z[:, :2].std(axis=0), 1.0, atol=1e-3)
    # What task init writes reads back as the same task.
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_infer_spec_scales_a_regression_label_too() -> None:
    y = np.array([1e5, 2e5, 3e5], dtype=np.float32)
    spec = infer_spec(Table(np.eye(3, dtype=np.float32), y), name="houses")
    assert spec.head == "regress" and spec.label_shift == pytest.approx(2e5)
    assert spec.label_scale == pytest.approx(np.std([1e5, 2e5, 3e5]), rel=1e-6)
    assert spec.features == ()


def test_head_can_be_forced_to_regress_but_not_to_classify() -> None:
    table = Table(np.eye(2, dtype=np.float32), np.array([0, 1]))
    assert infer_spec(table, name="n", head="regress").head == "regress"
    with pytest.raises(DataFileError, match="regress"):
        infer_spec(Table(np.eye(2, dtype=np.float32), np.array([0.5, 1.0], dtype=np.float32)),
                   name="n", head="classify")


# -- rows to predict ---------------------------------------------------------------------------


def test_inputs_may_come_with_or_without_labels() -> None:
    spec = spec3()
    X, labels = parse_inputs(CSV.encode(), spec, npz=False)
    assert X.shape == (3, 2) and labels is not None and labels.tolist() == [0, 2, 1]
    X, labels = parse_inputs(b"a,b\n1,2\n3,4\n", spec, npz=False)
    assert labels is None and X.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(DataFileError, match=r"line 3: 1 values, expected 2 \(one per column\)"):
        parse_inputs(b"a,b\n1,2\n3\n", spec, npz=False)
    with pytest.raises(DataFileError, match="'q' where task 't' has 'b'"):
        parse_inputs(b"a,q\n1,2\n", spec, npz=False)
    X, labels = parse_inputs(npz_bytes(X=np.ones((4, 2))), spec, npz=True)
    assert X.shape == (4, 2) and labels is None
    with pytest.raises(DataFileError, match="row 2, column 1"):
        parse_inputs(npz_bytes(X=np.array([[1.0, 1.0], [np.inf, 0.0]])), spec, npz=True)
    X, labels = parse_inputs(npz_bytes(X=np.ones((2, 2)), y=np.array([1, 0])), spec, npz=True)
    assert labels is not None and labels.tolist() == [1, 0]


def test_a_price_series_forecasts_the_day_after_its_last_close() -> None:
    stock = builtin_task("stock")
    closes = [100.0 * 1.01**i for i in range(stock.window + 1)]
    text = "date,close\n" + "".join(f"2020-02-{i + 1:02d},{c}\n" for i, c in enumerate(closes))
    X, labels = parse_inputs(text.encode(), stock, npz=False)
    assert X.shape == (1, stock.window) and labels is None
    np.testing.assert_allclose(X, 1.0, rtol=1e-4)
    with pytest.raises(DataFileError, match="at least 21 closes"):
        parse_inputs(text.encode().rsplit(b"\n", 2)[0] + b"\n", stock, npz=False)
