"""Attacks: each produces the malicious vector its paper describes, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from ml.attacks import ATTACKS, alie_z, attack, flip_labels, is_data_attack

D = 50
N_HONEST = 6


@pytest.fixture
def round_() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    honest = (rng.standard_normal((N_HONEST, D)) * 0.1 + 0.05).astype(np.float32)
    own = honest[0].copy()
    return own, honest


@pytest.mark.parametrize("name", ATTACKS)
def test_every_attack_returns_a_fresh_float32_vector_of_the_same_shape(
    name: str, round_: tuple[np.ndarray, np.ndarray]
) -> None:
    own, honest = round_
    before = own.copy()
    out = attack(name, own, honest, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == own.shape
    assert np.isfinite(out).all()
    assert not np.shares_memory(out, own)
    assert np.array_equal(own, before)  # the input is not modified


def test_sign_flip_is_the_negation(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, _ = round_
    rng = np.random.default_rng(0)
    assert np.array_equal(attack("sign-flip", own, None, rng), -own)
    assert np.allclose(attack("sign-flip", own, None, rng, scale=3.0), -3.0 * own)


def test_sign_flip_to_norm_reverses_at_the_asked_length(
    round_: tuple[np.ndarray, np.ndarray],
) -> None:
    own, _ = round_
    out = attack("sign-flip", own, None, np.random.default_rng(0), to_norm=9.99)
    assert np.linalg.norm(out.astype(np.float64)) == pytest.approx(9.99, rel=1e-6)
    cosine = np.dot(out, own) / (np.linalg.norm(out) * np.linalg.norm(own))
    assert cosine == pytest.approx(-1.0, abs=1e-6)
    zero = np.zeros(5, np.float32)
    assert np.array_equal(
        attack("sign-flip", zero, None, np.random.default_rng(0), to_norm=1.0), zero
    )


def test_scaling_boosts_by_lambda(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, _ = round_
    rng = np.random.default_rng(0)
    assert np.allclose(attack("scaling", own, None, rng), 10.0 * own)
    assert np.allclose(attack("scaling", own, None, rng, lam=2.5), 2.5 * own)


def test_gaussian_is_seeded_noise_with_the_asked_std() -> None:
    own = np.zeros(20_000, np.float32)
    a = attack("gaussian", own, None, np.random.default_rng(3), sigma=2.0)
    b = attack("gaussian", own, None, np.random.default_rng(3), sigma=2.0)
    assert np.array_equal(a, b)
    assert abs(float(a.std()) - 2.0) < 0.05
    assert abs(float(a.mean())) < 0.05


def test_label_flip_leaves_the_delta_and_flips_labels(
    round_: tuple[np.ndarray, np.ndarray],
) -> None:
    own, honest = round_
    assert np.array_equal(attack("label-flip", own, honest, np.random.default_rng(0)), own)
    assert is_data_attack("label-flip")
    assert not any(is_data_attack(n) for n in ATTACKS if n != "label-flip")
    y = np.array([0, 1, 2, 9, 5], np.int64)
    flipped = flip_labels(y, 10)
    assert flipped.tolist() == [9, 8, 7, 0, 4]
    assert flipped.dtype == y.dtype
    assert np.array_equal(flip_labels(flipped, 10), y)  # an involution
    with pytest.raises(ValueError):
        flip_labels(np.array([10]), 10)


def test_alie_lies_within_the_honest_spread(round_: tuple[np.ndarray, np.ndarray]) -> None:
    _, honest = round_
    f = 2
    out = attack("alie", honest[0], honest, np.random.default_rng(0), f=f).astype(np.float64)
    mean = honest.astype(np.float64).mean(axis=0)
    std = honest.astype(np.float64).std(axis=0)
    z = alie_z(N_HONEST + f, f)
    assert 0 < z < 1
    assert np.allclose(out, mean - z * std, atol=1e-6)
    # below the mean on every coordinate, but no farther than one std
    assert np.all(out <= mean + 1e-7)
    assert np.all(mean - out <= std + 1e-7)
    assert np.all(out >= honest.min(axis=0) - 1e-7)


def test_alie_z_follows_the_papers_formula() -> None:
    # n = 8, f = 2: s = floor(5) - 2 = 3, Phi(z) = 5/8
    assert alie_z(8, 2) == pytest.approx(0.3186, abs=1e-4)
    # n = 50, f = 12: s = 26 - 12 = 14, Phi(z) = 36/50
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(8, 0) == 0.0  # nobody to hide: the mean itself
    assert alie_z(8, 3) > alie_z(8, 2)  # more attackers can afford a larger lie
    assert np.isfinite(alie_z(4, 4))
    with pytest.raises(ValueError):
        alie_z(4, 5)


def test_alie_needs_the_honest_deltas(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, honest = round_
    with pytest.raises(ValueError):
        attack("alie", own, None, np.random.default_rng(0))
    with pytest.raises(ValueError):
        attack("alie", own, honest[:, :-1], np.random.default_rng(0))


def test_alie_z_override(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, honest = round_
    out = attack("alie", own, honest, np.random.default_rng(0), z=0.0)
    assert np.allclose(out, honest.mean(axis=0), atol=1e-7)


def test_unknown_names_and_parameters_are_refused(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, honest = round_
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        attack("backdoor", own, honest, rng)
    with pytest.raises(ValueError):
        is_data_attack("backdoor")
    with pytest.raises(TypeError):
        attack("sign-flip", own, honest, rng, sigma=1.0)
    with pytest.raises(ValueError):
        attack("sign-flip", honest, None, rng)  # not flat


# --------------------------------------------------------------------------
# Omniscient attacks: ipm, min-max, min-sum, mimic
# --------------------------------------------------------------------------


def test_ipm_is_the_scaled_reversed_honest_mean(round_: tuple[np.ndarray, np.ndarray]) -> None:
    own, honest = round_
    rng = np.random.default_rng(0)
    mean = honest.astype(np.float64).mean(axis=0)
    assert np.allclose(attack("ipm", own, honest, rng, eps=0.1), -0.1 * mean, atol=1e-7)
    capped = attack("ipm", own, honest, rng, eps=1e6, to_norm=2.0)
    assert np.isclose(np.linalg.norm(capped), 2.0, rtol=1e-5)
    assert float(capped @ mean) < 0.0
    small = attack("ipm", own, honest, rng, eps=0.1, to_norm=1e6)  # the cap only lowers eps
    assert np.allclose(small, -0.1 * mean, atol=1e-7)


def _distances(point: np.ndarray, honest: np.ndarray) -> np.ndarray:
    return np.linalg.norm(honest.astype(np.float64) - point.astype(np.float64), axis=1)


@pytest.mark.parametrize("dev", ["unit", "std", "sign"])
def test_min_max_stays_within_the_largest_honest_distance(
    round_: tuple[np.ndarray, np.ndarray], dev: str
) -> None:
    own, honest = round_
    out = attack("min-max", own, honest, np.random.default_rng(0), dev=dev)
    widest = max(float(np.max(_distances(h, honest))) for h in honest)
    assert float(np.max(_distances(out, honest))) <= widest * (1 + 1e-6)
    # and it is the largest such step: a little further breaks the bound
    mean = honest.astype(np.float64).mean(axis=0)
    step = out.astype(np.float64) - mean
    assert np.linalg.norm(step) > 0.0
    assert float(np.max(_distances(mean + 1.01 * step, honest))) > widest


def test_min_sum_stays_within_the_largest_honest_sum(
    round_: tuple[np.ndarray, np.ndarray],
) -> None:
    own, honest = round_
    out = attack("min-sum", own, honest, np.random.default_rng(0))
    limit = max(float(np.sum(_distances(h, honest) ** 2)) for h in honest)
    assert float(np.sum(_distances(out, honest) ** 2)) <= limit * (1 + 1e-6)
    mean = honest.astype(np.float64).mean(axis=0)
    unit = -mean / np.linalg.norm(mean)  # the default direction opposes the honest mean
    step = out.astype(np.float64) - mean
    assert np.allclose(step / np.linalg.norm(step), unit, atol=1e-5)


def test_mimic_copies_the_most_atypical_honest_node(
    round_: tuple[np.ndarray, np.ndarray],
) -> None:
    own, honest = round_
    rng = np.random.default_rng(0)
    gaps = honest.astype(np.float64) - honest.astype(np.float64).mean(axis=0)
    farthest = int(np.argmax((gaps**2).sum(axis=1)))
    assert np.array_equal(attack("mimic", own, honest, rng), honest[farthest])
    assert np.array_equal(attack("mimic", own, honest, rng, target=2), honest[2])
    with pytest.raises(ValueError):
        attack("mimic", own, honest, rng, target=N_HONEST)


@pytest.mark.parametrize("name", ["ipm", "min-max", "min-sum", "mimic"])
def test_omniscient_attacks_need_the_honest_deltas(
    name: str, round_: tuple[np.ndarray, np.ndarray]
) -> None:
    own, _ = round_
    with pytest.raises(ValueError, match="honest"):
        attack(name, own, None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="deviation"):
        attack("min-max", own, round_[1], np.random.default_rng(0), dev="up")
