"""Pure consensus rules: encoding, hashing, targets, validation, state transition.

Nothing here opens a socket, a file or reads a clock: time, randomness and
storage are passed in, so every rule is a plain function a test can call.
Public names are re-exported lazily (PEP 562) so importing one rule module
does not load the numba hashing core.
"""

from __future__ import annotations

import importlib
from typing import Any

from consensus.errors import BlockRejected as BlockRejected
from consensus.errors import Reject as Reject

_EXPORTS: dict[str, str] = {
    "ChainParams": "consensus.params",
    "get_params": "consensus.params",
    "Header": "consensus.header",
    "header_hash": "consensus.header",
    "hash_hex": "consensus.header",
    "sha256d": "consensus.hashing",
    "search_nonce": "consensus.hashing",
    "bits_to_target": "consensus.pow",
    "target_to_bits": "consensus.pow",
    "check_proof_of_work": "consensus.pow",
    "next_bits": "consensus.pow",
    "Block": "consensus.block",
    "decode_block": "consensus.block",
    "decode_tx": "consensus.tx",
    "encode_tx": "consensus.tx",
    "State": "consensus.state",
    "state_transition": "consensus.transition",
    "ChainRules": "consensus.view",
    "ChainView": "consensus.view",
    "validate_block": "consensus.transition",
    "validate_header": "consensus.validation",
    "make_genesis": "consensus.genesis",
    "build_block": "consensus.template",
}

__all__ = sorted([*_EXPORTS, "BlockRejected", "Reject"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'consensus' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
