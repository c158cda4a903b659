"""RDP accountant for the subsampled Gaussian: known values and monotonicity."""

from __future__ import annotations

import math

import pytest

from ml.privacy import epsilon, rdp_subsampled_gaussian

MNIST_Q = 256 / 60000
MNIST_STEPS_60_EPOCHS = 60 * 60000 // 256


def test_abadi_mnist_figure_with_classic_conversion() -> None:
    """Noise 1.1, q = 256/60000, 60 epochs, delta 1e-5: epsilon ~3 (TF Privacy reports 3.01)."""
    eps = epsilon(1.1, MNIST_Q, MNIST_STEPS_60_EPOCHS, 1e-5, conversion="classic")
    assert eps == pytest.approx(3.01, abs=0.05)


def test_tight_conversion_is_smaller_and_matches_opacus_style_figure() -> None:
    classic = epsilon(1.1, MNIST_Q, MNIST_STEPS_60_EPOCHS, 1e-5, conversion="classic")
    tight = epsilon(1.1, MNIST_Q, MNIST_STEPS_60_EPOCHS, 1e-5)
    assert tight < classic
    assert tight == pytest.approx(2.6, abs=0.1)


def test_full_batch_rdp_is_the_gaussian_mechanism() -> None:
    assert rdp_subsampled_gaussian(2.0, 1.0, 5) == pytest.approx(5 / 8)
    # Subsampling at q = 1 through the general sum gives the same value.
    assert rdp_subsampled_gaussian(2.0, 1.0 - 1e-12, 5) == pytest.approx(5 / 8, rel=1e-6)


def test_epsilon_grows_with_steps_and_sample_rate_and_shrinks_with_noise() -> None:
    base = epsilon(1.0, 0.01, 1000, 1e-5)
    assert epsilon(1.0, 0.01, 2000, 1e-5) > base
    assert epsilon(1.0, 0.02, 1000, 1e-5) > base
    assert epsilon(2.0, 0.01, 1000, 1e-5) < base
    assert epsilon(1.0, 0.01, 1000, 1e-3) < base


def test_edge_cases() -> None:
    assert epsilon(1.0, 0.01, 0, 1e-5) == 0.0
    assert epsilon(1.0, 0.0, 100, 1e-5) == 0.0
    assert math.isinf(epsilon(0.0, 0.01, 100, 1e-5))
    for bad in ({"delta": 0.0}, {"delta": 1.0}):
        with pytest.raises(ValueError, match="delta"):
            epsilon(1.0, 0.01, 10, **bad)
    with pytest.raises(ValueError, match="sample_rate"):
        epsilon(1.0, 1.5, 10, 1e-5)
    with pytest.raises(ValueError, match="conversion"):
        epsilon(1.0, 0.1, 10, 1e-5, conversion="magic")
