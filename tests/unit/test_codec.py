"""The update codec: exact round trips, bounded loss, and every corrupted form refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml.checks import UpdateCheckError, UpdateProblem
from ml.codec import (
    KINDS,
    MAX_UPDATE_BYTES,
    MAX_UPDATE_PARAMS,
    WIRE_KEYS,
    EncodedUpdate,
    decode_update,
    encode_update,
)

F32_MAX = float(np.finfo(np.float32).max)
any_finite_f32 = st.floats(-F32_MAX, F32_MAX, allow_nan=False, allow_infinity=False, width=32)
moderate_f32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
sizes = st.integers(0, 600)


def bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32)


def problem_of(enc: EncodedUpdate, size: int) -> UpdateProblem:
    with pytest.raises(UpdateCheckError) as exc:
        decode_update(enc, size)
    return exc.value.problem


def sample(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


# ---------------------------------------------------------------- round trips


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, sizes, elements=any_finite_f32))
def test_f32_round_trip_is_bit_exact(x: np.ndarray) -> None:
    out = decode_update(encode_update(x, "f32"), x.size)
    assert out.dtype == np.float32 and out.shape == x.shape
    # -0.0 survives; a subnormal becomes a zero of its sign (consensus refuses subnormals).
    tiny = np.finfo(np.float32).tiny
    expected = np.where((x != 0) & (np.abs(x) < tiny), np.copysign(np.float32(0), x), x).astype(np.float32)
    assert np.array_equal(bits(out), bits(expected))


SUBNORMAL = np.float32(1e-40)


def _with_subnormal(kind: str) -> EncodedUpdate:
    """A valid update of ``kind`` whose bytes are then edited to carry one subnormal float32."""
    x = np.array([0.5, -0.25, 0.0, 0.125], dtype=np.float32)
    enc = encode_update(x, kind, chunk=2, k=2)
    if kind == "int8":
        scales = np.frombuffer(enc.scales, dtype="<f4").copy()
        scales[1] = SUBNORMAL
        q = np.frombuffer(enc.data, dtype="i1").copy()
        return dataclasses.replace(enc, scales=scales.tobytes(), data=q.tobytes())
    values = np.frombuffer(enc.data, dtype="<f4").copy()
    values[-1] = -SUBNORMAL
    return dataclasses.replace(enc, data=values.tobytes())


@pytest.mark.parametrize("kind", ["f32", "int8", "topk"])
def test_a_subnormal_value_or_scale_is_a_non_canonical_encoding(kind: str) -> None:
    """Consensus refuses subnormals: a node that flushes them to zero would compute other bits."""
    with pytest.raises(UpdateCheckError) as info:
        decode_update(_with_subnormal(kind), 4)
    assert info.value.problem is UpdateProblem.ENCODING
    assert "subnormal" in str(info.value)


def test_the_encoder_flushes_subnormals_so_honest_updates_stay_valid() -> None:
    x = np.array([SUBNORMAL, -SUBNORMAL, 1.0, np.float32(2.0**-126)], dtype=np.float32)
    for kind in ("f32", "topk", "int8"):
        out = decode_update(encode_update(x, kind, k=4, chunk=1), 4)
        assert out[0] == 0 and out[1] == 0, kind
        if kind != "int8":  # an int8 chunk of tiny values has a subnormal scale: it becomes zeros
            assert np.signbit(out[1]) and out[3] == np.float32(2.0**-126), kind


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, sizes, elements=moderate_f32))
def test_f16_error_is_within_half_a_float16_step(x: np.ndarray) -> None:
    out = decode_update(encode_update(x, "f16"), x.size)
    # binary16 has 11 significant bits: relative error <= 2**-11, absolute >= its
    # subnormal half step 2**-25 near zero
    tolerance = np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)
    assert np.all(np.abs(out - x) <= tolerance)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, sizes, elements=moderate_f32), st.integers(1, 300))
def test_int8_error_is_within_half_a_step_of_its_chunk(x: np.ndarray, chunk: int) -> None:
    enc = encode_update(x, "int8", chunk=chunk)
    out = decode_update(enc, x.size)
    for start in range(0, x.size, chunk):
        part = x[start : start + chunk]
        step = float(np.abs(part).max()) / 127
        err = np.abs(out[start : start + chunk].astype(np.float64) - part)
        assert np.all(err <= step / 2 + 1e-6 * step + 1e-30)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 400), elements=moderate_f32), st.data())
def test_topk_keeps_exactly_the_k_largest_magnitudes(x: np.ndarray, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, x.size))
    out = decode_update(encode_update(x, "topk", k=k), x.size)
    kept = np.flatnonzero(out != 0)
    # kept values are the originals, untouched
    assert np.array_equal(out[kept], x[kept])
    assert np.count_nonzero(out) <= k
    # nothing dropped is larger than anything kept
    dropped = np.ones(x.size, bool)
    dropped[np.flatnonzero(np.abs(out) > 0)] = False
    if k and dropped.any() and kept.size:
        assert np.abs(x[dropped]).max() <= np.abs(out[kept]).min()


def test_topk_breaks_ties_towards_lower_index() -> None:
    x = np.array([1, -1, 1, 0.5], np.float32)
    enc = encode_update(x, "topk", k=2)
    assert np.frombuffer(enc.indices, "<u4").tolist() == [0, 1]


def test_sizes_on_the_wire() -> None:
    x = sample(1000)
    assert len(encode_update(x, "f32").data) == 4000
    assert len(encode_update(x, "f16").data) == 2000
    enc = encode_update(x, "int8", chunk=256)
    assert (len(enc.data), len(enc.scales), enc.chunk) == (1000, 16, 256)
    assert encode_update(x, "topk", k=10).nbytes == 80


def test_decoded_vector_is_a_fresh_writable_copy() -> None:
    """Callers may scale or clip the decoded vector in place: it must own its memory."""
    x = sample(10)
    for kind in KINDS:
        enc = encode_update(x, kind, k=3)
        wire = bytes(enc.data)
        out = decode_update(enc, 10)
        assert out.flags.writeable and out.flags.owndata, kind
        out[0] = 5.0  # would raise on a read-only frombuffer view
        assert out[0] == 5.0
        assert bytes(enc.data) == wire, f"{kind}: writing the decoded vector changed the encoding"
        again = decode_update(enc, 10)
        assert again[0] != 5.0 or x[0] == 5.0, f"{kind}: two decodes share memory"


def test_encoder_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(UpdateCheckError) as exc:
        encode_update(np.array([1.0, np.nan], np.float32))
    assert exc.value.problem is UpdateProblem.NOT_FINITE
    with pytest.raises(UpdateCheckError) as exc:
        encode_update(np.array([1e5], np.float32), "f16")
    assert exc.value.problem is UpdateProblem.NOT_FINITE
    with pytest.raises(UpdateCheckError) as exc:
        encode_update(np.zeros((2, 2), np.float32))
    assert exc.value.problem is UpdateProblem.SHAPE
    with pytest.raises(ValueError):
        encode_update(sample(4), "bf16")
    with pytest.raises(ValueError):
        encode_update(sample(4), "topk")  # k missing
    with pytest.raises(ValueError):
        encode_update(sample(4), "topk", k=5)
    with pytest.raises(ValueError):
        encode_update(sample(4), "int8", chunk=0)


# ---------------------------------------------------------------- wire form


@pytest.mark.parametrize("kind", KINDS)
def test_wire_form_survives_msgpack_with_fixed_key_order(kind: str) -> None:
    enc = encode_update(sample(300), kind, chunk=64, k=30)
    wire = enc.to_wire()
    assert tuple(wire) == WIRE_KEYS
    assert all(type(v) in (str, int, bytes) for v in wire.values())
    packed = msgpack.packb(wire, use_bin_type=True)
    assert packed == msgpack.packb(EncodedUpdate.from_wire(wire).to_wire(), use_bin_type=True)
    back = EncodedUpdate.from_wire(msgpack.unpackb(packed, raw=False))
    assert back == enc


def _wire() -> dict[str, Any]:
    return encode_update(sample(20), "int8", chunk=8).to_wire()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d.pop("scales"),
        lambda d: d.update(extra=b""),
        lambda d: d.update(size=True),  # bool is not an int here
        lambda d: d.update(size=20.0),
        lambda d: d.update(kind=b"int8"),
        lambda d: d.update(data=bytearray(d["data"])),
        lambda d: d.update(size=-1),
        lambda d: d.update(size=MAX_UPDATE_PARAMS + 1),
        lambda d: d.update(chunk=-1),
        lambda d: d.update(kind="int4"),
        lambda d: d.update(data=b"\0" * (MAX_UPDATE_BYTES + 1)),
    ],
)
def test_from_wire_is_strict(corrupt: Any) -> None:
    d = _wire()
    corrupt(d)
    with pytest.raises(UpdateCheckError) as exc:
        EncodedUpdate.from_wire(d)
    assert exc.value.problem is UpdateProblem.ENCODING


def test_from_wire_rejects_non_maps() -> None:
    with pytest.raises(UpdateCheckError):
        EncodedUpdate.from_wire([b"f32", 1, b""])


# ---------------------------------------------------------------- corrupted forms


def replace(enc: EncodedUpdate, **kw: Any) -> EncodedUpdate:
    return dataclasses.replace(enc, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_declared_size_must_match_the_task(kind: str) -> None:
    enc = encode_update(sample(50), kind, k=5)
    assert problem_of(enc, 51) is UpdateProblem.SHAPE


@pytest.mark.parametrize("kind", ["f32", "f16", "int8"])
@pytest.mark.parametrize("delta", [-1, 1])
def test_dense_data_of_the_wrong_length(kind: str, delta: int) -> None:
    enc = encode_update(sample(50), kind)
    data = enc.data[:delta] if delta < 0 else enc.data + b"\0"
    assert problem_of(replace(enc, data=data), 50) is UpdateProblem.ENCODING


def test_length_checked_before_frombuffer_for_a_wrong_size() -> None:
    """size claims 51 values but data holds 50: ENCODING, not a numpy error."""
    enc = encode_update(sample(50), "f32")
    assert problem_of(replace(enc, size=51), 51) is UpdateProblem.ENCODING


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_dense_values(kind: str, bad: float) -> None:
    x = sample(10)
    raw = bytearray(encode_update(x, kind).data)
    dtype = "<f4" if kind == "f32" else "<f2"
    width = np.dtype(dtype).itemsize
    raw[3 * width : 4 * width] = np.array([bad], dtype).tobytes()
    enc = EncodedUpdate(kind=kind, size=10, data=bytes(raw))
    assert problem_of(enc, 10) is UpdateProblem.NOT_FINITE


def test_int8_corruptions() -> None:
    enc = encode_update(sample(20), "int8", chunk=8)  # 3 chunks
    good_scales = np.frombuffer(enc.scales, "<f4")

    def scales(*values: float) -> bytes:
        s = good_scales.copy()
        s[: len(values)] = values
        return s.tobytes()

    assert problem_of(replace(enc, scales=scales(np.nan)), 20) is UpdateProblem.NOT_FINITE
    assert problem_of(replace(enc, scales=scales(np.inf)), 20) is UpdateProblem.NOT_FINITE
    assert problem_of(replace(enc, scales=scales(-0.5)), 20) is UpdateProblem.ENCODING
    assert problem_of(replace(enc, scales=scales(-0.0)), 20) is UpdateProblem.ENCODING
    # 127 * float32 max overflows: the product is checked too
    assert problem_of(replace(enc, scales=scales(F32_MAX)), 20) is UpdateProblem.NOT_FINITE
    # zero scale must come with zero values (the encoder's only form)
    assert problem_of(replace(enc, scales=scales(0.0)), 20) is UpdateProblem.ENCODING
    assert problem_of(replace(enc, scales=enc.scales[:-4]), 20) is UpdateProblem.ENCODING
    assert problem_of(replace(enc, chunk=0), 20) is UpdateProblem.ENCODING
    assert problem_of(replace(enc, chunk=6), 20) is UpdateProblem.ENCODING  # 3 scales != 4 chunks
    q = bytearray(enc.data)
    q[0] = 0x80  # -128
    assert problem_of(replace(enc, data=bytes(q)), 20) is UpdateProblem.ENCODING
    assert problem_of(replace(enc, indices=b"\0" * 4), 20) is UpdateProblem.ENCODING


def test_int8_zero_vector_round_trips() -> None:
    out = decode_update(encode_update(np.zeros(10, np.float32), "int8", chunk=4), 10)
    assert np.array_equal(out, np.zeros(10, np.float32))


def _topk(indices: list[int], values: list[float] | None = None, size: int = 10) -> EncodedUpdate:
    vals = values if values is not None else [1.0] * len(indices)
    return EncodedUpdate(
        kind="topk",
        size=size,
        data=np.array(vals, "<f4").tobytes(),
        indices=np.array(indices, "<u4").tobytes(),
    )


@pytest.mark.parametrize(
    ("enc", "problem"),
    [
        (_topk([1, 1]), UpdateProblem.ENCODING),  # duplicate
        (_topk([3, 2]), UpdateProblem.ENCODING),  # decreasing
        (_topk([2, 10]), UpdateProblem.ENCODING),  # out of range
        (_topk([0, 2**32 - 1]), UpdateProblem.ENCODING),
        (_topk(list(range(10)) + [10]), UpdateProblem.ENCODING),  # more indices than size
        (_topk([1, 2], [1.0, np.nan]), UpdateProblem.NOT_FINITE),
        (_topk([1, 2], [np.inf, 1.0]), UpdateProblem.NOT_FINITE),
        (dataclasses.replace(_topk([1, 2]), indices=b"\1\0\0\0\2\0\0"), UpdateProblem.ENCODING),
        (dataclasses.replace(_topk([1, 2]), data=b"\0" * 4), UpdateProblem.ENCODING),
        (dataclasses.replace(_topk([1, 2]), chunk=8), UpdateProblem.ENCODING),
        (dataclasses.replace(_topk([1, 2]), scales=b"\0" * 4), UpdateProblem.ENCODING),
    ],
)
def test_topk_corruptions(enc: EncodedUpdate, problem: UpdateProblem) -> None:
    assert problem_of(enc, 10) is problem


def test_topk_accepts_a_hand_built_canonical_form() -> None:
    out = decode_update(_topk([0, 9], [2.0, -3.0]), 10)
    assert out.tolist() == [2.0] + [0.0] * 8 + [-3.0]


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_dense_kinds_carry_no_side_fields(kind: str) -> None:
    enc = encode_update(sample(8), kind)
    for bad in (
        replace(enc, scales=b"\0" * 4),
        replace(enc, indices=b"\0" * 4),
        replace(enc, chunk=1),
    ):
        assert problem_of(bad, 8) is UpdateProblem.ENCODING


def test_unknown_kind() -> None:
    enc = replace(encode_update(sample(8)), kind="f64")
    assert problem_of(enc, 8) is UpdateProblem.ENCODING


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    size=st.integers(0, 40),
    chunk=st.integers(0, 12),
    data=st.binary(max_size=200),
    scales=st.binary(max_size=24),
    indices=st.binary(max_size=80),
)
def test_arbitrary_bytes_decode_or_raise_update_check_error(
    kind: str, size: int, chunk: int, data: bytes, scales: bytes, indices: bytes
) -> None:
    """Fuzz: garbage never escapes as another exception or a non-finite vector."""
    enc = EncodedUpdate(
        kind=kind, size=size, data=data, scales=scales, indices=indices, chunk=chunk
    )
    try:
        out = decode_update(enc, size)
    except UpdateCheckError:
        return
    assert out.dtype == np.float32 and out.shape == (size,)
    assert np.isfinite(out).all()
    # anything accepted re-decodes to the same bits (decoding is a function of the bytes)
    assert np.array_equal(bits(decode_update(enc, size)), bits(out))
