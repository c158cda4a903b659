"""The useful-update gate (ml/gate.py) and how consensus and the mempool apply it.

The block rule itself (a block carrying a useless update is rejected with
``UPDATE_NOT_USEFUL``) is in test_block_rules.py so the Reject coverage
check sees it; here: the loss against a numpy oracle, its bit stability,
the hand-written exp/log, the committed set, the task fields, honest and
gate-off blocks, and the mempool.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pytest

from consensus.errors import Reject
from consensus.params import REGTEST
from consensus.state import State
from consensus.tx import encode_tx
from consensus.view import BranchView, ChainRules
from ml import gate
from ml.checks import UpdateCheckError, UpdateProblem
from ml.datasets import load_dataset, load_gate_set
from ml.models import init_params, loss_and_grad
from ml.tasks import TaskSpec, builtin_task
from node.mempool import Mempool
from tests.chainbuilder import ChainBuilder, key, rejection, solo_task

GATE_EXAMPLES = 120
TOLERANCE = 0.05
ORACLE_RTOL = 1e-12
ULP_BUDGET = 4  # the hand-written exp/log stay within a few ULPs of libm
NOW = 1_700_000_000.0
ALICE = key(1)


def gate_sample(task: TaskSpec, examples: int) -> gate.GateSet:
    """The gate's sample of ``task``'s training split, not checked against any commitment."""
    data = load_dataset(task)
    idx = gate.gate_indices(data.X_train.shape[0], examples)
    return gate.GateSet(data.X_train[idx].astype(np.float32), np.asarray(data.y_train)[idx].astype(np.float64))


def gated(task: TaskSpec, examples: int = GATE_EXAMPLES, tolerance: float = TOLERANCE) -> TaskSpec:
    """``task`` with the gate on, committing the digest of the set it builds."""
    built = gate_sample(task, examples)
    return dataclasses.replace(
        task, gate_examples=examples, gate_tolerance=tolerance, gate_data_sha256=gate.gate_digest(built.X, built.y)
    )


def oracle_loss(spec: TaskSpec, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Mean loss in float64 numpy, example by example, summed in example order."""
    sizes = spec.layer_sizes
    p = params.astype(np.float64)
    total = 0.0
    for x, target in zip(X.astype(np.float64), y, strict=True):
        h, offset = x, 0
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            W = p[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out)
            b = p[offset + fan_in * fan_out : offset + fan_in * fan_out + fan_out]
            offset += fan_in * fan_out + fan_out
            z = b + np.array([math.fsum(h * W[:, j]) for j in range(fan_out)])
            h = np.maximum(z, 0.0) if layer < len(sizes) - 2 else z
        if spec.head == "classify":
            shifted = h - h.max()
            total += math.log(math.fsum(np.exp(shifted))) - shifted[int(target)]
        else:
            total += (h[0] - float(target)) ** 2
    return total / X.shape[0]


@pytest.fixture(scope="module")
def digits_gated() -> TaskSpec:
    return gated(solo_task("digits"))


@pytest.mark.parametrize("name", ["digits", "stock"])
def test_validation_loss_matches_a_numpy_oracle(name: str) -> None:
    spec = gated(builtin_task(name))
    gs = load_gate_set(spec)
    rng = np.random.default_rng(3)
    for params in (init_params(spec), init_params(spec) + rng.normal(0, 0.1, spec.param_count).astype(np.float32)):
        ours = gate.validation_loss(spec, params, gs.X, gs.y)
        assert ours == pytest.approx(oracle_loss(spec, params, gs.X, gs.y), rel=ORACLE_RTOL)
        # and the training code's loss (BLAS, libm) agrees to rounding
        assert ours == pytest.approx(loss_and_grad(spec, params, gs.X, gs.y)[0], rel=1e-9)


def test_validation_loss_has_the_same_bits_every_call(digits_gated: TaskSpec) -> None:
    gs = load_gate_set(digits_gated)
    params = init_params(digits_gated)
    first = gate.validation_loss(digits_gated, params, gs.X, gs.y).hex()
    copies = (params.copy(), np.asfortranarray(params), params[::-1].copy()[::-1])
    assert all(gate.validation_loss(digits_gated, p, gs.X.copy(), gs.y.copy()).hex() == first for p in copies)
    assert all(gate.validation_loss(digits_gated, params, gs.X, gs.y).hex() == first for _ in range(5))


def test_hand_written_exp_and_log_stay_within_a_few_ulps() -> None:
    for x in np.linspace(-740.0, 700.0, 2001):
        want = math.exp(float(x))
        assert abs(gate._exp(float(x)) - want) <= ULP_BUDGET * math.ulp(want)
    for x in np.geomspace(1e-300, 1e300, 2001):
        want = math.log(float(x))
        assert abs(gate._log(float(x)) - want) <= ULP_BUDGET * math.ulp(want) + 1e-300
    assert gate._exp(-800.0) == 0.0 and gate._exp(0.0) == 1.0 and gate._log(1.0) == 0.0
    assert math.isnan(gate._log(-1.0)) and gate._log(0.0) == -math.inf


def test_validation_loss_refuses_shapes_that_do_not_fit(digits_gated: TaskSpec) -> None:
    gs = load_gate_set(digits_gated)
    params = init_params(digits_gated)
    with pytest.raises(ValueError, match="params"):
        gate.validation_loss(digits_gated, params[:-1], gs.X, gs.y)
    with pytest.raises(ValueError, match="X must"):
        gate.validation_loss(digits_gated, params, gs.X[:, :-1], gs.y)
    with pytest.raises(ValueError, match="labels"):
        gate.validation_loss(digits_gated, params, gs.X, gs.y + 10.0)


def test_check_useful_passes_a_descent_step_and_refuses_its_reverse(digits_gated: TaskSpec) -> None:
    gs = load_gate_set(digits_gated)
    params = init_params(digits_gated)
    base = gate.validation_loss(digits_gated, params, gs.X, gs.y)
    _, grad = loss_and_grad(digits_gated, params, gs.X, gs.y)
    step = (np.float32(0.5) * grad).astype(np.float32)
    gate.check_useful(digits_gated, params, step, gs.X, gs.y, base)
    with pytest.raises(UpdateCheckError) as info:
        gate.check_useful(digits_gated, params, (np.float32(-5.0) * grad).astype(np.float32), gs.X, gs.y, base)
    assert info.value.problem is UpdateProblem.NOT_USEFUL


def test_check_useful_limit_is_inclusive_and_relative(digits_gated: TaskSpec) -> None:
    gs = load_gate_set(digits_gated)
    params = init_params(digits_gated)
    zero = np.zeros_like(params)
    loss = gate.validation_loss(digits_gated, params, gs.X, gs.y)
    gate.check_useful(digits_gated, params, zero, gs.X, gs.y, loss)  # no change, exactly at the limit
    strict = dataclasses.replace(digits_gated, gate_tolerance=0.0)
    with pytest.raises(UpdateCheckError):
        gate.check_useful(strict, params, zero, gs.X, gs.y, np.nextafter(loss, 0.0))


def test_gate_set_is_a_fixed_hash_ranked_sample() -> None:
    idx = gate.gate_indices(1000, 50)
    assert idx.tolist() == gate.gate_indices(1000, 50).tolist()
    assert idx.tolist() == sorted(set(idx.tolist())) and len(idx) == 50 and idx.max() < 1000
    assert set(idx.tolist()) <= set(gate.gate_indices(1000, 60).tolist())
    assert idx.max() > 500  # spread over the split, not its first rows
    with pytest.raises(ValueError):
        gate.gate_indices(10, 11)


def test_a_set_that_does_not_match_the_commitment_is_a_clear_error() -> None:
    wrong = dataclasses.replace(gated(builtin_task("digits"), examples=30), gate_data_sha256="ab" * 32)
    with pytest.raises(ValueError, match="hashes to .* commits"):
        load_gate_set(wrong)
    with pytest.raises(ValueError, match="no useful-update gate"):
        load_gate_set(solo_task("digits"))


def test_the_rules_carry_the_set_exactly_when_the_gate_is_on(digits_gated: TaskSpec) -> None:
    """Consensus reads the set from the rules the node loaded; a mismatch is refused up front."""
    loaded = load_gate_set(digits_gated)
    genesis = bytes(32)
    assert ChainRules(REGTEST, digits_gated, genesis, loaded).gate_set is loaded
    with pytest.raises(ValueError, match="gate is on"):
        ChainRules(REGTEST, digits_gated, genesis, None)
    with pytest.raises(ValueError, match="gate is on"):
        ChainRules(REGTEST, solo_task("digits"), genesis, loaded)


def test_the_loaded_set_is_read_only(digits_gated: TaskSpec) -> None:
    gs = load_gate_set(digits_gated)
    with pytest.raises(ValueError):
        gs.X[0, 0] = 1.0
    with pytest.raises(ValueError):
        gs.y[0] = 1.0


def test_task_round_trips_with_the_gate_fields(digits_gated: TaskSpec) -> None:
    assert TaskSpec.from_dict(digits_gated.to_dict()) == digits_gated
    d = digits_gated.to_dict()
    assert (d["gate_examples"], d["gate_tolerance"]) == (GATE_EXAMPLES, TOLERANCE)
    with pytest.raises(ValueError, match="gate_tolerance"):
        TaskSpec.from_dict({**d, "gate_tolerance": 1})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"gate_examples": -1}, "gate_examples"),
        ({"gate_examples": 10**6}, "gate_examples"),
        ({"gate_tolerance": math.nan}, "gate_tolerance"),
        ({"gate_tolerance": -0.1}, "gate_tolerance"),
        ({"gate_data_sha256": "AB" * 32}, "gate_data_sha256"),
        ({"gate_data_sha256": "ab" * 31}, "gate_data_sha256"),
        ({"gate_examples": 0}, "gate_data_sha256"),  # a digest or tolerance with the gate off
    ],
)
def test_invalid_gate_fields_raise_naming_the_field(
    digits_gated: TaskSpec, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(digits_gated, **changes)  # type: ignore[arg-type]


def descent_update(cb: ChainBuilder, scale: float) -> np.ndarray:
    """``scale`` times the gradient of the gate set's loss at the tip: helpful for scale > 0."""
    gs = gate_sample(cb.task, GATE_EXAMPLES)
    _, grad = loss_and_grad(cb.task, cb.state.params, gs.X, gs.y)
    return (np.float32(scale) * grad).astype(np.float32)


def test_an_honest_update_passes_the_gate_in_a_block(digits_gated: TaskSpec) -> None:
    cb = ChainBuilder(digits_gated)
    cb.join(ALICE)
    before = cb.state.params.copy()
    cb.contribute({ALICE: descent_update(cb, 0.5)})
    assert not np.array_equal(cb.state.params, before) and cb.state.model_version == 1


def test_with_the_gate_off_a_useless_update_is_applied() -> None:
    cb = ChainBuilder(solo_task("digits"))
    cb.join(ALICE)
    cb.contribute({ALICE: descent_update(cb, -2.0)})
    assert cb.state.model_version == 1


@dataclass
class BuilderView:
    """The builder's tip seen as the mempool's PoolChain."""

    cb: ChainBuilder

    @property
    def state(self) -> State:
        return self.cb.state

    def tip_view(self) -> BranchView:
        return self.cb.view()


def test_the_mempool_applies_the_gate_on_the_tip(digits_gated: TaskSpec) -> None:
    cb = ChainBuilder(digits_gated)
    bob = key(2)
    cb.join(ALICE, bob)
    cb.add(cb.template([cb.commit(ALICE, [descent_update(cb, -2.0)]), cb.commit(bob, [descent_update(cb, 0.5)])]))
    view = BuilderView(cb)
    useless = cb.update(ALICE)
    assert rejection(lambda: Mempool().add(encode_tx(useless), useless, view, NOW)) is Reject.UPDATE_NOT_USEFUL
    pool = Mempool()
    helpful = cb.update(bob)
    assert pool.add(encode_tx(helpful), helpful, view, NOW).added


@pytest.mark.parametrize("head", ["classify", "regress"])
def test_the_gate_loss_standardises_like_the_model(head: str) -> None:
    """A task's input (and regression label) standardisation is part of the consensus loss."""
    base = dataclasses.replace(builtin_task("digits"), input_dim=3, output_dim=2, name="t")
    if head == "regress":
        base = dataclasses.replace(base, head="regress", output_dim=1, label_shift=50.0, label_scale=4.0)
    spec = dataclasses.replace(base, input_shift=(1.0, -2.0, 300.0), input_scale=(0.5, 3.0, 100.0))
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(40, 3)) * [0.5, 3.0, 100.0] + [1.0, -2.0, 300.0]).astype(np.float32)
    y = rng.integers(0, 2, 40) if head == "classify" else rng.normal(50.0, 4.0, 40)
    params = init_params(spec)
    ours = gate.validation_loss(spec, params, X, y)
    assert ours == pytest.approx(loss_and_grad(spec, params, X, y)[0], rel=1e-9)
    unscaled = dataclasses.replace(spec, input_shift=(), input_scale=())
    assert ours != pytest.approx(gate.validation_loss(unscaled, params, X, y), rel=1e-3)
