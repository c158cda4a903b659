"""Model definitions over one flat float32 parameter vector.

The chain stores the model as a single flat float32 vector (DESIGN.md, "State
and its root"); this module gives that vector its shapes and computes with
it. Two kinds of model share the code:

* ``softmax``: one affine layer (multinomial logistic regression for a
  classify head, linear regression for a regress head);
* ``mlp``: one or two ReLU hidden layers before the output layer.

A task may carry the standardisation of its inputs (``input_shift``,
``input_scale``; ``gradchain task init`` computes them from the data) and,
for regression, of its label (``label_shift``, ``label_scale``). The model
applies them itself, in training and in inference, so callers always pass
raw columns and get predictions in the label's own units: the layers see
``(x - shift) / scale`` (float32, elementwise, so the same bits everywhere,
as the consensus gate needs), and a regress head's output ``o`` is reported
as ``o * label_scale + label_shift``; its loss is taken on the standardised
label.

Layer ``i`` owns ``W{i}`` of shape ``(fan_in, fan_out)`` followed by ``b{i}``
of shape ``(fan_out,)``; the flat vector concatenates them in that order.

Everything here is policy arithmetic (training, prediction): numpy with BLAS
is fine. Consensus never calls these functions to decide validity.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ml.tasks import TaskSpec

F32 = np.float32
# Glorot/Xavier uniform limit is sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
GLOROT_NUMERATOR = 6.0
# He normal std is sqrt(2 / fan_in) for ReLU layers (He et al. 2015).
HE_NUMERATOR = 2.0

FloatArray = NDArray[np.float32]


def param_shapes(spec: TaskSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the parameter blocks, in flat-vector order."""
    sizes = spec.layer_sizes
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shapes.append((f"W{i}", (fan_in, fan_out)))
        shapes.append((f"b{i}", (fan_out,)))
    return shapes


def param_count(spec: TaskSpec) -> int:
    """Length of the flat parameter vector."""
    return sum(int(np.prod(shape)) for _, shape in param_shapes(spec))


def init_params(spec: TaskSpec) -> FloatArray:
    """Initial parameters, deterministic from ``spec.init_seed``.

    Hidden ReLU layers use He normal, the output layer Glorot uniform, biases
    zero. Draws are made in float64 and rounded once to float32 so the result
    depends only on numpy's documented PCG64 stream.
    """
    rng = np.random.default_rng(spec.init_seed)
    n_layers = len(spec.layer_sizes) - 1
    parts: list[NDArray[np.float64]] = []
    for name, shape in param_shapes(spec):
        if name.startswith("b"):
            parts.append(np.zeros(shape))
            continue
        fan_in, fan_out = shape
        if int(name[1:]) < n_layers - 1:
            parts.append(rng.normal(0.0, np.sqrt(HE_NUMERATOR / fan_in), size=shape))
        else:
            limit = np.sqrt(GLOROT_NUMERATOR / (fan_in + fan_out))
            parts.append(rng.uniform(-limit, limit, size=shape))
    return np.concatenate([p.ravel() for p in parts]).astype(F32)


def standardise_inputs(spec: TaskSpec, X: NDArray[np.floating]) -> NDArray[np.floating]:
    """``(X - input_shift) / input_scale`` in float32, or ``X`` untouched if the task has none.

    Elementwise IEEE float32 arithmetic: every machine gets the same bits.
    """
    if not spec.standardised:
        return X
    shift = np.asarray(spec.input_shift, dtype=F32)
    scale = np.asarray(spec.input_scale, dtype=F32)
    out: NDArray[np.float32] = (np.asarray(X, dtype=F32) - shift) / scale
    return out


def standardise_targets(spec: TaskSpec, y: NDArray[np.generic]) -> NDArray[np.float64]:
    """A regress task's labels in the units the model is trained in (float64, elementwise)."""
    values = np.asarray(y, dtype=np.float64)
    if spec.head != "regress" or (spec.label_shift, spec.label_scale) == (0.0, 1.0):
        return values
    out: NDArray[np.float64] = (values - spec.label_shift) / spec.label_scale
    return out


def _check_params(spec: TaskSpec, params: NDArray[np.floating]) -> None:
    expected = spec.param_count
    if params.ndim != 1 or params.shape[0] != expected:
        raise ValueError(
            f"params must be a flat vector of {expected} values, got shape {params.shape}"
        )


def unflatten(spec: TaskSpec, params: NDArray[np.floating]) -> dict[str, NDArray[np.floating]]:
    """Named views (no copies) into ``params``, shaped per :func:`param_shapes`."""
    _check_params(spec, params)
    views: dict[str, NDArray[np.floating]] = {}
    offset = 0
    for name, shape in param_shapes(spec):
        size = int(np.prod(shape))
        views[name] = params[offset : offset + size].reshape(shape)
        offset += size
    return views


def _layers(
    spec: TaskSpec, params: NDArray[np.floating]
) -> list[tuple[NDArray[np.floating], NDArray[np.floating]]]:
    views = unflatten(spec, params)
    return [(views[f"W{i}"], views[f"b{i}"]) for i in range(len(spec.layer_sizes) - 1)]


def _forward_cache(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating]
) -> tuple[list[NDArray[np.floating]], NDArray[np.floating]]:
    """Inputs of every layer (post-ReLU activations) and the raw output."""
    if X.ndim != 2 or X.shape[1] != spec.input_dim:
        raise ValueError(f"X must have shape (n, {spec.input_dim}), got {X.shape}")
    layers = _layers(spec, params)
    inputs: list[NDArray[np.floating]] = []
    h = standardise_inputs(spec, X)
    if h is not X:
        h = h.astype(params.dtype, copy=False)
    for i, (W, b) in enumerate(layers):
        inputs.append(h)
        z = h @ W + b
        h = np.maximum(z, 0) if i < len(layers) - 1 else z
    return inputs, h


def forward(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating]
) -> NDArray[np.floating]:
    """Raw model output of shape ``(n, output_dim)``: logits or regression values."""
    return _forward_cache(spec, params, X)[1]


def _output_error(
    spec: TaskSpec, out: NDArray[np.floating], y: NDArray[np.generic]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-example losses and d(loss_i)/d(output_i) (not yet divided by n)."""
    n = out.shape[0]
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    out64 = out.astype(np.float64)
    if spec.head == "classify":
        labels = y.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= spec.output_dim):
            raise ValueError(f"labels must lie in [0, {spec.output_dim - 1}]")
        shifted = out64 - out64.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        rows = np.arange(n)
        losses = log_norm - shifted[rows, labels]
        err = np.exp(shifted - log_norm[:, None])
        err[rows, labels] -= 1.0
        return losses, err
    resid = out64[:, 0] - standardise_targets(spec, y)
    return resid**2, (2.0 * resid)[:, None]


def loss_and_grad(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating], y: NDArray[np.generic]
) -> tuple[float, FloatArray]:
    """Mean loss over the batch and its flat float32 gradient.

    Classify heads use softmax cross-entropy, regress heads the mean squared
    error. Backpropagation runs in float64 (the batch is small and it keeps
    the finite-difference test meaningful), the gradient is returned as float32
    like the parameters.
    """
    inputs, out = _forward_cache(spec, params.astype(np.float64), X.astype(np.float64))
    losses, err = _output_error(spec, out, y)
    n = max(X.shape[0], 1)
    grads = _backprop(spec, params.astype(np.float64), inputs, err / n)
    return float(losses.sum() / n), np.concatenate([g.ravel() for g in grads]).astype(F32)


def _backprop(
    spec: TaskSpec,
    params: NDArray[np.floating],
    inputs: list[NDArray[np.floating]],
    err: NDArray[np.floating],
) -> list[NDArray[np.floating]]:
    """Gradient blocks in flat order, given d(loss)/d(output)."""
    layers = _layers(spec, params)
    blocks: list[NDArray[np.floating]] = []
    delta = err
    for i in range(len(layers) - 1, -1, -1):
        h = inputs[i]
        blocks.append(delta.sum(axis=0))
        blocks.append(h.T @ delta)
        if i > 0:
            delta = (delta @ layers[i][0].T) * (h > 0)
    blocks.reverse()
    return blocks


def per_example_grads(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating], y: NDArray[np.generic]
) -> NDArray[np.float64]:
    """Gradient of each example's loss, shape ``(n, param_count)``, float64.

    Used by DP-SGD (per-example clipping). Vectorised: one outer product per
    layer over the whole batch (``einsum``), no Python loop per example.
    """
    p64 = params.astype(np.float64)
    inputs, out = _forward_cache(spec, p64, X.astype(np.float64))
    _, err = _output_error(spec, out, y)
    layers = _layers(spec, p64)
    n = X.shape[0]
    blocks: list[NDArray[np.float64]] = []
    delta = err
    for i in range(len(layers) - 1, -1, -1):
        h = inputs[i]
        blocks.append(delta)
        blocks.append(np.einsum("ni,nj->nij", h, delta).reshape(n, -1))
        if i > 0:
            delta = (delta @ layers[i][0].T) * (h > 0)
    blocks.reverse()
    return np.concatenate(blocks, axis=1)


def predict(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating]
) -> NDArray[np.generic]:
    """Class ids (int64) for a classify head, predicted values (float32) for regress."""
    out = forward(spec, params, X)
    if spec.head == "classify":
        labels: NDArray[np.int64] = np.argmax(out, axis=1).astype(np.int64)
        return labels
    values: NDArray[np.float32] = out[:, 0].astype(F32)
    if (spec.label_shift, spec.label_scale) != (0.0, 1.0):
        values = (values * F32(spec.label_scale) + F32(spec.label_shift)).astype(F32)
    return values
