"""Local training: the pseudo-gradient a participant publishes, and central training.

A participant starts from the model at a base height, runs ``k`` local SGD
steps on its own shard and publishes ``delta = params_base - params_local``
(docs/DESIGN-NOTES.md). Consensus applies ``params - server_lr * aggregate``,
so with ``server_lr`` 1 and a single honest participant the chain moves
exactly where the local run went.

The delta is clipped to the task's norm bound (times :data:`NORM_MARGIN`):
consensus recomputes the norm in its own fixed summation order, which can
differ from numpy's in the last bits, and an honest update must never fail
the check on rounding.

Optional differential privacy follows DP-SGD (Abadi et al. 2016,
https://arxiv.org/abs/1607.00133): every example's gradient is clipped to
``DPConfig.clip``, the clipped gradients summed, Gaussian noise of standard
deviation ``noise_multiplier * clip`` added, and the result divided by the
batch size. :func:`ml.privacy.epsilon` turns the run into an (epsilon, delta)
guarantee. Minibatches are drawn without replacement at a fixed size, the
usual approximation of the Poisson sampling the accountant assumes.

All of this is policy: randomness comes in as a ``np.random.Generator``,
BLAS is fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.datasets import Dataset
from ml.models import init_params, loss_and_grad, per_example_grads
from ml.tasks import TaskSpec

# Clip honest deltas a hair inside the bound; float32 norms computed in a
# different order differ by far less than 0.1 %.
NORM_MARGIN = 0.999
F32 = np.float32


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: per-example clip norm, noise multiplier (sigma / clip), target delta."""

    clip: float
    noise_multiplier: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0.0):
            raise ValueError(f"DPConfig.clip must be a finite float > 0, got {self.clip!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0.0):
            raise ValueError(
                f"DPConfig.noise_multiplier must be a finite float >= 0, got {self.noise_multiplier!r}"
            )
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"DPConfig.delta must be in (0, 1), got {self.delta!r}")


def clip_to_norm(v: NDArray[np.floating], bound: float) -> NDArray[np.float32]:
    """``v`` scaled down (never up) so its L2 norm is at most ``bound``; float32 copy."""
    if not (math.isfinite(bound) and bound > 0.0):
        raise ValueError(f"bound must be a finite float > 0, got {bound!r}")
    out = np.asarray(v, dtype=F32).copy()
    norm = float(np.linalg.norm(out.astype(np.float64)))
    if norm > bound:
        out *= F32(bound / norm)
        # float32 rounding of the scale can leave the norm a few ulps high.
        while float(np.linalg.norm(out.astype(np.float64))) > bound:
            out *= F32(1.0 - 1e-6)
    return out


def _dp_gradient(
    spec: TaskSpec,
    params: NDArray[np.float32],
    X: NDArray[np.floating],
    y: NDArray[np.generic],
    dp: DPConfig,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Clipped, noised mean gradient of one minibatch (DP-SGD)."""
    grads = per_example_grads(spec, params, X, y)
    norms = np.sqrt(np.einsum("ij,ij->i", grads, grads))
    scale = np.minimum(1.0, dp.clip / np.maximum(norms, np.finfo(np.float64).tiny))
    total = (grads * scale[:, None]).sum(axis=0)
    total += rng.normal(0.0, dp.noise_multiplier * dp.clip, size=total.shape)
    out: NDArray[np.float64] = total / X.shape[0]
    return out


def _minibatch(n: int, batch_size: int, rng: np.random.Generator) -> NDArray[np.int64]:
    if batch_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.asarray(rng.choice(n, size=batch_size, replace=False), dtype=np.int64)


def train_update(
    spec: TaskSpec,
    params: NDArray[np.float32],
    X: NDArray[np.floating],
    y: NDArray[np.generic],
    *,
    rng: np.random.Generator,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    dp: DPConfig | None = None,
    clip_norm: float | None = None,
) -> NDArray[np.float32]:
    """Run local SGD from ``params`` and return the pseudo-gradient ``params - local``.

    Parameters
    ----------
    spec
        The task; ``local_steps``, ``lr``, ``batch_size`` and ``norm_bound``
        are the defaults for the keyword arguments.
    params
        The model at the base height; not modified.
    X, y
        This participant's shard.
    rng
        Source of the minibatch draws (and DP noise).
    dp
        DP-SGD settings, or None for plain SGD.
    clip_norm
        L2 bound on the returned delta (``NORM_MARGIN`` of it is used);
        defaults to ``spec.norm_bound`` so an honest update passes the chain's
        norm check.

    Returns
    -------
    numpy.ndarray
        Flat float32 delta of length ``spec.param_count``.
    """
    if X.shape[0] == 0:
        raise ValueError("cannot train on an empty shard")
    steps = spec.local_steps if steps is None else steps
    lr = spec.lr if lr is None else lr
    batch_size = spec.batch_size if batch_size is None else batch_size
    if steps < 1 or batch_size < 1 or not (math.isfinite(lr) and lr > 0.0):
        raise ValueError(
            f"need steps >= 1, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}"
        )
    base = np.asarray(params, dtype=F32)
    local = base.astype(np.float64)
    for _ in range(steps):
        idx = _minibatch(X.shape[0], batch_size, rng)
        if dp is None:
            _, grad = loss_and_grad(spec, local, X[idx], y[idx])
            local -= lr * grad.astype(np.float64)
        else:
            local -= lr * _dp_gradient(spec, local.astype(F32), X[idx], y[idx], dp, rng)
    delta = base - local.astype(F32)
    bound = spec.norm_bound if clip_norm is None else clip_norm
    return clip_to_norm(delta, NORM_MARGIN * bound)


def train_central(
    spec: TaskSpec,
    dataset: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 32,
    weight_decay: float = 0.0,
    seed: int = 0,
    params: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Train on the whole training split (the centralised reference).

    Minibatch SGD over shuffled epochs, with optional L2 weight decay, from
    ``params`` or the task's initial parameters. Benchmarks and tests compare
    the chain's model against this.
    """
    rng = np.random.default_rng(seed)
    local = (init_params(spec) if params is None else np.asarray(params, dtype=F32)).astype(
        np.float64
    )
    n = dataset.X_train.shape[0]
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            _, grad = loss_and_grad(spec, local, dataset.X_train[idx], dataset.y_train[idx])
            local -= lr * (grad.astype(np.float64) + weight_decay * local)
    return local.astype(F32)
