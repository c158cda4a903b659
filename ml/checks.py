"""Consensus checks on one decoded gradient update (a pseudo-gradient delta).

Every node runs these on every update in every block, so each check is a pure
function of its arguments and gives the same answer, bit for bit, on every
machine. A failed check raises :class:`UpdateCheckError` with an
:class:`UpdateProblem` code; ``consensus/`` maps the code to a ``Reject`` code
(ml never imports consensus).

The checks, in the order :func:`check_update` runs them (cheapest structural
facts first, so a malformed update never reaches the arithmetic):

1. shape     -- a flat float32 vector of exactly the task's parameter count;
2. finite    -- no NaN or infinity anywhere;
3. norm      -- ``l2_norm(update) <= norm_bound`` (the norm is computed in a
   fixed-order float64 loop, see :func:`l2_norm`);
4. staleness -- the base height lies in ``[block_height - window, block_height - 1]``.
"""

from __future__ import annotations

import enum
import math

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "UpdateCheckError",
    "UpdateProblem",
    "check_finite",
    "check_norm",
    "check_shape",
    "check_staleness",
    "check_update",
    "l2_norm",
]

UPDATE_DTYPE = np.dtype(np.float32)  # the one dtype an update has after decoding


class UpdateProblem(enum.Enum):
    """Why an update was refused; consensus maps each to a ``Reject`` code."""

    ENCODING = "encoding"  # bytes that do not decode to a canonical vector
    SHAPE = "shape"  # not a flat vector of the task's parameter count
    NOT_FINITE = "not-finite"  # a NaN or an infinity in the values
    NORM = "norm"  # L2 norm above the task's bound
    STALE = "stale"  # base height older than the staleness window allows
    BAD_BASE = "bad-base"  # base height that is negative or not below the block
    NOT_USEFUL = "not-useful"  # raises the task's validation loss past its tolerance (ml.gate)


class UpdateCheckError(ValueError):
    """An update broke a consensus check.

    Parameters
    ----------
    problem
        Which check failed; tests and consensus branch on this, never on text.
    detail
        One human sentence with the offending figures, for logs.
    """

    def __init__(self, problem: UpdateProblem, detail: str = "") -> None:
        super().__init__(f"{problem.value}: {detail}" if detail else problem.value)
        self.problem = problem
        self.detail = detail


def check_shape(update: npt.NDArray[np.floating], expected_size: int) -> None:
    """Require a 1-D float32 vector of ``expected_size`` values.

    The dtype is part of the check because the state transition applies the
    update in float32: a float64 vector would silently round differently on
    the way in.
    """
    if not isinstance(update, np.ndarray):
        raise UpdateCheckError(
            UpdateProblem.SHAPE, f"expected an ndarray, got {type(update).__name__}"
        )
    if update.dtype != UPDATE_DTYPE:
        raise UpdateCheckError(UpdateProblem.ENCODING, f"dtype {update.dtype}, expected float32")
    if update.ndim != 1:
        raise UpdateCheckError(
            UpdateProblem.SHAPE, f"{update.ndim}-D array, expected a flat vector"
        )
    if update.shape[0] != expected_size:
        raise UpdateCheckError(
            UpdateProblem.SHAPE,
            f"{update.shape[0]} values, the task has {expected_size} parameters",
        )


def check_finite(update: npt.NDArray[np.floating]) -> None:
    """Refuse NaN and infinities: one of them would poison every parameter it touches."""
    finite = np.isfinite(update)
    if not bool(finite.all()):
        first = int(np.argmin(finite))
        raise UpdateCheckError(
            UpdateProblem.NOT_FINITE, f"value {update[first]!r} at index {first} is not finite"
        )


@numba.njit(cache=True, fastmath=False, nogil=True)
def _sum_of_squares(values: npt.NDArray[np.float32]) -> float:  # pragma: no cover - compiled
    total = 0.0  # float64 accumulator
    for i in range(values.shape[0]):
        v = np.float64(values[i])
        total += v * v
    return total


def l2_norm(update: npt.NDArray[np.floating]) -> float:
    """The update's Euclidean norm, with the same bits on every machine.

    Consensus compares this number against the task's bound, so it must not
    depend on BLAS, SIMD width or thread count. The sum is a numba loop
    compiled with ``fastmath=False`` (no reassociation, no FMA contraction
    allowed by LLVM) that widens each float32 value to float64, squares it
    and adds it to one float64 accumulator in index order ``0 .. d-1``; the
    result is ``math.sqrt`` of that sum (IEEE-754 sqrt is correctly rounded).
    Each step is a single correctly rounded IEEE operation in a fixed order,
    so the result is fully determined by the input bits.
    """
    values = np.ascontiguousarray(update, dtype=UPDATE_DTYPE).reshape(-1)
    return math.sqrt(float(_sum_of_squares(values)))


def check_norm(update: npt.NDArray[np.floating], bound: float) -> None:
    """Require ``l2_norm(update) <= bound``; a norm exactly equal to the bound passes.

    The bound caps how far one participant can move the model per block; it
    is what turns a scaling attack (``lambda * delta``) into a rejected
    transaction. A non-finite norm (which only a non-finite or overflowing
    update can produce) fails too, because ``nan > bound`` would be False.
    """
    if not (math.isfinite(bound) and bound >= 0.0):
        raise ValueError(f"the norm bound must be finite and non-negative, got {bound!r}")
    norm = l2_norm(update)
    if not math.isfinite(norm):
        raise UpdateCheckError(UpdateProblem.NOT_FINITE, f"norm {norm!r} is not finite")
    if norm > bound:
        raise UpdateCheckError(UpdateProblem.NORM, f"norm {norm!r} exceeds the bound {bound!r}")


def check_staleness(base_height: int, block_height: int, window: int) -> None:
    """Require the update's base model to be recent and strictly in the past.

    An update computed from the model at ``base_height`` may go into the
    block at ``block_height`` iff::

        0 <= base_height < block_height   and   block_height - base_height <= window

    So with ``window = 1`` only updates from the parent's model (``base =
    block_height - 1``) are accepted, and each extra unit of window admits
    one block more of lag; ``window = 0`` (a task that takes no updates)
    makes every update ``STALE``. A base at or above the block (or below
    genesis) is ``BAD_BASE``: that model cannot exist yet. A base older than
    the window is ``STALE``.
    """
    if window < 0:
        raise ValueError(f"the staleness window must be >= 0 blocks, got {window}")
    if base_height < 0 or base_height >= block_height:
        raise UpdateCheckError(
            UpdateProblem.BAD_BASE,
            f"base height {base_height} is not a height below the block at {block_height}",
        )
    lag = block_height - base_height
    if lag > window:
        raise UpdateCheckError(
            UpdateProblem.STALE,
            f"base height {base_height} is {lag} blocks old, the window is {window}",
        )


def check_update(
    update: npt.NDArray[np.floating],
    *,
    expected_size: int,
    norm_bound: float,
    base_height: int,
    block_height: int,
    window: int,
) -> None:
    """Run every consensus check on one decoded update: shape, finite, norm, staleness.

    The order is fixed so that an update breaking several rules is always
    rejected with the same code on every node.
    """
    check_shape(update, expected_size)
    check_finite(update)
    check_norm(update, norm_bound)
    check_staleness(base_height, block_height, window)
