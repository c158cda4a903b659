"""Models over a flat float32 vector: shapes, init, and gradients that match finite differences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml.models import (
    forward,
    init_params,
    loss_and_grad,
    param_count,
    param_shapes,
    per_example_grads,
    predict,
    unflatten,
)
from ml.tasks import TaskSpec, builtin_task

FD_STEP = 1e-6


def variants() -> list[TaskSpec]:
    digits = dataclasses.replace(builtin_task("digits"), input_dim=5, output_dim=3)
    stock = dataclasses.replace(builtin_task("stock"), input_dim=4, window=4, model="mlp", hidden=(3,))
    return [
        digits,
        dataclasses.replace(digits, model="mlp", hidden=(6,)),
        dataclasses.replace(digits, model="mlp", hidden=(6, 4)),
        dataclasses.replace(stock, model="softmax", hidden=()),
        stock,
        dataclasses.replace(stock, hidden=(5, 3)),
    ]


def batch(spec: TaskSpec, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, spec.input_dim)).astype(np.float32)
    if spec.head == "classify":
        return X, rng.integers(0, spec.output_dim, size=n).astype(np.int64)
    return X, rng.normal(size=n).astype(np.float32)


def loss64(spec: TaskSpec, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return loss_and_grad(spec, params, X, y)[0]


@pytest.mark.parametrize("spec", variants(), ids=lambda s: f"{s.model}{s.hidden}-{s.head}")
def test_gradient_matches_central_finite_differences(spec: TaskSpec) -> None:
    X, y = batch(spec)
    params = init_params(spec).astype(np.float64) + np.random.default_rng(1).normal(
        0, 0.1, spec.param_count
    )
    _, grad = loss_and_grad(spec, params, X, y)
    numeric = np.empty(spec.param_count)
    for i in range(spec.param_count):
        e = np.zeros(spec.param_count)
        e[i] = FD_STEP
        numeric[i] = (loss64(spec, params + e, X, y) - loss64(spec, params - e, X, y)) / (
            2 * FD_STEP
        )
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("spec", variants(), ids=lambda s: f"{s.model}{s.hidden}-{s.head}")
def test_per_example_gradients_average_to_the_batch_gradient(spec: TaskSpec) -> None:
    X, y = batch(spec, n=9)
    params = init_params(spec)
    per = per_example_grads(spec, params, X, y)
    assert per.shape == (9, spec.param_count)
    np.testing.assert_allclose(
        per.mean(axis=0), loss_and_grad(spec, params, X, y)[1], rtol=1e-4, atol=1e-6
    )
    single = loss_and_grad(spec, params, X[3:4], y[3:4])[1]
    np.testing.assert_allclose(per[3], single, rtol=1e-4, atol=1e-6)


def test_shapes_follow_the_layer_sizes() -> None:
    spec = dataclasses.replace(builtin_task("digits"), model="mlp", hidden=(64, 32))
    assert param_shapes(spec) == [
        ("W0", (64, 64)),
        ("b0", (64,)),
        ("W1", (64, 32)),
        ("b1", (32,)),
        ("W2", (32, 10)),
        ("b2", (10,)),
    ]
    assert param_count(spec) == spec.param_count == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_init_is_deterministic_float32_and_seed_dependent() -> None:
    spec = builtin_task("digits")
    a, b = init_params(spec), init_params(spec)
    assert a.dtype == np.float32 and a.shape == (650,)
    assert np.array_equal(a, b)
    assert not np.array_equal(
        a, init_params(dataclasses.replace(spec, init_seed=spec.init_seed + 1))
    )
    views = unflatten(spec, a)
    assert np.all(views["b0"] == 0) and np.abs(views["W0"]).max() <= np.sqrt(6 / 74)


def test_unflatten_returns_views_into_the_flat_vector() -> None:
    spec = builtin_task("digits")
    params = init_params(spec)
    unflatten(spec, params)["b0"][3] = 7.0
    assert params[64 * 10 + 3] == 7.0
    with pytest.raises(ValueError, match="650"):
        unflatten(spec, params[:-1])


def test_forward_and_predict_shapes_and_types() -> None:
    for spec in variants():
        X, _ = batch(spec)
        params = init_params(spec)
        assert forward(spec, params, X).shape == (7, spec.output_dim)
        pred = predict(spec, params, X)
        assert pred.shape == (7,)
        assert pred.dtype == (np.int64 if spec.head == "classify" else np.float32)


def test_bad_inputs_are_rejected() -> None:
    spec = builtin_task("digits")
    params = init_params(spec)
    with pytest.raises(ValueError, match="X must have shape"):
        forward(spec, params, np.zeros((2, 63), dtype=np.float32))
    with pytest.raises(ValueError, match="labels"):
        loss_and_grad(spec, params, np.zeros((1, 64), dtype=np.float32), np.array([10]))


def test_cross_entropy_is_stable_for_huge_logits() -> None:
    spec = dataclasses.replace(builtin_task("digits"), input_dim=2, output_dim=2)
    params = np.array([1e4, -1e4, 0, 0, 0, 0], dtype=np.float32)
    loss, grad = loss_and_grad(
        spec, params, np.array([[1.0, 0.0]], dtype=np.float32), np.array([1])
    )
    assert np.isfinite(loss) and loss == pytest.approx(2e4) and np.all(np.isfinite(grad))


# -- standardisation carried by the task (issue 19) --------------------------------------------


def scaled_pair() -> tuple[TaskSpec, TaskSpec, np.ndarray]:
    """The same task on unit columns and on columns 1024x larger and shifted, with matching stats."""
    base = dataclasses.replace(builtin_task("digits"), input_dim=4, output_dim=3)
    unit = dataclasses.replace(base, input_shift=(0.0,) * 4, input_scale=(1.0,) * 4)
    big = dataclasses.replace(base, input_shift=(512.0,) * 4, input_scale=(1024.0,) * 4)
    # Multiples of 1/64: scaling by 1024 and shifting by 512 stay exact in float32.
    X = (np.random.default_rng(1).integers(-128, 128, size=(9, 4)) / 64.0).astype(np.float32)
    return unit, big, X


def test_the_model_applies_the_tasks_standardisation_in_training_and_inference() -> None:
    """Raw columns on another scale train and predict exactly like unit columns."""
    unit, big, X = scaled_pair()
    raw = (X * np.float32(1024.0) + np.float32(512.0)).astype(np.float32)  # exact: powers of two
    params = init_params(unit)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(forward(unit, params, X), forward(big, params, raw))
    np.testing.assert_array_equal(predict(unit, params, X), predict(big, params, raw))
    loss_a, grad_a = loss_and_grad(unit, params, X, y)
    loss_b, grad_b = loss_and_grad(big, params, raw, y)
    assert loss_a == loss_b and np.array_equal(grad_a, grad_b)


def test_a_regression_predicts_in_the_labels_own_units() -> None:
    base = dataclasses.replace(builtin_task("stock"), window=0, input_dim=2)
    scaled = dataclasses.replace(base, label_shift=1000.0, label_scale=8.0)
    params = init_params(base)
    X = np.array([[1.0, 2.0], [-1.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(predict(scaled, params, X), predict(base, params, X) * 8.0 + 1000.0, rtol=1e-6)
    # The loss is taken on the standardised label: the same as the unscaled task on (y - 1000) / 8.
    y = np.array([1008.0, 984.0], dtype=np.float32)
    assert loss_and_grad(scaled, params, X, y)[0] == pytest.approx(
        loss_and_grad(base, params, X, (y - 1000.0) / 8.0)[0]
    )
