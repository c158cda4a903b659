"""The rule registry: each record's facts hold for its function, and everyone reads them.

A record states a rule's Byzantine bound, whom the chain pays when it ran
and its paper. Each fact is checked against what the function really does
(the bound against the inputs it accepts, ``pays`` against its own mask),
and against the places that read it: task validation, the chain's decision
to run the rule, payouts and the docs.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import pytest

from consensus.participation import counted, verdict
from ml.aggregation import (
    RULES,
    STAGES,
    AggregationError,
    Pays,
    aggregate,
    parse_rule,
)
from ml.tasks import TaskSpec, builtin_task
from tests.chainbuilder import ChainBuilder, addr, key, quick_task

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSED = ("nnm+median", "nnm+trimmed_mean", "nnm+krum", "bucket+median", "bucket+geomed", "bucket+nnm+krum")
MAX_N = 12


def spread_updates(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def runs(rule: str, n: int, f: int) -> bool:
    """Whether ``rule`` accepts ``n`` updates with ``f``: the ground truth a bound must match."""
    try:
        aggregate(rule, spread_updates(n), f=f, **({"seed": 7} if "bucket" in rule else {}))
    except AggregationError:
        return False
    return True


@pytest.mark.parametrize("rule", [*sorted(RULES), *COMPOSED])
def test_max_f_is_the_largest_f_the_rule_accepts(rule: str) -> None:
    pipeline = parse_rule(rule)
    for n in range(1, MAX_N + 1):
        accepted = [f for f in range(n + 1) if runs(rule, n, f)]
        assert pipeline.max_f(n) == (max(accepted) if accepted else -1), f"{rule}, n={n}"
        assert accepted == list(range(len(accepted))), "a bound is monotone: fewer faults always fit"


@pytest.mark.parametrize("name", sorted(RULES))
def test_pays_matches_the_rules_own_mask(name: str) -> None:
    """SELECTED rules really select; the others mark every update, so the chain must decide."""
    record = RULES[name]
    f = 0 if record.bound.f_cap == 0 else 1
    x = spread_updates(record.bound.needs(f) + 2, seed=3)
    _, mask = aggregate(name, x, f=f)
    assert (not mask.all()) == (record.pays is Pays.SELECTED)


def test_every_record_names_its_paper_and_parameters() -> None:
    for record in RULES.values():
        assert re.search(r"\d{4}, https://arxiv\.org/abs/\d{4}\.\d{4,5}$", record.paper), record.name
        assert record.params == tuple(p for p in record.signature.parameters if p not in ("updates", "f"))
        assert set(record.supplied) <= set(record.params)
    for stage in STAGES.values():
        assert re.search(r"https://arxiv\.org/abs/", stage.paper)


def test_composed_rules_pay_as_their_final_rule_on_the_updates_as_sent() -> None:
    """nnm+median used to pay everyone (the registry matched whole names); now it filters outliers."""
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(50).astype(np.float32)
    honest = [direction + 0.3 * rng.standard_normal(50).astype(np.float32) for _ in range(4)]
    x = np.stack([*honest, -3 * direction]).astype(np.float32)
    for rule in ("median", "nnm+median", "nnm+trimmed_mean"):
        pipeline = parse_rule(rule)
        result, mask = pipeline.run(x, 1)
        assert mask.all()  # the rule's own mask: everyone
        assert counted(pipeline, x, result, mask).tolist() == [True] * 4 + [False], rule
    pipeline = parse_rule("nnm+krum")
    result, mask = pipeline.run(x, 1)
    assert counted(pipeline, x, result, mask).tolist() == mask.tolist() and mask.sum() == 1


def test_a_composed_rule_chain_does_not_pay_the_attacker() -> None:
    """nnm+median (f=1), rounds of one block: three honest updates and a sign flip; the flip is not paid."""
    task = quick_task(rule="nnm+median")
    cb = ChainBuilder(task)
    senders = [key(i + 1) for i in range(3)] + [key(9)]
    cb.join(*senders)
    rng = np.random.default_rng(1)
    direction = (0.05 * rng.standard_normal(task.param_count)).astype(np.float32)
    honest = [(direction + 0.01 * rng.standard_normal(direction.size)).astype(np.float32) for _ in range(3)]
    cb.contribute({**dict(zip(senders, honest, strict=False)), key(9): (-direction).astype(np.float32)})
    paid = {p.address for p in cb.tip.txs[0].payouts[1:]}  # type: ignore[union-attr]
    assert paid == {addr(key(i + 1)) for i in range(3)}
    assert cb.state.model_version == 1


def test_task_validation_reads_the_registry() -> None:
    digits = builtin_task("digits")
    with pytest.raises(ValueError, match="'rule'"):
        dataclasses.replace(digits, rule="no_such_rule")
    with pytest.raises(ValueError, match="'rule'"):
        dataclasses.replace(digits, rule="median+nnm")
    with pytest.raises(ValueError, match="rule_params"):
        dataclasses.replace(digits, rule_params=(("tau", 1.0),))  # median takes no tau
    with pytest.raises(ValueError, match="rule_params"):
        dataclasses.replace(digits, rule="centered_clip", rule_params=(("reference", 0),))  # the chain's
    ok = dataclasses.replace(digits, rule="bucket+centered_clip", rule_params=(("bucket_size", 3), ("tau", 0.5)))
    assert TaskSpec.from_dict(ok.to_dict()) == ok
    assert ok.pipeline.task_params == ("bucket_size", "tau", "iters")


def test_verdicts_say_why() -> None:
    assert "outlier" in verdict(parse_rule("nnm+median"), 1, False)
    assert "not selected" in verdict(parse_rule("krum"), 1, False)
    assert "too few" in verdict(parse_rule("median"), 1, None)
    assert "paid" in verdict(parse_rule("mean"), 0, True)


def test_the_design_notes_list_every_rule_as_the_registry_says() -> None:
    """docs/DESIGN-NOTES.md has one table row per record: name, bound, who is paid, paper."""
    text = (ROOT / "docs" / "DESIGN-NOTES.md").read_text()
    for record in RULES.values():
        row = f"| `{record.name}` | {record.bound} | {record.pays.value} | {record.paper} |"
        assert row in text, f"missing or stale row: {row}"
    for stage in STAGES.values():
        bound = str(stage.bound) if stage.bound is not None else "any"
        row = f"| `{stage.name}+` | {bound} | as the rule after it | {stage.paper} |"
        assert row in text, f"missing or stale row: {row}"
