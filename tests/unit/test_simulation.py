"""The in-process federation: robust rules hold under attack, the mean does not.

Fast versions of the headline check (digits, 8 nodes, 30 % sign-flip): ten
rounds instead of a hundred, with thresholds the short run clears by a margin.
The full run is ``gradchain sim ... --rounds 100`` (see the report / README).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.simulation import SimConfig, n_attackers, run_simulation
from node.cli.main import main

SHORT = 10  # rounds: enough for softmax on digits to pass 90 %
LOOSE_BOUND = 100.0  # ten times digits' bound: attackers are no longer held back by it


def test_config_rejects_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="attack"):
        SimConfig(attack="backdoor")
    with pytest.raises(ValueError, match="honest"):
        SimConfig(nodes=2, attack="sign-flip", byzantine=0.9)
    with pytest.raises(ValueError):
        SimConfig(byzantine=1.0)
    with pytest.raises(ValueError, match="rule"):
        SimConfig(rule="average")
    with pytest.raises(ValueError, match="codec"):
        SimConfig(codec="bf16")
    with pytest.raises(ValueError, match="scheme"):
        SimConfig(scheme="random")
    with pytest.raises(ValueError, match="norm_bound"):
        SimConfig(norm_bound=0.0)


@pytest.mark.parametrize(
    ("nodes", "share", "attack", "expected"),
    [(8, 0.3, "sign-flip", 2), (5, 0.5, "sign-flip", 3), (8, 0.3, "none", 0), (10, 0.0, "alie", 0)],
)
def test_attackers_are_the_share_rounded_half_up(
    nodes: int, share: float, attack: str, expected: int
) -> None:
    assert n_attackers(SimConfig(nodes=nodes, byzantine=share, attack=attack)) == expected


def test_clean_run_learns_and_is_reproducible() -> None:
    config = SimConfig(rule="median", rounds=SHORT, seed=3)
    a = run_simulation(config)
    b = run_simulation(config)
    assert a.initial_metrics["accuracy"] < 0.3
    assert a.final >= 0.92
    assert np.array_equal(a.params.view(np.uint32), b.params.view(np.uint32))
    assert [r.round for r in a.rounds] == list(range(1, SHORT + 1))
    assert all(r.accepted == 8 and r.rejected == 0 for r in a.rounds)
    assert a.attackers == () and a.f == 0


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum"])
def test_robust_rules_survive_thirty_percent_sign_flip(rule: str) -> None:
    result = run_simulation(SimConfig(rule=rule, attack="sign-flip", byzantine=0.3, rounds=SHORT))
    assert result.attackers == (0, 1) and result.f == 2
    assert result.final >= 0.90
    assert all(r.f_used == 2 for r in result.rounds)


def test_the_norm_bound_shields_the_mean_only_partly() -> None:
    """Under the task's bound two sign-flippers of eight cost the mean far more than the median."""
    mean = run_simulation(SimConfig(rule="mean", attack="sign-flip", byzantine=0.3, rounds=SHORT))
    median = run_simulation(
        SimConfig(rule="median", attack="sign-flip", byzantine=0.3, rounds=SHORT)
    )
    assert mean.final <= median.final - 0.15
    assert all(r.f_used == 0 for r in mean.rounds)  # the mean tolerates no attacker: it always runs with f=0


@pytest.mark.parametrize(
    ("rule", "survives"), [("mean", False), ("median", True), ("trimmed_mean", True)]
)
def test_without_a_tight_bound_the_mean_falls_to_sign_flip(rule: str, survives: bool) -> None:
    config = SimConfig(
        rule=rule, attack="sign-flip", byzantine=0.3, rounds=SHORT, norm_bound=LOOSE_BOUND
    )
    result = run_simulation(config)
    assert result.norm_bound == LOOSE_BOUND
    if survives:
        assert result.final >= 0.90
    else:
        assert result.final < 0.5


def test_scaled_updates_are_refused_by_the_norm_bound() -> None:
    # lam 100 puts every boosted delta (honest norms ~1-5) far past the bound of 20.
    result = run_simulation(
        SimConfig(
            rule="mean", attack="scaling", byzantine=0.3, rounds=3, attack_params=(("lam", 100.0),)
        )
    )
    assert result.rejections.get("norm", 0) == 2 * 3
    assert all(r.accepted == 6 for r in result.rounds)
    assert result.final >= 0.85  # the mean of the honest six still learns


def test_a_round_the_rule_cannot_run_leaves_the_model_alone() -> None:
    """Krum needs three updates; with two nodes the model never moves, as on the chain."""
    result = run_simulation(SimConfig(nodes=2, rule="krum", rounds=2))
    assert all(r.f_used == -1 and r.accepted == 2 for r in result.rounds)
    assert result.final == result.initial_metrics["accuracy"]


def test_label_flip_attackers_train_on_flipped_labels() -> None:
    flipped = run_simulation(
        SimConfig(rule="mean", attack="label-flip", byzantine=0.5, rounds=4, seed=1)
    )
    clean = run_simulation(SimConfig(rule="mean", rounds=4, seed=1))
    assert flipped.final < clean.final


def test_alie_and_gaussian_run_through_the_checks() -> None:
    for name in ("alie", "gaussian"):
        result = run_simulation(SimConfig(rule="median", attack=name, byzantine=0.3, rounds=3))
        assert all(r.accepted == 8 for r in result.rounds), name  # both stay inside the bound
        assert result.final >= 0.8


def test_lossy_codecs_still_train() -> None:
    """f16 and int8 lose almost nothing; top-k (10 %) learns, slower, as its sparse deltas
    rarely agree on which coordinates to move, and the median keeps only agreed moves."""
    final = {
        codec: run_simulation(SimConfig(rule="median", rounds=4, codec=codec, local_steps=10)).final
        for codec in ("f32", "f16", "int8", "topk")
    }
    assert final["f32"] >= 0.8
    assert abs(final["f16"] - final["f32"]) <= 0.02
    assert abs(final["int8"] - final["f32"]) <= 0.02
    assert final["topk"] >= 0.6


def test_cli_prints_progress_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.cli import options

    monkeypatch.setattr(options, "interactive", lambda stream=None: True)  # progress shows on a terminal
    out = tmp_path / "sim.json"
    argv = ["sim", "--rounds", "4", "--every", "2", "--attack", "sign-flip", "--byzantine", "0.3",
            "--rule", "trimmed_mean"]
    assert main([*argv, "--json-out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(
        "sim digits: 8 nodes (2 attacking with sign-flip), rule trimmed_mean"
    )
    assert lines[-1].startswith("final accuracy")
    progress = [line.split()[1] for line in captured.err.splitlines() if line.startswith("round")]
    assert progress == ["2/4", "4/4"]
    summary = json.loads(out.read_text())
    assert summary["config"]["rounds"] == 4 and summary["rule"] == "trimmed_mean"
    assert len(summary["accuracy"]) == 4 and summary["final"] == summary["accuracy"][-1]
    assert summary["wall_time_s"] > 0

    monkeypatch.setattr(options, "interactive", lambda stream=None: False)  # a pipe: no progress
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout holds the summary and nothing else
    assert printed["final"] == summary["final"] and printed["accuracy"] == summary["accuracy"]
    assert "round 2/4" not in captured.err and "final accuracy" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["sim", "--attack", "backdoor"],
        ["sim", "--attack-param", "sigma"],
        ["sim", "--task", "imagenet"],
        ["sim", "--rounds", "1", "--every", "0"],
    ],
)
def test_cli_explains_a_bad_command_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_composed_and_new_rules_run_and_learn() -> None:
    with pytest.raises(ValueError, match="nnm"):
        SimConfig(rule="krum+nnm")
    for rule in ("geomed", "centered_clip", "nnm+krum", "bucket+median"):
        result = run_simulation(
            SimConfig(nodes=10, rule=rule, attack="ipm", byzantine=0.2, rounds=3, f=2)
        )
        assert result.final >= 0.8, rule
        assert all(r.f_used >= 1 for r in result.rounds), rule


def test_bucketing_is_seeded_by_the_config_not_a_local_source() -> None:
    config = SimConfig(nodes=9, rule="bucket+median", attack="mimic", byzantine=0.2, rounds=2)
    first, again = run_simulation(config), run_simulation(config)
    assert np.array_equal(first.params, again.params)


def test_bound_aware_ipm_reverses_the_mean_but_not_nnm() -> None:
    def final(rule: str) -> float:
        config = SimConfig(nodes=10, rule=rule, attack="ipm", byzantine=0.2, rounds=6, f=2, local_steps=20)
        return run_simulation(config).final

    assert final("mean") < 0.5
    assert final("nnm+median") >= 0.85
