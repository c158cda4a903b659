"""The body of ``POST /api/predict``: ``{"inputs": [[x, ...], ...]}``, checked cheap-first.

A body of several MiB of JSON numbers takes about a second to parse in
CPython, and ``json.loads`` holds the GIL for all of it: on the event loop,
or even in a worker thread, it would stall every other request for that
long. So the work is ordered by cost and kept off the loop:

1. the size cap (the largest body ``MAX_PREDICT_ROWS`` rows of the task's
   width can need), checked before a byte is read;
2. a shape sniff on the raw bytes (C-speed counts of ``[`` and ``,``): a
   body whose brackets and commas cannot be 1..MAX_PREDICT_ROWS rows of
   ``input_dim`` numbers is refused before it is parsed;
3. the parse itself, run in a worker thread with Python-level number hooks,
   so the interpreter hands the GIL back to the loop every few milliseconds,
   and rows copied into the array one at a time for the same reason.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_PREDICT_ROWS = 10_000  # one request classifies at most this many inputs
# The longest JSON number a client needs: sign, 17 significant digits, point, exponent
# ("-1.2345678901234567e-308", 24 bytes), and the ", " that separates it from the next.
MAX_NUMBER_BYTES = 26
ROW_FRAMING_BYTES = 4  # "[", "]" and ", " around each row
BODY_FRAMING_BYTES = 64  # {"inputs": ...} and some whitespace
EXTRA_COMMAS = 8  # commas outside the rows a client may add (other keys of the object)


class PredictInputError(ValueError):
    """The body is not 1..MAX_PREDICT_ROWS rows of ``input_dim`` finite numbers; says why."""


def body_cap(input_dim: int) -> int:
    """The largest body a valid request for a task of ``input_dim`` inputs can need."""
    return MAX_PREDICT_ROWS * (input_dim * MAX_NUMBER_BYTES + ROW_FRAMING_BYTES) + BODY_FRAMING_BYTES


def sniff_shape(body: bytes, input_dim: int) -> None:
    """Refuse, without parsing, a body that cannot hold rows of ``input_dim`` numbers.

    Every ``[`` but the outer one opens a row, and a body of ``r`` rows of
    ``d`` numbers has ``r * d - 1`` commas (plus a few for other keys).
    Strings holding brackets could fool the counts, but only towards a
    refusal: valid requests carry numbers, not strings.
    """
    rows = body.count(b"[") - 1
    if not 0 < rows <= MAX_PREDICT_ROWS:
        raise PredictInputError(
            f"inputs must be 1..{MAX_PREDICT_ROWS} rows of {input_dim} numbers, found {max(rows, 0)} rows"
        )
    commas = body.count(b",")
    if commas > rows * input_dim - 1 + EXTRA_COMMAS:
        raise PredictInputError(f"inputs must be rows of {input_dim} numbers: {rows} rows hold more")


def _number(text: str) -> float:
    """JSON number hook: a Python call per number lets the interpreter switch threads."""
    return float(text)


def _no_constant(name: str) -> float:
    raise PredictInputError("inputs must be finite numbers")


def parse_inputs(body: bytes, input_dim: int) -> npt.NDArray[np.float32]:
    """The (rows, input_dim) float32 array of a predict body; raises ``PredictInputError``.

    Call it in a worker thread (the module docstring says why); it checks
    the shape sniff again, so it is safe to call alone.
    """
    sniff_shape(body, input_dim)
    try:
        data: Any = json.loads(body, parse_float=_number, parse_int=_number, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictInputError(f"body is not JSON ({exc})") from None
    except RecursionError:
        raise PredictInputError("body nests too deeply to be a request") from None
    except OverflowError:  # an integer literal beyond float range
        raise PredictInputError("inputs must be finite numbers") from None
    rows = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_PREDICT_ROWS:
        raise PredictInputError(f"expected {{\"inputs\": [[...], ...]}}: 1..{MAX_PREDICT_ROWS} rows")
    out = np.empty((len(rows), input_dim), dtype=np.float32)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != input_dim or not all(type(v) is float for v in row):
            raise PredictInputError(f"row {i}: inputs must be rows of {input_dim} numbers")
        out[i] = row
    if not np.isfinite(out).all():  # finite doubles can still overflow float32
        raise PredictInputError("inputs must be finite numbers (within float32 range)")
    return out
