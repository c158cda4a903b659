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
``ipm``
    Inner-product manipulation (Xie, Koyejo and Gupta, UAI 2020,
    https://arxiv.org/abs/1903.03936): every attacker publishes
    ``-eps * mean(honest)``. With a small ``eps`` the malicious vectors sit
    near the honest ones, yet they drag the aggregate's inner product with
    the true gradient towards zero; with ``eps > (n - f) / f`` they reverse
    the plain mean outright (``to_norm`` caps the step at the chain's bound).
``min-max`` / ``min-sum``
    Shejwalkar and Houmansadr, NDSS 2021 ("Manipulating the Byzantine",
    https://www.ndss-symposium.org/ndss-paper/manipulating-the-byzantine-optimizing-model-poisoning-attacks-and-defenses-for-federated-learning/):
    ``mean + gamma * p`` with ``p`` the inverse unit vector of the honest
    mean (``dev="unit"``, the strongest here; ``"std"`` and ``"sign"`` are
    the paper's other two) and the largest ``gamma`` that
    stays inside the honest spread: for min-max, its farthest distance to an
    honest delta is at most the largest honest pairwise distance; for
    min-sum, its sum of squared distances to the honest deltas is at most
    the largest such sum of an honest delta. ``gamma`` is found by the
    paper's halving search (:func:`largest_gamma`).
``mimic``
    Karimireddy, He and Jaggi, ICLR 2022 (https://arxiv.org/abs/2006.09365):
    every attacker copies one honest delta, so that node's (non-IID) data
    counts f + 1 times and the model skews towards it. Which node: ``target``
    (an index into the honest deltas), by default the honest delta farthest
    from the honest mean, the most atypical shard.
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
    "largest_gamma",
    "attack",
    "flip_labels",
    "is_data_attack",
]

F32 = npt.NDArray[np.float32]

DEFAULT_SIGN_FLIP_SCALE = 1.0  # publish exactly -own: as strong as one honest update, reversed
DEFAULT_GAUSSIAN_STD = 1.0  # per-coordinate noise std; several times a typical honest delta
DEFAULT_SCALING_FACTOR = 10.0  # boosting factor used by Bhagoji et al. 2019
DEFAULT_IPM_EPSILON = 0.5  # -eps * honest mean; Xie et al. 2020 study eps 0.1 (vs median) .. 100
DEVIATIONS = ("unit", "std", "sign")  # Shejwalkar & Houmansadr's perturbation directions
DEFAULT_DEVIATION = "unit"
GAMMA_INIT = 10.0  # Shejwalkar & Houmansadr's starting scale for the halving search
GAMMA_TOLERANCE = 1e-5  # the search stops once its step is below this


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


def _need_honest(honest: F32 | None, own: F32, name: str) -> npt.NDArray[np.float64]:
    if honest is None or honest.ndim != 2 or honest.shape[0] < 1 or honest.shape[1] != own.shape[0]:
        raise ValueError(f"{name} needs the round's honest deltas as an (n_honest, d) array")
    return honest.astype(np.float64)


def _ipm(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    wide = _need_honest(honest, own, "ipm")
    eps = float(p.pop("eps", DEFAULT_IPM_EPSILON))
    to_norm = p.pop("to_norm", None)
    _no_more(p, "ipm")
    mean = wide.mean(axis=0)
    if to_norm is not None:
        norm = float(np.linalg.norm(mean))
        if eps * norm > float(to_norm):
            eps = float(to_norm) / norm  # the largest step the norm bound lets through
    out: F32 = (-eps * mean).astype(np.float32)
    return out


def _sq_distances(
    points: npt.NDArray[np.float64], to: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Squared L2 distance of each row of ``points`` to each row of ``to``."""
    gaps = points[:, None, :] - to[None, :, :]
    out: npt.NDArray[np.float64] = np.einsum("ijk,ijk->ij", gaps, gaps)
    return out


def largest_gamma(
    mean: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    fits: Callable[[npt.NDArray[np.float64]], bool],
) -> float:
    """The largest ``gamma`` (to the search tolerance) with ``fits(mean + gamma * direction)``.

    Shejwalkar and Houmansadr 2021, Algorithm 1: start at ``GAMMA_INIT``,
    step by half the previous step, up while it fits and down while not,
    until the step is below ``GAMMA_TOLERANCE``; 0 when nothing fits.
    """
    gamma = GAMMA_INIT
    step = GAMMA_INIT / 2.0
    best = 0.0
    while step > GAMMA_TOLERANCE:
        if fits(mean + gamma * direction):
            best = max(best, gamma)
            gamma += step
        else:
            gamma -= step
        step /= 2.0
    return best


def _deviation(
    dev: str, mean: npt.NDArray[np.float64], wide: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The perturbation direction ``p``: the paper's inverse unit vector, inverse std or inverse sign."""
    if dev == "unit":
        norm = float(np.linalg.norm(mean))
        unit: npt.NDArray[np.float64] = -mean / norm if norm > 0.0 else np.zeros_like(mean)
        return unit
    if dev == "std":
        spread: npt.NDArray[np.float64] = -wide.std(axis=0)
        return spread
    if dev == "sign":
        signs: npt.NDArray[np.float64] = -np.sign(mean)
        return signs
    raise ValueError(f"deviation must be one of {DEVIATIONS}, got {dev!r}")


def _spread_attack(own: F32, honest: F32 | None, name: str, **p: Any) -> F32:
    wide = _need_honest(honest, own, name)
    dev = str(p.pop("dev", DEFAULT_DEVIATION))
    _no_more(p, name)
    mean: npt.NDArray[np.float64] = wide.mean(axis=0)
    direction = _deviation(dev, mean, wide)
    pair = _sq_distances(wide, wide)
    if name == "min-max":
        limit = float(pair.max())

        def fits(candidate: npt.NDArray[np.float64]) -> bool:
            return float(_sq_distances(candidate[None, :], wide).max()) <= limit

    else:
        limit = float(pair.sum(axis=1).max())

        def fits(candidate: npt.NDArray[np.float64]) -> bool:
            return float(_sq_distances(candidate[None, :], wide).sum()) <= limit

    return (mean + largest_gamma(mean, direction, fits) * direction).astype(np.float32)


def _min_max(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    return _spread_attack(own, honest, "min-max", **p)


def _min_sum(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    return _spread_attack(own, honest, "min-sum", **p)


def _mimic(own: F32, honest: F32 | None, rng: np.random.Generator, **p: Any) -> F32:
    wide = _need_honest(honest, own, "mimic")
    target = p.pop("target", None)
    _no_more(p, "mimic")
    if target is None:
        gaps = wide - wide.mean(axis=0)
        index = int(np.argmax(np.einsum("ij,ij->i", gaps, gaps)))  # first on a tie
    else:
        index = int(target)
        if not 0 <= index < wide.shape[0]:
            raise ValueError(
                f"mimic target must index the {wide.shape[0]} honest deltas, got {target}"
            )
    copied: F32 = wide[index].astype(np.float32)  # exact: the float32 values widened and back
    return copied


def _no_more(params: dict[str, Any], name: str) -> None:
    if params:
        raise TypeError(f"attack {name!r} got unknown parameters {sorted(params)}")


_ATTACK_FUNCTIONS: dict[str, Callable[..., F32]] = {
    "sign-flip": _sign_flip,
    "gaussian": _gaussian,
    "scaling": _scaling,
    "label-flip": _label_flip,
    "alie": _alie,
    "ipm": _ipm,
    "min-max": _min_max,
    "min-sum": _min_sum,
    "mimic": _mimic,
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
        The round's honest deltas ``(n_honest, d)``; ``alie``, ``ipm``,
        ``min-max``, ``min-sum`` and ``mimic`` need them (omniscient).
    rng
        The only source of randomness (``gaussian``).
    **params
        ``sign-flip``: ``scale`` (default 1) or ``to_norm`` (an L2 norm,
        overrides ``scale``); ``gaussian``: ``sigma`` (default 1);
        ``scaling``: ``lam`` (default 10); ``alie``: ``f`` the number of
        attackers (default 1) or ``z`` to override the paper's value;
        ``ipm``: ``eps`` (default 0.5) and ``to_norm`` (eps lowered so the
        result's L2 norm stays within it); ``min-max``/``min-sum``: ``dev``,
        the direction (``unit`` default, ``std``, ``sign``); ``mimic``: ``target`` (default the
        honest delta farthest from the honest mean).
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
