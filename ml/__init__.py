"""Pure numpy/numba learning code: models, tasks, codecs, checks, aggregation.

No I/O of its own: callers pass data, keys and seeds in. Public names are
re-exported here lazily (PEP 562), so ``import ml.codec`` does not pay for
scikit-learn or the numba kernels it does not use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "TaskSpec": "ml.tasks",
    "builtin_task": "ml.tasks",
    "BUILTIN_TASKS": "ml.tasks",
    "init_params": "ml.models",
    "forward": "ml.models",
    "loss_and_grad": "ml.models",
    "predict": "ml.models",
    "Dataset": "ml.datasets",
    "load_dataset": "ml.datasets",
    "shard": "ml.shards",
    "encrypt_shard": "ml.shards",
    "decrypt_shard": "ml.shards",
    "derive_shard_key": "ml.shards",
    "ShardError": "ml.shards",
    "train_update": "ml.trainer",
    "train_central": "ml.trainer",
    "DPConfig": "ml.trainer",
    "epsilon": "ml.privacy",
    "evaluate": "ml.evaluate",
    "EncodedUpdate": "ml.codec",
    "encode_update": "ml.codec",
    "decode_update": "ml.codec",
    "UpdateCheckError": "ml.checks",
    "UpdateProblem": "ml.checks",
    "check_update": "ml.checks",
    "aggregate": "ml.aggregation",
    "AggregationError": "ml.aggregation",
    "RULES": "ml.aggregation",
    "attack": "ml.attacks",
    "ATTACKS": "ml.attacks",
    "validation_loss": "ml.gate",
    "check_useful": "ml.gate",
    "SimConfig": "ml.simulation",
    "run_simulation": "ml.simulation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ml' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
