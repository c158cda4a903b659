"""flower_digits: the model, the data and the training loop, in plain numpy.

A softmax regression: parameters ``[W, b]``, ``W`` of shape
(features, classes) and ``b`` of shape (classes,), logits ``X @ W + b``.
The data is one of scikit-learn's shipped tables (no download): the 8x8
handwritten digits (pixels scaled to [0, 1]; the default), the wine
cultivars or the breast-cancer diagnoses, each split 75/25 with a fixed
seed; each client trains on its own IID partition of the training part and
evaluates on the held-out part. When the server's config carries a
standardisation of the inputs (``input_shift`` and ``input_scale``, one
value per feature, as JSON lists), the client applies it to every row
before the model sees it.
"""

import json

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split

TABLES = {"digits": load_digits, "wine": load_wine, "breast_cancer": load_breast_cancer}
PIXEL_MAX = 16.0
TEST_SIZE = 0.25
SPLIT_SEED = 0
PARTITION_SEED = 42


def load_table(table="digits"):
    """The whole table's rows split into training and held-out parts: X_train, y_train, X_test, y_test."""
    if table not in TABLES:
        raise ValueError(f"no data for {table!r} in this example; it has {', '.join(TABLES)}")
    bunch = TABLES[table]()
    X = bunch.data.astype(np.float32)
    if table == "digits":
        X = X / np.float32(PIXEL_MAX)
    y = bunch.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return X_train, y_train, X_test, y_test


def load_data(partition_id, num_partitions, table="digits"):
    """This client's training partition and the shared test split: X_train, y_train, X_test, y_test."""
    X_train, y_train, X_test, y_test = load_table(table)
    order = np.random.default_rng(PARTITION_SEED).permutation(len(y_train))
    mine = np.array_split(order, num_partitions)[partition_id]
    return X_train[mine], y_train[mine], X_test, y_test


def standardise(X, config):
    """``(X - input_shift) / input_scale`` in float32 when the config carries them, else ``X``."""
    if "input_shift" not in config:
        return X
    shift = np.asarray(json.loads(config["input_shift"]), dtype=np.float32)
    scale = np.asarray(json.loads(config["input_scale"]), dtype=np.float32)
    return (np.asarray(X, dtype=np.float32) - shift) / scale


def get_initial_params(n_features, n_classes):
    """Zero weights and biases, the usual start of a logistic regression."""
    return [np.zeros((n_features, n_classes), np.float32), np.zeros(n_classes, np.float32)]


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_and_grads(params, X, y):
    """Mean cross-entropy over (X, y) and its gradients with respect to W and b."""
    W, b = params
    log_probs = _log_softmax(X.astype(np.float64) @ W + b)
    loss = -log_probs[np.arange(len(y)), y].mean()
    err = np.exp(log_probs)
    err[np.arange(len(y)), y] -= 1.0
    err /= len(y)
    return float(loss), [X.T @ err, err.sum(axis=0)]


def train(params, X, y, lr, steps, batch_size, rng):
    """``steps`` steps of minibatch SGD; returns the new parameters and the mean training loss."""
    W, b = (p.astype(np.float64) for p in params)
    losses = []
    for _ in range(steps):
        batch = rng.choice(len(y), size=min(batch_size, len(y)), replace=False)
        loss, (dW, db) = loss_and_grads([W, b], X[batch], y[batch])
        W, b = W - lr * dW, b - lr * db
        losses.append(loss)
    return [W.astype(np.float32), b.astype(np.float32)], float(np.mean(losses))


def test(params, X, y):
    """Loss and accuracy of ``params`` on (X, y)."""
    loss, _ = loss_and_grads([p.astype(np.float64) for p in params], X, y)
    W, b = params
    accuracy = float(((X @ W + b).argmax(axis=1) == y).mean())
    return loss, accuracy
