"""Local trainer: pseudo-gradients, norm clipping, DP-SGD, and the central reference figures."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from ml.datasets import Dataset, load_dataset
from ml.evaluate import accuracy, evaluate
from ml.models import init_params, loss_and_grad
from ml.shards import shard
from ml.tasks import TaskSpec, builtin_task
from ml.trainer import NORM_MARGIN, DPConfig, clip_to_norm, train_central, train_update


@pytest.fixture(scope="module")
def spec() -> TaskSpec:
    return builtin_task("digits")


@pytest.fixture(scope="module")
def digits(spec: TaskSpec) -> Dataset:
    return load_dataset(spec)


def test_one_full_batch_step_is_lr_times_the_gradient(spec: TaskSpec, digits: Dataset) -> None:
    X, y = digits.X_train[:50], digits.y_train[:50]
    params = init_params(spec)
    before = params.copy()
    delta = train_update(
        spec, params, X, y, rng=np.random.default_rng(0), steps=1, lr=0.1, batch_size=50
    )
    assert np.array_equal(params, before), "train_update must not modify params"
    _, grad = loss_and_grad(spec, params, X, y)
    assert delta.dtype == np.float32 and delta.shape == (spec.param_count,)
    np.testing.assert_allclose(delta, 0.1 * grad, rtol=1e-4, atol=1e-6)


def test_local_training_lowers_the_local_loss(spec: TaskSpec, digits: Dataset) -> None:
    X, y = shard(digits, 0, 3)
    params = init_params(spec)
    delta = train_update(spec, params, X, y, rng=np.random.default_rng(0))
    assert loss_and_grad(spec, params - delta, X, y)[0] < loss_and_grad(spec, params, X, y)[0]


def test_same_rng_seed_same_delta(spec: TaskSpec, digits: Dataset) -> None:
    X, y = digits.X_train, digits.y_train
    p = init_params(spec)
    a = train_update(spec, p, X, y, rng=np.random.default_rng(5))
    assert np.array_equal(a, train_update(spec, p, X, y, rng=np.random.default_rng(5)))
    assert not np.array_equal(a, train_update(spec, p, X, y, rng=np.random.default_rng(6)))


def test_delta_is_clipped_inside_the_norm_bound(spec: TaskSpec, digits: Dataset) -> None:
    p = init_params(spec)
    delta = train_update(
        spec, p, digits.X_train, digits.y_train, rng=np.random.default_rng(0), clip_norm=0.5
    )
    assert np.linalg.norm(delta.astype(np.float64)) <= NORM_MARGIN * 0.5
    assert np.linalg.norm(delta.astype(np.float64)) > 0.99 * NORM_MARGIN * 0.5
    honest = train_update(spec, p, digits.X_train, digits.y_train, rng=np.random.default_rng(0))
    assert np.linalg.norm(honest.astype(np.float64)) <= spec.norm_bound


def test_clip_to_norm_scales_down_only() -> None:
    v = np.array([3.0, 4.0], dtype=np.float32)
    assert np.array_equal(clip_to_norm(v, 10.0), v)
    clipped = clip_to_norm(v, 1.0)
    assert np.linalg.norm(clipped.astype(np.float64)) <= 1.0
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-5)
    with pytest.raises(ValueError, match="bound"):
        clip_to_norm(v, 0.0)
    big = np.random.default_rng(0).normal(size=10_000).astype(np.float32) * 1e3
    for bound in (0.1, 1.0, 7.3):
        assert np.linalg.norm(clip_to_norm(big, bound).astype(np.float64)) <= bound


def test_empty_shard_is_refused(spec: TaskSpec) -> None:
    with pytest.raises(ValueError, match="empty"):
        train_update(
            spec,
            init_params(spec),
            np.zeros((0, 64), np.float32),
            np.zeros(0, np.int64),
            rng=np.random.default_rng(0),
        )


@pytest.mark.parametrize("hidden", [(), (16,)])
def test_dp_without_noise_or_clipping_is_plain_sgd(
    spec: TaskSpec, digits: Dataset, hidden: tuple[int, ...]
) -> None:
    s = dataclasses.replace(spec, model="mlp" if hidden else "softmax", hidden=hidden)
    X, y = digits.X_train[:64], digits.y_train[:64]
    p = init_params(s)
    kw = {"steps": 3, "lr": 0.5, "batch_size": 64}
    plain = train_update(s, p, X, y, rng=np.random.default_rng(0), **kw)
    dp = train_update(
        s, p, X, y, rng=np.random.default_rng(0), dp=DPConfig(clip=1e6, noise_multiplier=0.0), **kw
    )
    np.testing.assert_allclose(dp, plain, rtol=1e-4, atol=1e-6)


def test_dp_clipping_bounds_each_step(spec: TaskSpec, digits: Dataset) -> None:
    p = init_params(spec)
    dp = DPConfig(clip=0.01, noise_multiplier=0.0)
    delta = train_update(
        spec,
        p,
        digits.X_train,
        digits.y_train,
        rng=np.random.default_rng(0),
        steps=4,
        lr=1.0,
        dp=dp,
    )
    assert np.linalg.norm(delta.astype(np.float64)) <= 4 * 1.0 * 0.01 + 1e-6


def test_dp_noise_has_the_dp_sgd_scale(spec: TaskSpec, digits: Dataset) -> None:
    """One step, full batch: the noise on the mean gradient has std sigma * C / B."""
    X, y = digits.X_train[:100], digits.y_train[:100]
    p = init_params(spec)
    dp = DPConfig(clip=1.0, noise_multiplier=2.0)
    kw = {"steps": 1, "lr": 1.0, "batch_size": 100}
    quiet = train_update(spec, p, X, y, rng=np.random.default_rng(0), dp=DPConfig(1.0, 0.0), **kw)
    noisy = train_update(spec, p, X, y, rng=np.random.default_rng(1), dp=dp, **kw)
    noise_std = float(np.std((noisy - quiet).astype(np.float64)))
    assert noise_std == pytest.approx(2.0 * 1.0 / 100, rel=0.15)


def test_dp_config_validation() -> None:
    with pytest.raises(ValueError, match="clip"):
        DPConfig(clip=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPConfig(clip=1.0, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="delta"):
        DPConfig(clip=1.0, noise_multiplier=1.0, delta=1.5)


def sklearn_accuracy(model: Any, digits: Dataset) -> float:
    """The accuracy sklearn's ``model`` reaches on the shared split, computed here, not typed in."""
    model.fit(digits.X_train, digits.y_train)
    return float(np.mean(model.predict(digits.X_test) == digits.y_test))


def test_central_softmax_matches_sklearn_logistic_regression(
    spec: TaskSpec, digits: Dataset
) -> None:
    from sklearn.linear_model import LogisticRegression

    baseline = sklearn_accuracy(LogisticRegression(max_iter=2000), digits)
    params = train_central(spec, digits, epochs=100, lr=0.5, seed=0)
    assert accuracy(spec, params, digits.X_test, digits.y_test) >= baseline


def test_central_mlp64_matches_sklearn_mlp(spec: TaskSpec, digits: Dataset) -> None:
    from sklearn.neural_network import MLPClassifier

    baseline = sklearn_accuracy(MLPClassifier((64,), max_iter=1000, random_state=0), digits)
    mlp = dataclasses.replace(spec, model="mlp", hidden=(64,))
    params = train_central(mlp, digits, epochs=100, lr=0.2, weight_decay=1e-4, seed=0)
    assert accuracy(mlp, params, digits.X_test, digits.y_test) >= baseline


def test_stock_model_is_reported_against_the_naive_baseline() -> None:
    """Returns of a random walk are nearly unpredictable: the trained model
    should roughly match "tomorrow = today", not beat it by much or blow up."""
    stock = builtin_task("stock")
    data = load_dataset(stock)
    params = train_central(stock, data, epochs=20, lr=stock.lr, weight_decay=1e-2, seed=0)
    report = evaluate(stock, params, data)
    assert all(np.isfinite(v) for v in report.values())
    assert report["naive_mse"] == pytest.approx(float(np.mean(data.y_test.astype(np.float64) ** 2)))
    assert report["mse_ratio"] == pytest.approx(report["mse"] / report["naive_mse"])
    assert 0.8 < report["mse_ratio"] < 1.5
