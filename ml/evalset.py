"""A task's public evaluation set, as a deploy transaction carries it, and its target.

The rows travel in the transaction itself (every node holds them, so a
figure on them can be consensus), in one canonical byte form:

    n u32 LE || d u32 LE || X as n*d float32 LE (row-major) || y as n float64 LE

Decoding checks the size caps first, then every length, then every value
(finite; whole classes ``0 .. C-1`` for a classify task) against the task,
so an evaluation set of the wrong width or with a bad label is refused with
the reason. :func:`exact_figures` scores a model on it with
:func:`ml.gate.validation_figures` (fixed-order float64, the same bits on
every machine), which is what a task's target is checked against.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ml.gate import validation_figures
from ml.tasks import TaskSpec

# Every node keeps every deployed task's set and scores each new model on it:
# a few thousand rows of a few dozen features is milliseconds of numba.
MAX_EVAL_ROWS = 4096
MAX_EVAL_BYTES = 256 * 1024
EVAL_DIGEST_DOMAIN = b"gradchain/evalset/v1"
_HEADER = struct.Struct("<II")


class EvalSetError(ValueError):
    """An evaluation set that cannot belong to the task; the message says why."""


@dataclass(frozen=True)
class EvalSet:
    """Float32 inputs ``(n, d)`` and float64 labels ``(n,)``, read-only."""

    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.float64]

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


@dataclass(frozen=True)
class ExactFigures:
    """A model's figures on an evaluation set, bit-identical on every machine."""

    loss: float
    correct: int
    rows: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows


def encode_evalset(X: npt.NDArray[np.floating], y: npt.NDArray[np.generic]) -> bytes:
    """The canonical bytes of an evaluation set (module docstring)."""
    Xf = np.ascontiguousarray(X, dtype="<f4")
    yf = np.ascontiguousarray(y, dtype="<f8").reshape(-1)
    if Xf.ndim != 2 or yf.shape[0] != Xf.shape[0]:
        raise EvalSetError(f"need X (n, d) and y (n,), got {Xf.shape} and {yf.shape}")
    return _HEADER.pack(*Xf.shape) + Xf.tobytes() + yf.tobytes()


def decode_evalset(raw: bytes, spec: TaskSpec) -> EvalSet:
    """The evaluation set in ``raw``, checked against ``spec``.

    Raises
    ------
    EvalSetError
        Over a cap, of the wrong length or width, a value that is not finite,
        or a label that is not one of the task's classes.
    """
    if len(raw) > MAX_EVAL_BYTES:
        raise EvalSetError(f"the evaluation set is {len(raw)} bytes; at most {MAX_EVAL_BYTES}")
    if len(raw) < _HEADER.size:
        raise EvalSetError("the evaluation set is truncated")
    n, d = _HEADER.unpack_from(raw)
    if not 1 <= n <= MAX_EVAL_ROWS:
        raise EvalSetError(f"the evaluation set has {n} rows; it needs 1..{MAX_EVAL_ROWS}")
    if d != spec.input_dim:
        raise EvalSetError(f"the evaluation rows have {d} features; task {spec.name!r} takes {spec.input_dim}")
    if len(raw) != _HEADER.size + 4 * n * d + 8 * n:
        raise EvalSetError(f"{len(raw)} bytes cannot hold {n} rows of {d} float32 and a float64 label")
    X = np.frombuffer(raw, dtype="<f4", count=n * d, offset=_HEADER.size).reshape(n, d).astype(np.float32)
    y = np.frombuffer(raw, dtype="<f8", count=n, offset=_HEADER.size + 4 * n * d).astype(np.float64)
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise EvalSetError("the evaluation set holds NaN or infinity")
    if spec.head == "classify" and not bool(np.all((y >= 0) & (y < spec.output_dim) & (y == np.floor(y)))):
        raise EvalSetError(f"evaluation labels must be classes 0..{spec.output_dim - 1} of task {spec.name!r}")
    X.setflags(write=False)
    y.setflags(write=False)
    return EvalSet(X, y)


def evalset_digest(raw: bytes) -> bytes:
    """SHA-256 of the set's canonical bytes under this module's domain (what the state commits)."""
    return hashlib.sha256(EVAL_DIGEST_DOMAIN + raw).digest()


def exact_figures(spec: TaskSpec, params: npt.NDArray[np.floating], evalset: EvalSet) -> ExactFigures:
    """The model's loss and correct count on the set, in the gate's fixed-order loop."""
    loss, correct = validation_figures(spec, params, evalset.X, evalset.y)
    return ExactFigures(loss, correct, evalset.rows)
