"""Each node's private slice of the training data, and its encrypted form on disk.

Partitioning needs no coordination: every node computes the same partition
from public inputs (the dataset, the node count, a seed or key) and keeps
only its own part.

``hash``
    Example ``i`` goes to node ``blake2b(key, X[i] bytes || y[i] bytes) mod
    n_nodes``: stable under reordering of the data, roughly IID, every
    example in exactly one shard.
``dirichlet``
    Non-IID label skew (Hsu et al. 2019, https://arxiv.org/abs/1909.06335):
    for every class, proportions over the nodes are drawn from
    ``Dirichlet(alpha)`` with ``np.random.default_rng(seed)``; small alpha
    means each node sees mostly a few classes. Empty shards are fixed up
    deterministically by moving one example from the largest shard. For
    regress tasks (no classes) it falls back to contiguous time blocks:
    node ``k`` gets the ``k``-th of ``n_nodes`` consecutive stretches of
    the (chronological) training split, the time-series analogue of skew.

Encrypted shard files hold ``MAGIC || VERSION || nonce || AES-GCM(ciphertext)``;
the magic and version are the associated data, and the plaintext is a small
header (dtype and shape of X and y) followed by the raw array bytes. No
pickle, no ``np.save``: decoding checks every length before ``np.frombuffer``.
This module does no I/O: the caller writes the bytes and supplies the nonce.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from ml.datasets import Dataset

SCHEMES = ("hash", "dirichlet")
HASH_DIGEST_BYTES = 8
BLAKE2B_MAX_KEY_BYTES = 64

MAGIC = b"GCSHARD"
VERSION = 1
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the AES-GCM standard nonce
TAG_BYTES = 16
HKDF_INFO = b"gradchain shard encryption key v1"
# Only plain numeric dtypes, little-endian, can appear in a shard.
ALLOWED_DTYPES = ("<f4", "<f8", "<i4", "<i8")
MAX_DIMS = 2
_PREFIX = MAGIC + bytes([VERSION])


class ShardError(ValueError):
    """A shard file that cannot be opened: wrong key, tampered or not a shard."""


def shard(
    dataset: Dataset,
    node_index: int,
    n_nodes: int,
    scheme: str = "hash",
    *,
    alpha: float = 0.5,
    seed: int = 0,
    key: bytes = b"gradchain-shard",
) -> tuple[NDArray[np.float32], NDArray[np.generic]]:
    """Node ``node_index``'s part of the training split (see the module docstring).

    Returns
    -------
    (X, y)
        Copies of the selected training rows, in their original order.
    """
    if n_nodes < 1 or not 0 <= node_index < n_nodes:
        raise ValueError(f"need 0 <= node_index < n_nodes, got {node_index} of {n_nodes}")
    if scheme == "hash":
        owner = hash_owners(dataset.X_train, dataset.y_train, n_nodes, key)
    elif scheme == "dirichlet":
        if dataset.y_train.dtype.kind in "iu":
            owner = dirichlet_owners(dataset.y_train, n_nodes, alpha=alpha, seed=seed)
        else:
            owner = contiguous_owners(dataset.y_train.shape[0], n_nodes)
    else:
        raise ValueError(f"unknown shard scheme {scheme!r}; available: {', '.join(SCHEMES)}")
    mask = owner == node_index
    return dataset.X_train[mask].copy(), dataset.y_train[mask].copy()


def hash_owners(
    X: NDArray[np.generic], y: NDArray[np.generic], n_nodes: int, key: bytes
) -> NDArray[np.int64]:
    """Owner of each example by a keyed BLAKE2b of its content."""
    if not 1 <= len(key) <= BLAKE2B_MAX_KEY_BYTES:
        raise ValueError(f"shard key must be 1-{BLAKE2B_MAX_KEY_BYTES} bytes, got {len(key)}")
    Xc = np.ascontiguousarray(X)
    yc = np.ascontiguousarray(y)
    owners = np.empty(Xc.shape[0], dtype=np.int64)
    for i in range(Xc.shape[0]):
        h = hashlib.blake2b(
            Xc[i].tobytes() + yc[i].tobytes(), digest_size=HASH_DIGEST_BYTES, key=key
        )
        owners[i] = int.from_bytes(h.digest(), "little") % n_nodes
    return owners


def dirichlet_owners(
    y: NDArray[np.generic], n_nodes: int, *, alpha: float, seed: int
) -> NDArray[np.int64]:
    """Owner of each example under a per-class Dirichlet(alpha) label skew."""
    if not alpha > 0.0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if y.shape[0] < n_nodes:
        raise ValueError(f"{y.shape[0]} examples cannot fill {n_nodes} non-empty shards")
    rng = np.random.default_rng(seed)
    owners = np.empty(y.shape[0], dtype=np.int64)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        proportions = rng.dirichlet(np.full(n_nodes, alpha))
        cuts = np.round(np.cumsum(proportions)[:-1] * members.shape[0]).astype(np.int64)
        for node, part in enumerate(np.split(members, cuts)):
            owners[part] = node
    _fill_empty_shards(owners, n_nodes)
    return owners


def _fill_empty_shards(owners: NDArray[np.int64], n_nodes: int) -> None:
    """Give each empty shard the last example of the currently largest shard."""
    for node in range(n_nodes):
        counts = np.bincount(owners, minlength=n_nodes)
        if counts[node] == 0:
            donor = int(np.argmax(counts))
            owners[np.flatnonzero(owners == donor)[-1]] = node


def contiguous_owners(n: int, n_nodes: int) -> NDArray[np.int64]:
    """Owner of each example when node ``k`` takes the ``k``-th consecutive stretch."""
    if n < n_nodes:
        raise ValueError(f"{n} examples cannot fill {n_nodes} non-empty shards")
    return (np.arange(n, dtype=np.int64) * n_nodes) // n


def derive_shard_key(secret: bytes, *, salt: bytes = b"gradchain/shard") -> bytes:
    """A 32-byte AES key from a node secret (HKDF-SHA256, RFC 5869)."""
    if not secret:
        raise ValueError("secret must not be empty")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=HKDF_INFO).derive(
        secret
    )


def _array_header(a: NDArray[np.generic]) -> bytes:
    dtype = a.dtype.newbyteorder("<").str if a.dtype.byteorder == "=" else a.dtype.str
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"shard arrays must be one of {ALLOWED_DTYPES}, got {a.dtype}")
    code = dtype.encode("ascii")
    return (
        struct.pack("<B", len(code))
        + code
        + struct.pack("<B", a.ndim)
        + struct.pack(f"<{a.ndim}Q", *a.shape)
    )


def encrypt_shard(
    X: NDArray[np.generic], y: NDArray[np.generic], key: bytes, nonce: bytes
) -> bytes:
    """Seal a shard with AES-256-GCM under ``key`` and a caller-chosen ``nonce``.

    ``nonce`` must be 12 fresh random bytes per encryption (``os.urandom``):
    reusing a nonce under one key breaks GCM.
    """
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"need X of shape (n, d) and y of shape (n,), got {X.shape} and {y.shape}")
    Xl = np.ascontiguousarray(X, dtype=X.dtype.newbyteorder("<"))
    yl = np.ascontiguousarray(y, dtype=y.dtype.newbyteorder("<"))
    plaintext = _array_header(Xl) + _array_header(yl) + Xl.tobytes() + yl.tobytes()
    return _PREFIX + nonce + AESGCM(key).encrypt(nonce, plaintext, _PREFIX)


class _Reader:
    """Bounds-checked cursor over the decrypted plaintext."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ShardError("shard contents are truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def array_spec(self) -> tuple[np.dtype[np.generic], tuple[int, ...]]:
        code = self.take(self.take(1)[0]).decode("ascii", errors="replace")
        if code not in ALLOWED_DTYPES:
            raise ShardError(f"shard holds an unsupported dtype {code!r}")
        ndim = self.take(1)[0]
        if not 1 <= ndim <= MAX_DIMS:
            raise ShardError(f"shard holds an array of {ndim} dimensions")
        shape = struct.unpack(f"<{ndim}Q", self.take(8 * ndim))
        return np.dtype(code), tuple(int(s) for s in shape)

    def array(self, dtype: np.dtype[np.generic], shape: tuple[int, ...]) -> NDArray[np.generic]:
        count = 1
        for s in shape:
            count *= s
        raw = self.take(count * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def decrypt_shard(blob: bytes, key: bytes) -> tuple[NDArray[np.generic], NDArray[np.generic]]:
    """Open a blob made by :func:`encrypt_shard`.

    Raises
    ------
    ShardError
        "not a gradchain shard file" for a wrong magic, version or a blob too
        short to hold one; "wrong key or the shard file was modified" when
        authentication fails.
    """
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    if len(blob) < len(_PREFIX) + NONCE_BYTES + TAG_BYTES or not blob.startswith(_PREFIX):
        raise ShardError("not a gradchain shard file")
    nonce = blob[len(_PREFIX) : len(_PREFIX) + NONCE_BYTES]
    try:
        plaintext = AESGCM(key).decrypt(nonce, blob[len(_PREFIX) + NONCE_BYTES :], _PREFIX)
    except InvalidTag:
        raise ShardError("wrong key or the shard file was modified") from None
    reader = _Reader(plaintext)
    x_dtype, x_shape = reader.array_spec()
    y_dtype, y_shape = reader.array_spec()
    if len(x_shape) != 2 or len(y_shape) != 1 or x_shape[0] != y_shape[0]:
        raise ShardError(f"shard shapes do not match: X {x_shape}, y {y_shape}")
    X = reader.array(x_dtype, x_shape)
    y = reader.array(y_dtype, y_shape)
    if reader.pos != len(plaintext):
        raise ShardError("shard has trailing bytes")
    return X, y
