"""A task's public evaluation set as a deploy transaction carries it, and exact figures on it."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from ml.evalset import (
    MAX_EVAL_BYTES,
    MAX_EVAL_ROWS,
    EvalSetError,
    decode_evalset,
    encode_evalset,
    evalset_digest,
    exact_figures,
)
from ml.models import init_params, predict
from ml.tasks import TaskSpec, builtin_task


def task() -> TaskSpec:
    return dataclasses.replace(builtin_task("digits"), input_dim=3, output_dim=4, name="t")


def rows(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), (np.arange(n) % 4).astype(np.float64)


def test_the_canonical_bytes_round_trip() -> None:
    X, y = rows()
    raw = encode_evalset(X, y)
    assert raw[:8] == struct.pack("<II", 6, 3) and len(raw) == 8 + 6 * 3 * 4 + 6 * 8
    got = decode_evalset(raw, task())
    assert np.array_equal(got.X, X) and np.array_equal(got.y, y) and got.rows == 6
    assert not got.X.flags.writeable
    assert evalset_digest(raw) != evalset_digest(encode_evalset(X, y[::-1].copy()))


def test_bad_sets_are_refused_with_the_reason() -> None:
    X, y = rows()
    cases = {
        "features; task 't' takes 3": encode_evalset(X[:, :2], y),
        "truncated": b"\x01",
        "cannot hold": encode_evalset(X, y)[:-1],
        "NaN or infinity": encode_evalset(np.where(X > 1, np.nan, X), y),
        "classes 0..3": encode_evalset(X, y + 1),
        f"1..{MAX_EVAL_ROWS}": struct.pack("<II", 0, 3),
    }
    for words, raw in cases.items():
        with pytest.raises(EvalSetError, match=words):
            decode_evalset(raw, task())
    with pytest.raises(EvalSetError, match="at most"):
        decode_evalset(b"\x00" * (MAX_EVAL_BYTES + 1), task())
    regress = dataclasses.replace(task(), head="regress", output_dim=1)
    assert decode_evalset(encode_evalset(X, y + 0.5), regress).rows == 6  # any finite label


def test_exact_figures_agree_with_the_models_predictions() -> None:
    spec = task()
    X, y = rows(200)
    params = init_params(spec) + np.random.default_rng(1).normal(0, 0.5, spec.param_count).astype(np.float32)
    figures = exact_figures(spec, params, decode_evalset(encode_evalset(X, y), spec))
    assert figures.correct == int(np.sum(predict(spec, params, X) == y))
    assert figures.accuracy == figures.correct / 200
    again = exact_figures(spec, params.copy(), decode_evalset(encode_evalset(X, y), spec))
    assert again.loss.hex() == figures.loss.hex()
