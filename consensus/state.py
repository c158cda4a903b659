"""The chain state: accounts and the shared model, and its root.

``state_root`` hashes a canonical encoding of everything a block can change:
every account (sorted by address), the model parameters, the last applied
aggregate and the model version. Two nodes agree on the root only if they
hold bit-identical models, which is what makes the model shared.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

STATE_DOMAIN = b"gradchain/state/v1"


@dataclass(frozen=True, slots=True)
class Account:
    balance: int = 0
    nonce: int = 0


@dataclass(frozen=True)
class State:
    """Immutable post-state of a block. Arrays are read-only float32."""

    height: int
    accounts: Mapping[bytes, Account]
    params: np.ndarray
    last_aggregate: np.ndarray
    model_version: int
    root: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        for name in ("params", "last_aggregate"):
            array = getattr(self, name)
            if array.dtype != np.float32 or array.ndim != 1:
                raise ValueError(f"{name} must be a flat float32 vector")
            array.setflags(write=False)
        if not self.root:
            object.__setattr__(self, "root", compute_state_root(self))

    def account(self, address: bytes) -> Account:
        return self.accounts.get(address, Account())


def accounts_digest(accounts: Mapping[bytes, Account]) -> bytes:
    h = hashlib.sha256()
    for address in sorted(accounts):
        account = accounts[address]
        h.update(address + struct.pack("<QQ", account.balance, account.nonce))
    return h.digest()


def array_digest(array: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).digest()


def compute_state_root(state: State) -> bytes:
    h = hashlib.sha256(STATE_DOMAIN)
    h.update(struct.pack("<Q", state.height))
    h.update(accounts_digest(state.accounts))
    h.update(array_digest(state.params))
    h.update(array_digest(state.last_aggregate))
    h.update(struct.pack("<Q", state.model_version))
    return h.digest()
