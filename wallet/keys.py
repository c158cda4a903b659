"""Ed25519 keys and signatures (RFC 8032) through the ``cryptography`` package.

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
    type, or a key that is not a curve point, simply does not verify. Callers
    in consensus feed it untrusted bytes from the network.
    """
    if not all(isinstance(v, bytes | bytearray | memoryview) for v in (public, message, signature)):
        return False
    if len(public) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        return False
    return True
