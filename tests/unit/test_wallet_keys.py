"""Ed25519 keys: RFC 8032 vectors, determinism, and a verifier that rejects every
corruption without ever raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet import SIGNATURE_SIZE, KeyPair, keypair_from_seed, sign, verify

# RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))
MESSAGE = b"gradchain test message"


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    keypair = keypair_from_seed(bytes.fromhex(seed))
    assert keypair.public.hex() == public
    assert sign(keypair, bytes.fromhex(message)).hex() == signature
    assert verify(keypair.public, bytes.fromhex(message), bytes.fromhex(signature))


def test_same_seed_same_keys_and_signatures() -> None:
    a1, a2 = keypair_from_seed(SEED_A), keypair_from_seed(SEED_A)
    assert a1 == a2 and a1.public == a2.public and a1.seed == SEED_A
    assert sign(a1, MESSAGE) == sign(a2, MESSAGE)
    assert keypair_from_seed(SEED_B).public != a1.public


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=200))
def test_sign_then_verify(seed: bytes, message: bytes) -> None:
    keypair = keypair_from_seed(seed)
    signature = sign(keypair, message)
    assert len(signature) == SIGNATURE_SIZE
    assert verify(keypair.public, message, signature)


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, SIGNATURE_SIZE * 8 - 1))
def test_any_flipped_signature_bit_fails(bit: int) -> None:
    keypair = keypair_from_seed(SEED_A)
    signature = bytearray(sign(keypair, MESSAGE))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert not verify(keypair.public, MESSAGE, bytes(signature))


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, len(MESSAGE) * 8 - 1))
def test_any_flipped_message_bit_fails(bit: int) -> None:
    keypair = keypair_from_seed(SEED_A)
    signature = sign(keypair, MESSAGE)
    message = bytearray(MESSAGE)
    message[bit // 8] ^= 1 << (bit % 8)
    assert not verify(keypair.public, bytes(message), signature)


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, 32 * 8 - 1))
def test_any_flipped_public_key_bit_fails(bit: int) -> None:
    """Some flips give bytes that are not a curve point: still False, never an exception."""
    keypair = keypair_from_seed(SEED_A)
    signature = sign(keypair, MESSAGE)
    public = bytearray(keypair.public)
    public[bit // 8] ^= 1 << (bit % 8)
    assert not verify(bytes(public), MESSAGE, signature)


def test_signature_from_another_key_fails() -> None:
    a, b = keypair_from_seed(SEED_A), keypair_from_seed(SEED_B)
    assert not verify(b.public, MESSAGE, sign(a, MESSAGE))


@pytest.mark.parametrize(
    ("public_len", "signature_len"), [(31, 64), (33, 64), (0, 64), (32, 63), (32, 65), (32, 0)]
)
def test_wrong_lengths_are_false_not_errors(public_len: int, signature_len: int) -> None:
    keypair = keypair_from_seed(SEED_A)
    good = sign(keypair, MESSAGE)
    public = (keypair.public + bytes(8))[:public_len]
    signature = (good + bytes(8))[:signature_len]
    assert verify(public, MESSAGE, signature) is False


@pytest.mark.parametrize("garbage", [None, "text", 7, [1, 2]])
def test_non_bytes_input_is_false(garbage: object) -> None:
    keypair = keypair_from_seed(SEED_A)
    signature = sign(keypair, MESSAGE)
    assert verify(garbage, MESSAGE, signature) is False  # type: ignore[arg-type]
    assert verify(keypair.public, garbage, signature) is False  # type: ignore[arg-type]
    assert verify(keypair.public, MESSAGE, garbage) is False  # type: ignore[arg-type]


def test_all_ones_public_key_is_not_a_point() -> None:
    assert verify(b"\xff" * 32, MESSAGE, bytes(64)) is False


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_seed_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        keypair_from_seed(bytes(size))


def test_repr_and_str_do_not_leak_the_seed() -> None:
    keypair = keypair_from_seed(SEED_A)
    for text in (repr(keypair), str(keypair), f"{keypair}"):
        assert SEED_A.hex() not in text
        assert repr(SEED_A) not in text
        assert keypair.public.hex() in text


def test_keypair_is_frozen_and_hashable() -> None:
    keypair = keypair_from_seed(SEED_A)
    with pytest.raises(AttributeError):
        keypair.public = bytes(32)  # type: ignore[misc]
    assert {keypair, keypair_from_seed(SEED_A)} == {keypair}


def test_mismatched_public_key_is_refused() -> None:
    a, b = keypair_from_seed(SEED_A), keypair_from_seed(SEED_B)
    with pytest.raises(ValueError, match="does not belong"):
        KeyPair(public=b.public, seed=a.seed, _private=a._private)


# -- strict verification: small-order and non-canonical points (libsodium's rules) -------------
FIELD_P = 2**255 - 19
CURVE_D = (-121665 * pow(121666, FIELD_P - 2, FIELD_P)) % FIELD_P
IDENTITY_KEY = (1).to_bytes(32, "little")  # y = 1, x = 0: the neutral element
# The identity key and R = identity, S = 0: [0]B == identity + [k]identity for every message.
IDENTITY_SIGNATURE = IDENTITY_KEY + bytes(32)


def _x_for(y: int, sign: int) -> int | None:
    """The x of the curve point with this y and sign of x (RFC 8032 5.1.3), or None."""
    xx = (y * y - 1) * pow(CURVE_D * y * y + 1, FIELD_P - 2, FIELD_P) % FIELD_P
    x = pow(xx, (FIELD_P + 3) // 8, FIELD_P)
    if (x * x - xx) % FIELD_P:
        x = x * pow(2, (FIELD_P - 1) // 4, FIELD_P) % FIELD_P
    if (x * x - xx) % FIELD_P:
        return None
    return FIELD_P - x if x % 2 != sign else x


def _add(p: tuple[int, int], q: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p, q
    t = CURVE_D * x1 * x2 * y1 * y2 % FIELD_P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, FIELD_P - 2, FIELD_P) % FIELD_P,
            (y1 * y2 + x1 * x2) * pow(1 - t, FIELD_P - 2, FIELD_P) % FIELD_P)


def _times_8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _add(point, point)
    return point


def _encodings_of(y: int) -> list[bytes]:
    """Both sign variants of y's encoding (x = 0 has only the canonical one on the curve)."""
    return [(y | (sign << 255)).to_bytes(32, "little") for sign in (0, 1)]


def test_the_small_order_list_is_exactly_the_torsion_points() -> None:
    """Every y in SMALL_ORDER_Y is a curve point that 8 * P sends to the identity (a pure-Python oracle)."""
    from wallet.keys import SMALL_ORDER_Y

    assert SMALL_ORDER_Y == set(TORSION_Y.values())
    for y in SMALL_ORDER_Y:
        for x_sign in (0, 1):
            x = _x_for(y, x_sign)
            assert x is not None, y
            assert _times_8((x, y)) == (0, 1), y


def test_the_identity_key_forges_nothing() -> None:
    """OpenSSL's cofactorless check alone accepts this pair for any message; we do not."""
    for message in (b"", MESSAGE, b"pay everything to the attacker"):
        assert not verify(IDENTITY_KEY, message, IDENTITY_SIGNATURE)


ORDER_8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022
TORSION_Y = {"identity": 1, "order 2": FIELD_P - 1, "order 4": 0, "order 8": ORDER_8_Y,
             "order 8 negated": FIELD_P - ORDER_8_Y}


@pytest.mark.parametrize("name", sorted(TORSION_Y))
def test_small_order_keys_and_r_values_never_verify(name: str) -> None:
    from wallet.keys import SMALL_ORDER_Y

    y = TORSION_Y[name]
    assert y in SMALL_ORDER_Y
    pair = keypair_from_seed(SEED_A)
    good = sign(pair, MESSAGE)
    for encoding in _encodings_of(y):
        assert not verify(encoding, MESSAGE, good)
        assert not verify(pair.public, MESSAGE, encoding + good[32:])
        assert not verify(encoding, MESSAGE, encoding + bytes(32))


def test_non_canonical_encodings_and_large_s_are_refused() -> None:
    from wallet.keys import GROUP_ORDER, is_strict_point

    pair = keypair_from_seed(SEED_A)
    good = sign(pair, MESSAGE)
    assert verify(pair.public, MESSAGE, good)
    # y = p + 2 encodes the same y as 2 (if 2 were on the curve) but is not canonical.
    assert not is_strict_point((FIELD_P + 2).to_bytes(32, "little"))
    assert not is_strict_point((2**255 - 1).to_bytes(32, "little"))
    s = int.from_bytes(good[32:], "little")
    malleated = good[:32] + (s + GROUP_ORDER).to_bytes(32, "little")
    assert not verify(pair.public, MESSAGE, malleated)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_real_keys_are_strict_points(seed: bytes) -> None:
    from wallet.keys import is_strict_point

    pair = keypair_from_seed(seed)
    assert is_strict_point(pair.public)
    assert is_strict_point(sign(pair, MESSAGE)[:32])
