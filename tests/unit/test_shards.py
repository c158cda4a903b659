"""Shards: partitions every node computes alone, and the sealed on-disk form."""

from __future__ import annotations

import numpy as np
import pytest

from ml.datasets import Dataset, load_dataset
from ml.shards import ShardError, decrypt_shard, derive_shard_key, encrypt_shard, shard
from ml.tasks import builtin_task

NONCE = bytes(range(12))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(builtin_task("digits"))


def rows(X: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in X}


@pytest.mark.parametrize("scheme", ["hash", "dirichlet"])
def test_every_example_lands_in_exactly_one_non_empty_shard(digits: Dataset, scheme: str) -> None:
    parts = [shard(digits, i, 5, scheme, alpha=0.1, seed=3) for i in range(5)]
    assert all(X.shape[0] > 0 for X, _ in parts)
    assert sum(X.shape[0] for X, _ in parts) == digits.X_train.shape[0]
    union = np.concatenate([X for X, _ in parts])
    assert rows(union) == rows(digits.X_train)
    for X, y in parts:
        assert X.dtype == np.float32 and y.dtype == np.int64


def test_partitions_are_deterministic_and_depend_on_key_and_seed(digits: Dataset) -> None:
    a = shard(digits, 1, 3, "hash")[1]
    assert np.array_equal(a, shard(digits, 1, 3, "hash")[1])
    assert not np.array_equal(a, shard(digits, 1, 3, "hash", key=b"other")[1])
    b = shard(digits, 1, 3, "dirichlet", seed=0)[1]
    assert np.array_equal(b, shard(digits, 1, 3, "dirichlet", seed=0)[1])
    assert not np.array_equal(b, shard(digits, 1, 3, "dirichlet", seed=1)[1])


def test_hash_assignment_ignores_row_order(digits: Dataset) -> None:
    perm = np.random.default_rng(0).permutation(digits.X_train.shape[0])
    shuffled = Dataset(
        "d", digits.X_train[perm], digits.y_train[perm], digits.X_test, digits.y_test
    )
    assert rows(shard(digits, 2, 4)[0]) == rows(shard(shuffled, 2, 4)[0])


def test_small_alpha_skews_labels(digits: Dataset) -> None:
    """Dirichlet(0.1) shards are dominated by few classes; hash shards are not."""

    def top_share(y: np.ndarray) -> float:
        return float(np.bincount(y, minlength=10).max() / y.shape[0])

    skewed = [top_share(shard(digits, i, 3, "dirichlet", alpha=0.1)[1]) for i in range(3)]
    iid = [top_share(shard(digits, i, 3, "hash")[1]) for i in range(3)]
    assert min(skewed) > 0.2 and max(iid) < 0.15


def test_regress_dirichlet_falls_back_to_contiguous_time_blocks() -> None:
    stock = load_dataset(builtin_task("stock"))
    parts = [shard(stock, i, 3, "dirichlet")[0] for i in range(3)]
    assert np.array_equal(np.concatenate(parts), stock.X_train)


def test_bad_arguments() -> None:
    d = load_dataset(builtin_task("digits"))
    with pytest.raises(ValueError, match="node_index"):
        shard(d, 3, 3)
    with pytest.raises(ValueError, match="scheme"):
        shard(d, 0, 3, "random")


def key() -> bytes:
    return derive_shard_key(b"node secret")


def test_encrypted_shard_round_trips(digits: Dataset) -> None:
    X, y = shard(digits, 0, 3)
    blob = encrypt_shard(X, y, key(), NONCE)
    X2, y2 = decrypt_shard(blob, key())
    assert X2.dtype == X.dtype and y2.dtype == y.dtype
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    assert X.tobytes() not in blob


def test_key_derivation_is_deterministic_and_salted() -> None:
    assert len(key()) == 32 and key() == derive_shard_key(b"node secret")
    assert key() != derive_shard_key(b"node secret", salt=b"other")
    assert key() != derive_shard_key(b"other secret")


def test_wrong_key_and_any_flipped_byte_fail_authentication() -> None:
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.arange(4, dtype=np.int64)
    blob = encrypt_shard(X, y, key(), NONCE)
    with pytest.raises(ShardError, match="wrong key or the shard file was modified"):
        decrypt_shard(blob, derive_shard_key(b"intruder"))
    for position in (8, 20, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 1
        with pytest.raises(ShardError, match="wrong key or the shard file was modified"):
            decrypt_shard(bytes(tampered), key())


@pytest.mark.parametrize(
    "blob", [b"", b"GCSHARD", b"PK\x03\x04" + bytes(40), b"GCSHARD\x02" + bytes(40)]
)
def test_foreign_files_are_not_shards(blob: bytes) -> None:
    with pytest.raises(ShardError, match="not a gradchain shard file"):
        decrypt_shard(blob, key())


def test_encrypt_refuses_bad_inputs() -> None:
    X = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="nonce"):
        encrypt_shard(X, np.zeros(2, dtype=np.int64), key(), b"short")
    with pytest.raises(ValueError, match="shape"):
        encrypt_shard(X, np.zeros(3, dtype=np.int64), key(), NONCE)
    with pytest.raises(ValueError, match="dtype|one of"):
        encrypt_shard(X.astype(object), np.zeros(2, dtype=np.int64), key(), NONCE)


def test_authentic_but_inconsistent_plaintext_is_rejected_before_frombuffer() -> None:
    """A blob sealed with the right key but a lying header still fails cleanly."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ml.shards import _PREFIX

    header = b"\x03<f4\x02" + (10**6).to_bytes(8, "little") + (3).to_bytes(8, "little")
    header += b"\x03<i8\x01" + (10**6).to_bytes(8, "little")
    blob = _PREFIX + NONCE + AESGCM(key()).encrypt(NONCE, header + bytes(16), _PREFIX)
    with pytest.raises(ShardError, match="truncated"):
        decrypt_shard(blob, key())
