"""Ed25519 keys and signatures (RFC 8032) through the ``cryptography`` package.

Verification follows libsodium's strict rules, checked here before OpenSSL
sees the bytes, so the verdict never depends on which OpenSSL build a node
links: the public key A and the signature's R must be canonical encodings
(y below the field prime) of points outside the small-order subgroup, and S
must be below the group order L. OpenSSL then checks the cofactorless
equation ``[S]B = R + [k]A``. Without the small-order rule, the identity key
``01 00..00`` with the signature ``01 00..00 | 00..00`` verifies for every
message, so anything sent to that key's address is anyone's; ZIP-215's
permissive alternative was considered and not taken, because a signature
rule that accepts more than libsodium does is a rule other implementations
must copy exactly.

A key pair is derived from a 32-byte seed that the caller supplies, so the
wallet never draws randomness itself (DESIGN.md): the node passes
``os.urandom(32)``, tests and golden vectors pass fixed bytes and get the
same keys every time. Ed25519 signing is deterministic too, so a fixed seed
and message give a fixed signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_SIZE = 32
"""RFC 8032 private key: 32 random bytes."""

PUBLIC_KEY_SIZE = 32
"""RFC 8032 public key: a compressed Edwards point."""

SIGNATURE_SIZE = 64
"""RFC 8032 signature: R (32 bytes) and S (32 bytes)."""


FIELD_PRIME = 2**255 - 19
"""p: curve coordinates are integers mod p."""

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
"""L: the order of the base point; a canonical S is below it."""

_Y_MASK = (1 << 255) - 1  # an encoding is y (255 bits, little-endian) and the sign of x in the top bit
# The y coordinates of the eight points of order dividing 8: the identity (1), the point of
# order 2 (-1), the two of order 4 (0) and the four of order 8 (+-Y8). Multiplying any of them
# by the cofactor 8 gives the identity, which is why a key or R among them proves nothing.
_ORDER_8_Y = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y = frozenset({0, 1, FIELD_PRIME - 1, _ORDER_8_Y, FIELD_PRIME - _ORDER_8_Y})


def is_strict_point(encoding: bytes) -> bool:
    """True if ``encoding`` is a canonical point encoding outside the small-order subgroup.

    Used on public keys and on a signature's R. Canonical: y < p (OpenSSL
    builds differ in whether they reduce a larger y). Not small-order: y is
    none of the eight torsion points' (see ``SMALL_ORDER_Y``).
    """
    y = int.from_bytes(encoding, "little") & _Y_MASK
    return y < FIELD_PRIME and y not in SMALL_ORDER_Y


def _public_from_private(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An Ed25519 key pair.

    Build one with :func:`keypair_from_seed`. The seed is the secret: it is
    kept out of ``repr`` (so logs and tracebacks never show it) and out of
    equality (two pairs are equal when their public keys are).

    Attributes
    ----------
    public : bytes
        The 32-byte raw public key.
    seed : bytes
        The 32-byte private seed, for the encrypted keystore only.
    """

    public: bytes
    seed: bytes = field(repr=False, compare=False)
    _private: Ed25519PrivateKey = field(repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(self.seed)}")
        if _public_from_private(self._private) != self.public:
            raise ValueError("public key does not belong to this private key")

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()}, seed=<hidden>)"


def keypair_from_seed(seed: bytes) -> KeyPair:
    """The Ed25519 key pair for a 32-byte seed (deterministic).

    Parameters
    ----------
    seed : bytes
        32 bytes; must come from a cryptographic random source for a real
        wallet (the caller's job: this package draws no randomness).

    Raises
    ------
    ValueError
        If ``seed`` is not 32 bytes.
    """
    seed = bytes(seed)
    if len(seed) != SEED_SIZE:
        raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return KeyPair(public=_public_from_private(private), seed=seed, _private=private)


def sign(keypair: KeyPair, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
    return keypair._private.sign(bytes(message))


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public``.

    Never raises on malformed input: a key or signature of the wrong length or
    type, a key that is not a curve point, a small-order or non-canonical key
    or R, or an S not below L (module docstring) simply does not verify. Callers
    in consensus feed it untrusted bytes from the network.
    """
    if not all(isinstance(v, bytes | bytearray | memoryview) for v in (public, message, signature)):
        return False
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    r, s = bytes(signature[:32]), bytes(signature[32:])
    if not (is_strict_point(bytes(public)) and is_strict_point(r)):
        return False
    if int.from_bytes(s, "little") >= GROUP_ORDER:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
