"""The wire form of a gradient update: raw little-endian bytes, a kind, a size.

An update is a flat float32 pseudo-gradient ``delta`` (see docs/DESIGN-NOTES.md).
On the wire it is an :class:`EncodedUpdate`, never a pickle. Four kinds trade
size for precision:

========  ==========================================================  ===============
kind      data layout                                                 bytes for d values
========  ==========================================================  ===============
``f32``   ``d`` float32 LE, exact                                     ``4 d``
``f16``   ``d`` float16 LE (IEEE binary16, round to nearest even)     ``2 d``
``int8``  ``d`` int8 in ``[-127, 127]`` + one float32 LE scale per   ``d + 4 ceil(d/chunk)``
          chunk of ``chunk`` values; value = ``q * scale``
``topk``  ``k`` uint32 LE indices, strictly increasing, in ``indices``  ``8 k``
          + ``k`` float32 LE values in ``data``; the rest are zero
========  ==========================================================  ===============

Decoding is strict, because it runs on bytes from strangers inside
consensus: every length is checked against the kind and size *before*
``np.frombuffer`` sees it, every non-canonical form (a ``-128`` int8, a
negative scale, an unsorted or repeated index, a field the kind does not use)
is an ``ENCODING`` error, and non-finite values are ``NOT_FINITE``.

Subnormal float32 numbers (nonzero, below ``2**-126`` in magnitude) are a
non-canonical form too, by consensus: a CPU told to flush them to zero (the
FTZ/DAZ modes a library built with ``-ffast-math`` switches on) computes
other bits from them than one that keeps them, so no update may carry one
(f32 and top-k values, int8 scales; an f16 value widens to a normal float32).
The encoder flushes them to a signed zero, so an honest update never has
one; the node also refuses to start on a CPU in such a mode
(``ml.floatenv``). Decoding
uses only elementwise float32 operations (a widening cast and, for int8, one
multiply per value), so every machine gets the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.checks import UpdateCheckError, UpdateProblem

__all__ = [
    "KINDS",
    "MAX_UPDATE_BYTES",
    "MAX_UPDATE_PARAMS",
    "WIRE_KEYS",
    "EncodedUpdate",
    "decode_update",
    "encode_update",
]

KINDS: tuple[str, ...] = ("f32", "f16", "int8", "topk")

# Largest payload (data + scales + indices) one update may carry: 8 MiB holds a
# 2M-parameter model in f32, far above any built-in task, and keeps a block of
# a few updates well under the node's body caps.
MAX_UPDATE_BYTES = 8 * 1024 * 1024
# Largest declared vector length: a top-k update is small on the wire but
# decodes to ``size`` float32 values, so ``size`` is capped on its own.
MAX_UPDATE_PARAMS = MAX_UPDATE_BYTES // 4

DEFAULT_INT8_CHUNK = 256  # values per int8 scale: 1.6% overhead, local dynamic range
INT8_MAX = 127  # symmetric range [-127, 127]; -128 is never emitted, so it is rejected

_F32 = np.dtype("<f4")
_F16 = np.dtype("<f2")
_I8 = np.dtype("i1")
_U32 = np.dtype("<u4")
_F32_TINY = np.finfo(np.float32).tiny  # 2**-126, the least normal float32

# The order of the keys in to_wire(); the chain core writes them in this order.
WIRE_KEYS: tuple[str, ...] = ("kind", "size", "chunk", "data", "scales", "indices")
_WIRE_TYPES: dict[str, type] = {
    "kind": str,
    "size": int,
    "chunk": int,
    "data": bytes,
    "scales": bytes,
    "indices": bytes,
}


@dataclass(frozen=True, slots=True)
class EncodedUpdate:
    """One update as it travels: ``kind``, declared length ``size`` and raw byte fields.

    Fields a kind does not use are empty (``b""``, ``chunk = 0``); the decoder
    insists on it so every update has exactly one encoding per kind.
    """

    kind: str
    size: int
    data: bytes
    scales: bytes = b""
    indices: bytes = b""
    chunk: int = 0

    @property
    def nbytes(self) -> int:
        """Payload bytes (data + scales + indices), the figure :data:`MAX_UPDATE_BYTES` caps."""
        return len(self.data) + len(self.scales) + len(self.indices)

    def to_wire(self) -> dict[str, Any]:
        """A dict of str / int / bytes values in :data:`WIRE_KEYS` order, for a msgpack map."""
        return {
            "kind": self.kind,
            "size": self.size,
            "chunk": self.chunk,
            "data": self.data,
            "scales": self.scales,
            "indices": self.indices,
        }

    @classmethod
    def from_wire(cls, d: Any) -> EncodedUpdate:
        """Rebuild from :meth:`to_wire` output; any missing, extra or mistyped key is ``ENCODING``.

        Only the framing is checked here (keys, types, sizes within limits);
        :func:`decode_update` checks the contents against the kind.
        """
        if not isinstance(d, dict):
            raise UpdateCheckError(
                UpdateProblem.ENCODING, f"expected a map, got {type(d).__name__}"
            )
        keys = set(d)
        if keys != set(WIRE_KEYS):
            missing = sorted(set(WIRE_KEYS) - keys)
            extra = sorted(map(repr, keys - set(WIRE_KEYS)))
            raise UpdateCheckError(
                UpdateProblem.ENCODING, f"missing keys {missing}, extra keys {extra}"
            )
        for key, want in _WIRE_TYPES.items():
            value = d[key]
            # exact type: bool is an int subclass, bytearray/memoryview are not canonical
            if type(value) is not want:
                raise UpdateCheckError(
                    UpdateProblem.ENCODING,
                    f"{key} is {type(value).__name__}, expected {want.__name__}",
                )
        enc = cls(
            kind=d["kind"],
            size=d["size"],
            data=d["data"],
            scales=d["scales"],
            indices=d["indices"],
            chunk=d["chunk"],
        )
        _check_framing(enc)
        return enc


def _check_framing(enc: EncodedUpdate) -> None:
    """Limits that hold for every kind: known kind, sizes in range, payload under the cap."""
    if enc.kind not in KINDS:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"unknown kind {enc.kind!r}, expected one of {KINDS}"
        )
    if not 0 <= enc.size <= MAX_UPDATE_PARAMS:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"size {enc.size} outside [0, {MAX_UPDATE_PARAMS}]"
        )
    if enc.chunk < 0:
        raise UpdateCheckError(UpdateProblem.ENCODING, f"negative chunk {enc.chunk}")
    if enc.nbytes > MAX_UPDATE_BYTES:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"{enc.nbytes} payload bytes exceed {MAX_UPDATE_BYTES}"
        )


# --------------------------------------------------------------------------- encode


def _as_update_vector(vec: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(vec)
    if arr.ndim != 1:
        raise UpdateCheckError(UpdateProblem.SHAPE, f"{arr.ndim}-D array, expected a flat vector")
    if arr.dtype.kind != "f":
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"dtype {arr.dtype}, expected a float vector"
        )
    if arr.shape[0] > MAX_UPDATE_PARAMS:
        raise UpdateCheckError(
            UpdateProblem.SHAPE, f"{arr.shape[0]} values exceed {MAX_UPDATE_PARAMS}"
        )
    out = arr.astype(np.float32)
    if not bool(np.isfinite(out).all()):
        raise UpdateCheckError(
            UpdateProblem.NOT_FINITE, "cannot encode a vector with NaN or infinity"
        )
    return _flush_subnormals(out)


def _subnormal(values: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Which values are subnormal: nonzero and smaller in magnitude than the least normal float32."""
    mask: npt.NDArray[np.bool_] = (values != 0) & (np.abs(values) < _F32_TINY)
    return mask


def _flush_subnormals(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``values`` with every subnormal replaced by a zero of its sign (what the decoder requires)."""
    mask = _subnormal(values)
    if bool(mask.any()):
        values = values.copy()
        values[mask] = np.copysign(np.float32(0), values[mask])
    return values


def _int8_scales(x: npt.NDArray[np.float32], chunk: int) -> npt.NDArray[np.float32]:
    """Per-chunk ``max|x| / 127`` in float32 (the last chunk may be short)."""
    n_chunks = -(-x.shape[0] // chunk)
    padded = np.zeros(n_chunks * chunk, dtype=np.float32)
    padded[: x.shape[0]] = np.abs(x)
    largest = padded.reshape(n_chunks, chunk).max(axis=1)  # max is exact in any order
    scales: npt.NDArray[np.float32] = largest / np.float32(INT8_MAX)
    return _flush_subnormals(scales)  # a chunk of tiny values encodes as zeros


def _encode_int8(x: npt.NDArray[np.float32], chunk: int) -> EncodedUpdate:
    if chunk < 1:
        raise ValueError(f"int8 chunk must be at least 1, got {chunk}")
    scales = _int8_scales(x, chunk)
    per_value = np.repeat(scales, chunk)[: x.shape[0]]
    safe = np.where(per_value > 0, per_value, np.float32(1))
    q = np.clip(np.rint(x / safe), -INT8_MAX, INT8_MAX).astype(_I8)
    return EncodedUpdate(
        kind="int8",
        size=x.shape[0],
        data=q.tobytes(),
        scales=scales.astype(_F32).tobytes(),
        chunk=chunk,
    )


def _encode_topk(x: npt.NDArray[np.float32], k: int | None) -> EncodedUpdate:
    if k is None:
        raise ValueError("topk encoding needs k, the number of values to keep")
    if not 0 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [0, {x.shape[0]}], got {k}")
    # Largest |x| first; a stable sort breaks ties towards the lower index.
    order = np.argsort(-np.abs(x), kind="stable")[:k]
    keep = np.sort(order)
    return EncodedUpdate(
        kind="topk",
        size=x.shape[0],
        data=x[keep].astype(_F32).tobytes(),
        indices=keep.astype(_U32).tobytes(),
    )


def encode_update(
    vec: npt.ArrayLike, kind: str = "f32", *, chunk: int = DEFAULT_INT8_CHUNK, k: int | None = None
) -> EncodedUpdate:
    """Encode a flat finite float vector as ``kind``.

    Parameters
    ----------
    vec
        The update, 1-D; cast to float32 first (that is the precision consensus applies).
    kind
        ``"f32"`` (exact), ``"f16"``, ``"int8"`` (per-chunk scale) or ``"topk"``.
    chunk
        Values per scale for ``int8``; ignored otherwise.
    k
        Values kept for ``topk`` (required there); ignored otherwise.

    Raises
    ------
    UpdateCheckError
        ``NOT_FINITE`` if the vector (or its f16 form) has NaN/inf, ``SHAPE`` if not 1-D.
    ValueError
        For an unknown kind or a bad ``chunk`` / ``k``.
    """
    x = _as_update_vector(vec)
    if kind == "f32":
        return EncodedUpdate(kind="f32", size=x.shape[0], data=x.astype(_F32).tobytes())
    if kind == "f16":
        with np.errstate(over="ignore"):
            half = x.astype(_F16)
        if not bool(np.isfinite(half).all()):
            raise UpdateCheckError(
                UpdateProblem.NOT_FINITE, "a value overflows float16 (|x| > 65504)"
            )
        return EncodedUpdate(kind="f16", size=x.shape[0], data=half.tobytes())
    if kind == "int8":
        return _encode_int8(x, chunk)
    if kind == "topk":
        return _encode_topk(x, k)
    raise ValueError(f"unknown update kind {kind!r}, expected one of {KINDS}")


# --------------------------------------------------------------------------- decode


def _require_len(field: str, raw: bytes, expected: int) -> None:
    if len(raw) != expected:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"{field} has {len(raw)} bytes, expected {expected}"
        )


def _require_unused(enc: EncodedUpdate, *, scales: bool, indices: bool, chunk: bool) -> None:
    """Fields the kind does not use must be empty: one canonical encoding per update."""
    if not scales and enc.scales:
        raise UpdateCheckError(UpdateProblem.ENCODING, f"kind {enc.kind} carries no scales")
    if not indices and enc.indices:
        raise UpdateCheckError(UpdateProblem.ENCODING, f"kind {enc.kind} carries no indices")
    if not chunk and enc.chunk != 0:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"kind {enc.kind} has no chunk, got {enc.chunk}"
        )


def _require_finite(values: npt.NDArray[np.floating], what: str) -> None:
    finite = np.isfinite(values)
    if not bool(finite.all()):
        first = int(np.argmin(finite))
        raise UpdateCheckError(UpdateProblem.NOT_FINITE, f"{what} {first} is {values[first]!r}")


def _require_normal(values: npt.NDArray[np.float32], what: str) -> None:
    """Refuse subnormal float32 values (module docstring): ``ENCODING``."""
    mask = _subnormal(values)
    if bool(mask.any()):
        first = int(np.argmax(mask))
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"{what} {first} is subnormal ({float(values[first])!r}); send 0 instead"
        )


def _decode_dense(enc: EncodedUpdate, dtype: np.dtype[Any]) -> npt.NDArray[np.float32]:
    _require_unused(enc, scales=False, indices=False, chunk=False)
    _require_len("data", enc.data, enc.size * dtype.itemsize)
    values = np.frombuffer(enc.data, dtype=dtype)
    _require_finite(values, "value")
    out = values.astype(np.float32)  # a copy: exact for f32 and for f16 -> f32 widening
    _require_normal(out, "value")
    return out


def _decode_int8(enc: EncodedUpdate) -> npt.NDArray[np.float32]:
    _require_unused(enc, scales=True, indices=False, chunk=True)
    if enc.chunk < 1:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"int8 chunk must be at least 1, got {enc.chunk}"
        )
    n_chunks = -(-enc.size // enc.chunk)
    _require_len("data", enc.data, enc.size * _I8.itemsize)
    _require_len("scales", enc.scales, n_chunks * _F32.itemsize)
    q = np.frombuffer(enc.data, dtype=_I8)
    scales = np.frombuffer(enc.scales, dtype=_F32)
    _require_finite(scales, "scale")
    _require_normal(scales, "scale")
    if bool(np.signbit(scales).any()):
        raise UpdateCheckError(
            UpdateProblem.ENCODING, "int8 scales must be non-negative (+0.0 or more)"
        )
    if bool((q < -INT8_MAX).any()):
        raise UpdateCheckError(
            UpdateProblem.ENCODING, "int8 value -128 is outside the symmetric range"
        )
    # A chunk may exceed the vector (one scale for all); repeating by more than
    # ``size`` would only be cut off again, and a huge chunk would not fit intp.
    per_value = np.repeat(scales, min(enc.chunk, enc.size))[: enc.size]
    if bool(((per_value == 0) & (q != 0)).any()):
        raise UpdateCheckError(
            UpdateProblem.ENCODING, "nonzero int8 value in a chunk whose scale is 0"
        )
    with np.errstate(over="ignore"):  # an overflow is caught just below, as NOT_FINITE
        out: npt.NDArray[np.float32] = q.astype(np.float32) * per_value  # one multiply each
    _require_finite(out, "value")  # a huge scale times 127 can overflow float32
    return out


def _decode_topk(enc: EncodedUpdate) -> npt.NDArray[np.float32]:
    _require_unused(enc, scales=False, indices=True, chunk=False)
    if len(enc.indices) % _U32.itemsize:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"indices has {len(enc.indices)} bytes, not a multiple of 4"
        )
    k = len(enc.indices) // _U32.itemsize
    if k > enc.size:
        raise UpdateCheckError(UpdateProblem.ENCODING, f"{k} indices for a vector of {enc.size}")
    _require_len("data", enc.data, k * _F32.itemsize)
    idx = np.frombuffer(enc.indices, dtype=_U32).astype(np.int64)
    values = np.frombuffer(enc.data, dtype=_F32)
    if k and int(idx[-1]) >= enc.size:
        raise UpdateCheckError(
            UpdateProblem.ENCODING, f"index {int(idx[-1])} out of range {enc.size}"
        )
    if k > 1 and not bool((np.diff(idx) > 0).all()):
        raise UpdateCheckError(UpdateProblem.ENCODING, "topk indices must be strictly increasing")
    _require_finite(values, "value")
    _require_normal(values, "value")
    out = np.zeros(enc.size, dtype=np.float32)
    out[idx] = values
    return out


def decode_update(enc: EncodedUpdate, expected_size: int) -> npt.NDArray[np.float32]:
    """Decode to a fresh float32 vector of shape ``(expected_size,)``.

    Raises
    ------
    UpdateCheckError
        ``SHAPE`` if the declared size is not ``expected_size``; ``ENCODING`` for
        an unknown kind, a wrong byte length, a non-canonical field or index, a subnormal value or scale;
        ``NOT_FINITE`` for NaN/inf in values or scales.
    """
    _check_framing(enc)
    if enc.size != expected_size:
        raise UpdateCheckError(
            UpdateProblem.SHAPE, f"update has {enc.size} values, the task has {expected_size}"
        )
    if enc.kind == "f32":
        return _decode_dense(enc, _F32)
    if enc.kind == "f16":
        return _decode_dense(enc, _F16)
    if enc.kind == "int8":
        return _decode_int8(enc)
    return _decode_topk(enc)
