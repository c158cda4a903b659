"""The useful-update gate: a consensus check that an update does not make the model worse.

A task may commit a small validation set (``TaskSpec.gate_examples`` > 0).
Then every gradient update in a block must pass :func:`check_useful`: the
model the update alone would produce, ``params - server_lr * update`` (float32,
exactly as the state transition applies an aggregate), may raise the mean
validation loss by at most ``gate_tolerance`` relative to the parent model::

    loss(params - server_lr * update) <= loss(params) * (1 + gate_tolerance)

A non-finite candidate loss fails. The check runs on the parent block's
parameters, not on the update's (possibly older) base, because the parent's
model is the one the aggregate will move.

The validation set
    The first ``gate_examples`` of the task's training split, ranked by
    ``SHA-256("gradchain-gate-index-<i>")`` of their index ``i`` and then kept
    in ascending index order: a deterministic sample that spreads over a
    chronological split (stock) as well as a shuffled one (digits), and that
    depends on SHA-256 alone, not on numpy's random streams. The task commits
    the digest of the set (``gate_data_sha256``, see :func:`gate_digest`);
    :func:`committed_gate_set` refuses a set with another digest, so a node
    whose sklearn copy or split drifted stops with a clear error instead of
    forking. The node loads the split (:func:`ml.datasets.load_gate_set`)
    and hands the set to consensus; nothing here reads a file.

Bit-reproducible loss
    :func:`validation_loss` is a numba loop compiled with ``fastmath=False``
    that uses only IEEE-754 ``+ - * /`` (each correctly rounded) in a fixed
    order: per example, each output unit is ``b_j + sum_i h_i * W_ij`` summed
    over ``i = 0 .. fan_in-1`` in float64, hidden units pass through ReLU, and
    the per-example losses are added in example order and divided by ``n``.
    Cross-entropy needs ``exp`` and ``log``, and platform libms round those
    differently in the last bit, so both are written here from the same basic
    operations (:func:`_exp`, :func:`_log`: range reduction by powers of two,
    which is exact, and a fixed polynomial). No BLAS, no ``np.sum``, no
    threads: the result has the same bits on every machine.

ml never imports consensus; ``consensus/transition.py`` maps
:attr:`UpdateProblem.NOT_USEFUL` to ``Reject.UPDATE_NOT_USEFUL``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from ml.checks import UpdateCheckError, UpdateProblem
from ml.models import standardise_inputs, standardise_targets
from ml.tasks import TaskSpec

__all__ = [
    "GateSet",
    "check_useful",
    "committed_gate_set",
    "gate_digest",
    "gate_indices",
    "validation_loss",
]

GATE_DOMAIN = b"gradchain-gate-v1"  # prefix of the committed digest
_INDEX_DOMAIN = b"gradchain-gate-index-%d"  # what each training index is ranked by
_HEAD_CLASSIFY = 0
_HEAD_REGRESS = 1

# exp/log from basic operations. LN2_HI has 32 significant bits, so k * LN2_HI
# is exact for |k| < 2**21; LN2_LO carries the rest of ln 2 (fdlibm's split).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_EXP_UNDERFLOW = -745.2  # below this exp(x) is 0 in float64
_EXP_OVERFLOW = 709.7  # above this exp(x) is inf in float64
_EXP_TERMS = 14  # Taylor terms for |r| <= ln2 / 2: the last is < 1e-20
_LOG_TERMS = 12  # atanh-series terms for s^2 <= 0.0295: the last is < 1e-19
_SQRT_HALF = 0.70710678118654752440


@numba.njit(cache=True, fastmath=False, nogil=True)
def _exp(x: float) -> float:  # pragma: no cover - compiled
    """``e**x`` from ``+ - * /`` and an exact scaling by ``2**k``."""
    if x != x:
        return x
    if x < _EXP_UNDERFLOW:
        return 0.0
    if x > _EXP_OVERFLOW:
        return math.inf
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    term = 1.0
    total = 1.0
    for i in range(1, _EXP_TERMS + 1):
        term = term * r / i
        total += term
    return math.ldexp(total, int(k))


@numba.njit(cache=True, fastmath=False, nogil=True)
def _log(x: float) -> float:  # pragma: no cover - compiled
    """Natural log of ``x > 0``: ``x = m * 2**e`` exactly, then ``2 atanh((m-1)/(m+1))``."""
    if x != x or x < 0.0:
        return math.nan
    if x == 0.0:
        return -math.inf
    if x == math.inf:
        return x
    m, e = math.frexp(x)  # m in [0.5, 1)
    if m < _SQRT_HALF:
        m = m * 2.0
        e -= 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    power = s
    series = 0.0
    for i in range(_LOG_TERMS):
        series += power / (2 * i + 1)
        power = power * s2
    return (e * _LN2_HI + 2.0 * series) + e * _LN2_LO


@numba.njit(cache=True, fastmath=False, nogil=True)
def _mean_loss(
    params: npt.NDArray[np.float32],
    sizes: npt.NDArray[np.int64],
    head: int,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.float64],
) -> tuple[float, int]:  # pragma: no cover - compiled
    """The mean loss and, for a classify head, how many examples the model gets right.

    A prediction is the first class of highest logit (ties go to the lowest
    index), so the count is as reproducible as the loss.
    """
    n = X.shape[0]
    correct = 0
    width = 0
    for s in sizes:
        width = max(width, s)
    h = np.empty(width, dtype=np.float64)
    z = np.empty(width, dtype=np.float64)
    n_layers = sizes.shape[0] - 1
    total = 0.0
    for ex in range(n):
        for i in range(sizes[0]):
            h[i] = np.float64(X[ex, i])
        offset = 0
        for layer in range(n_layers):
            fan_in = sizes[layer]
            fan_out = sizes[layer + 1]
            bias = offset + fan_in * fan_out
            for j in range(fan_out):
                acc = np.float64(params[bias + j])
                for i in range(fan_in):
                    acc += h[i] * np.float64(params[offset + i * fan_out + j])
                z[j] = acc
            offset = bias + fan_out
            if layer < n_layers - 1:
                for j in range(fan_out):
                    h[j] = z[j] if z[j] > 0.0 else 0.0
        out = sizes[n_layers]
        if head == _HEAD_CLASSIFY:
            top = z[0]
            best = 0
            for j in range(1, out):
                if z[j] > top:
                    top = z[j]
                    best = j
            if best == int(y[ex]):
                correct += 1
            norm = 0.0
            for j in range(out):
                norm += _exp(z[j] - top)
            total += _log(norm) - (z[int(y[ex])] - top)
        else:
            resid = z[0] - y[ex]
            total += resid * resid
    mean: float = total / n
    return mean, correct


@dataclass(frozen=True)
class GateSet:
    """A task's committed validation set: float32 inputs, float64 targets (labels as whole floats)."""

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float64]


def _sizes(spec: TaskSpec) -> npt.NDArray[np.int64]:
    return np.asarray(spec.layer_sizes, dtype=np.int64)


def validation_loss(
    spec: TaskSpec, params: npt.NDArray[np.floating], X: npt.NDArray[np.floating], y: npt.NDArray[np.generic]
) -> float:
    """Mean loss of ``params`` on ``(X, y)``, with the same bits on every machine (see :func:`validation_figures`)."""
    return validation_figures(spec, params, X, y)[0]


def validation_figures(
    spec: TaskSpec, params: npt.NDArray[np.floating], X: npt.NDArray[np.floating], y: npt.NDArray[np.generic]
) -> tuple[float, int]:
    """Mean loss of ``params`` on ``(X, y)`` and the examples it classifies right, the same everywhere.

    Cross-entropy for a classify head, squared error for a regress head, as
    :func:`ml.models.loss_and_grad` computes them, but in the fixed-order
    float64 loop described in the module docstring (parameters and inputs are
    float32 and widen exactly). The count is of examples whose first
    highest-logit class is the label (0 for a regress head): the accuracy a
    target on a task's evaluation set can be stated in.

    Raises
    ------
    ValueError
        If the shapes do not fit the task, the set is empty, or a label is out of range.
    """
    flat = np.ascontiguousarray(params, dtype=np.float32).reshape(-1)
    if flat.shape[0] != spec.param_count:
        raise ValueError(f"params must have {spec.param_count} values, got {flat.shape[0]}")
    inputs = np.ascontiguousarray(X, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != spec.input_dim or inputs.shape[0] == 0:
        raise ValueError(f"X must have shape (n >= 1, {spec.input_dim}), got {inputs.shape}")
    inputs = np.ascontiguousarray(standardise_inputs(spec, inputs), dtype=np.float32)
    targets = np.ascontiguousarray(standardise_targets(spec, y), dtype=np.float64).reshape(-1)
    if targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"y must have {inputs.shape[0]} values, got {targets.shape[0]}")
    head = _HEAD_CLASSIFY if spec.head == "classify" else _HEAD_REGRESS
    if head == _HEAD_CLASSIFY and not bool(
        np.all((targets >= 0) & (targets < spec.output_dim) & (targets == np.floor(targets)))
    ):
        raise ValueError(f"labels must be whole numbers in [0, {spec.output_dim - 1}]")
    loss, correct = _mean_loss(flat, _sizes(spec), head, inputs, targets)
    return float(loss), int(correct)


def candidate_params(
    spec: TaskSpec, params: npt.NDArray[np.float32], update: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``params - server_lr * update`` in float32, elementwise, as the transition applies a step."""
    step = np.float32(spec.server_lr) * np.asarray(update, dtype=np.float32)
    return (np.asarray(params, dtype=np.float32) - step).astype(np.float32, copy=False)


def check_useful(
    spec: TaskSpec,
    params: npt.NDArray[np.float32],
    update: npt.NDArray[np.float32],
    X: npt.NDArray[np.floating],
    y: npt.NDArray[np.generic],
    base_loss: float,
) -> None:
    """Refuse an update whose step raises the validation loss past the task's tolerance.

    ``base_loss`` is :func:`validation_loss` of ``params`` (computed once per
    block by the caller). The comparison is written so that a NaN candidate
    loss fails.

    Raises
    ------
    UpdateCheckError
        ``UpdateProblem.NOT_USEFUL`` with both losses and the limit.
    """
    limit = base_loss * (1.0 + spec.gate_tolerance)
    loss = validation_loss(spec, candidate_params(spec, params, update), X, y)
    if not loss <= limit:
        raise UpdateCheckError(
            UpdateProblem.NOT_USEFUL,
            f"validation loss {loss!r} after the update exceeds {limit!r} "
            f"(parent {base_loss!r}, tolerance {spec.gate_tolerance!r})",
        )


def gate_indices(n_train: int, count: int) -> npt.NDArray[np.int64]:
    """The training indices in the gate set: ``count`` of ``range(n_train)``, ascending.

    Ranked by SHA-256 of each index so the sample depends on nothing but the hash.
    """
    if not 0 < count <= n_train:
        raise ValueError(f"the gate needs 1..{n_train} examples, the task asks for {count}")
    ranked = sorted(range(n_train), key=lambda i: hashlib.sha256(_INDEX_DOMAIN % i).digest())
    return np.asarray(sorted(ranked[:count]), dtype=np.int64)


def gate_digest(X: npt.NDArray[np.float32], y: npt.NDArray[np.float64]) -> str:
    """Hex SHA-256 of the set: domain, ``n`` and ``d`` (u32 LE), then X as f32 LE and y as f64 LE."""
    h = hashlib.sha256(GATE_DOMAIN)
    h.update(struct.pack("<II", X.shape[0], X.shape[1]))
    h.update(np.ascontiguousarray(X, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<f8").tobytes())
    return h.hexdigest()


def committed_gate_set(
    spec: TaskSpec, X_train: npt.NDArray[np.floating], y_train: npt.NDArray[np.generic]
) -> GateSet:
    """The task's gate set taken from its training split, checked against the commitment.

    The caller loads the split (the node, through :func:`ml.datasets.load_gate_set`):
    consensus reads no file. Read-only arrays, so a set shared by every check
    cannot be changed by one of them.

    Raises
    ------
    ValueError
        If the gate is off, or the sample does not hash to ``spec.gate_data_sha256``:
        this copy of the data differs and cannot validate the chain.
    """
    if spec.gate_examples == 0:
        raise ValueError(f"task {spec.name!r} has no useful-update gate")
    idx = gate_indices(X_train.shape[0], spec.gate_examples)
    X = np.ascontiguousarray(X_train[idx], dtype=np.float32)
    y = np.ascontiguousarray(np.asarray(y_train)[idx], dtype=np.float64)
    digest = gate_digest(X, y)
    if digest != spec.gate_data_sha256:
        raise ValueError(
            f"task {spec.name!r}: the gate's validation set hashes to {digest}, the task commits "
            f"{spec.gate_data_sha256}; this node's copy of the data differs and cannot validate the chain"
        )
    X.setflags(write=False)
    y.setflags(write=False)
    return GateSet(X, y)
