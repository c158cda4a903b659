"""Byzantine attacks on federated updates, for tests, the testnet's attackers and the simulator.

Each attack turns an attacker's own honest pseudo-gradient ``own`` (what it
would have published) into the delta it publishes instead. Omniscient attacks
(ALIE) also see the round's honest deltas, an ``(n_honest, d)`` array; the
others ignore it. Randomness comes from the ``rng`` the caller passes, so a
seeded run replays exactly.

These are the attacker's choices, not consensus: they may use numpy reductions
freely.

Attacks
-------
``sign-flip``
    ``-scale * own``, or with ``to_norm`` the reversed direction rescaled to
    that L2 norm (an attacker who reads the chain's norm bound publishes the
    largest reversed step that still passes it). It pushes the model up the
    loss instead of down. Studied as
    the "reversed gradient" / sign-flipping attack in Damaskinos et al. 2018
    (Kardam, https://arxiv.org/abs/1802.07928) and Li et al. 2019 (RSA,
    https://arxiv.org/abs/1811.03761). Some papers flip the honest mean
    instead of the attacker's own delta; with i.i.d. shards the two are close,
    and using ``own`` keeps the attacker non-omniscient.
``gaussian``
    Pure noise ``N(0, sigma^2)`` per coordinate, the Gaussian Byzantine vector
    of Blanchard et al. 2017 (Krum, https://arxiv.org/abs/1703.02757).
``scaling``
    ``lam * own`` (boosting), as in Bhagoji et al. 2019
    (https://arxiv.org/abs/1811.12470) and the model-replacement attack of
    Bagdasaryan et al. 2020 (https://arxiv.org/abs/1807.00459). The chain's
    norm bound rejects a boosted delta outright: that is part of the defence.
``label-flip``
    A data attack (Tolpegin et al. 2020, https://arxiv.org/abs/2007.08432):
    the attacker trains honestly on labels mapped by :func:`flip_labels`.
    :func:`attack` returns ``own`` unchanged for it; the caller (trainer,
    simulator) flips the labels before training, see :func:`is_data_attack`.
``alie``
    "A Little Is Enough" (Baruch, Baruch and Goldberg, NeurIPS 2019,
    https://arxiv.org/abs/1902.06156): every attacker publishes
    ``mean - z * std`` per coordinate over the honest deltas, with ``z`` from
    the paper's formula (:func:`alie_z`) so the malicious vector stays inside
    the honest spread, where median, trimmed mean and Krum cannot tell it
    apart, yet shifts every coordinate the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ATTACKS",
    "DATA_ATTACKS",
    "alie_z",
    "attack",
    "flip_labels",
    "is_data_attack",
]

F32 = npt.NDArray[np.float32]

DEFAULT_SIGN_FLIP_SCALE = 1.0  # publish exactly -own: as strong as one honest update, reversed
DEFAULT_GAUSSIAN_STD = 1.0  # per-coordinate noise std; several times a typical honest delta
DEFAULT_SCALING_FACTOR = 10.0  # boosting factor used by Bhagoji et al. 2019


def flip_labels(y: npt.NDArray[np.integer[Any]], n_classes: int) -> npt.NDArray[np.integer[Any]]:
    """Map class ``c`` to ``n_classes - 1 - c``: every label wrong, the classes still balanced."""
    labels = np.asarray(y)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]"
        )
    flipped: npt.NDArray[np.integer[Any]] = (n_classes - 1 - labels).astype(labels.dtype)
    return flipped


def alie_z(n: int, f: int) -> float:
    """The ALIE deviation ``z_max`` for ``n`` workers of which ``f`` are malicious.

    Baruch et al. 2019, section 3: the attackers need ``s = floor(n/2 + 1) - f``
    honest workers on their side for a majority, and pick the largest ``z``
    with ``Phi(z) < (n - s) / n`` (``Phi`` the standard normal CDF), so that
    about ``s`` honest coordinates lie farther from the mean than the attack.
    When that probability is not in ``(0, 1)`` (``f`` of 0 or a majority)
    ``z`` is clamped to 0 (publish the mean) or a large finite value.
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"need n >= 1 workers and 0 <= f <= n attackers, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return NormalDist().inv_cdf(1.0 - 1.0 / (4 * n))  # a majority needs no subtlety
    return NormalDist().inv_cdf(p)


def _sign_flip(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    scale = float(p.pop("scale", DEFAULT_SIGN_FLIP_SCALE))
    to_norm = p.pop("to_norm", None)
    _no_more(p, "sign-flip")
    if to_norm is not None:
        norm = float(np.linalg.norm(own.astype(np.float64)))
        scale = float(to_norm) / norm if norm > 0.0 else 0.0
    return (-np.float32(scale) * own).astype(np.float32)


def _gaussian(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    sigma = float(p.pop("sigma", DEFAULT_GAUSSIAN_STD))
    _no_more(p, "gaussian")
    if not sigma >= 0.0:
        raise ValueError(f"gaussian sigma must be non-negative, got {sigma}")
    return rng.normal(0.0, sigma, size=own.shape).astype(np.float32)


def _scaling(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    lam = float(p.pop("lam", DEFAULT_SCALING_FACTOR))
    _no_more(p, "scaling")
    return (np.float32(lam) * own).astype(np.float32)


def _label_flip(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    _no_more(p, "label-flip")
    return own.copy()  # the poison is in the training labels, see flip_labels


def _alie(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    if honest is None or honest.ndim != 2 or honest.shape[0] < 1 or honest.shape[1] != own.shape[0]:
        raise ValueError("alie needs the round's honest deltas as an (n_honest, d) array")
    f = int(p.pop("f", 1))
    z_given = p.pop("z", None)
    _no_more(p, "alie")
    z = alie_z(honest.shape[0] + f, f) if z_given is None else float(z_given)
    wide = honest.astype(np.float64)
    mean: npt.NDArray[np.float64] = wide.mean(axis=0)
    std: npt.NDArray[np.float64] = wide.std(axis=0)  # population std (ddof 0), as in the paper
    return (mean - z * std).astype(np.float32)


def _no_more(params: dict[str, Any], name: str) -> None:
    if params:
        raise TypeError(f"attack {name!r} got unknown parameters {sorted(params)}")


_ATTACK_FUNCTIONS: dict[str, Callable[..., F32]] = {
    "sign-flip": _sign_flip,
    "gaussian": _gaussian,
    "scaling": _scaling,
    "label-flip": _label_flip,
    "alie": _alie,
}
ATTACKS: tuple[str, ...] = tuple(_ATTACK_FUNCTIONS)
DATA_ATTACKS: frozenset[str] = frozenset({"label-flip"})


def is_data_attack(name: str) -> bool:
    """True for attacks that poison the training data, not the published delta."""
    if name not in _ATTACK_FUNCTIONS:
        raise ValueError(f"unknown attack {name!r}, expected one of {ATTACKS}")
    return name in DATA_ATTACKS


def attack(
    name: str,
    own: npt.NDArray[np.floating],
    honest: npt.NDArray[np.floating] | None,
    rng: np.random.Generator,
    **params: Any,
) -> F32:
    """The malicious delta an attacker publishes instead of ``own``.

    Parameters
    ----------
    name
        One of :data:`ATTACKS`.
    own
        The attacker's own honest delta, flat, ``(d,)``.
    honest
        The round's honest deltas ``(n_honest, d)``; only ``alie`` needs them.
    rng
        The only source of randomness (``gaussian``).
    **params
        ``sign-flip``: ``scale`` (default 1) or ``to_norm`` (an L2 norm,
        overrides ``scale``); ``gaussian``: ``sigma`` (default 1);
        ``scaling``: ``lam`` (default 10); ``alie``: ``f`` the number of
        attackers (default 1) or ``z`` to override the paper's value.
        Unknown parameters raise ``TypeError``.

    Returns
    -------
    numpy.ndarray
        A fresh float32 vector shaped like ``own``.
    """
    fn = _ATTACK_FUNCTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown attack {name!r}, expected one of {ATTACKS}")
    own32 = np.asarray(own, dtype=np.float32)
    if own32.ndim != 1:
        raise ValueError(f"own must be a flat delta, got shape {own32.shape}")
    honest32 = None if honest is None else np.asarray(honest, dtype=np.float32)
    return fn(own32, honest32, rng, **params)
