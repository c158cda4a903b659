"""The worst-case table, tiny: two rules, two attacks, a few rounds.

The full table (14 rules x 9 attacks, 30 rounds) is the CLI's
``gradchain sim --rule all --attack all``; its numbers live in
docs/robustness.md and benchmarks/results/worstcase_*.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ml.worstcase import (
    ALL_ATTACKS,
    ALL_RULES,
    Cell,
    TableConfig,
    WorstCase,
    format_table,
    run_table,
)
from node.cli.main import main

TINY = TableConfig(  # 20 local steps: the short runs these figures were measured with (digits now trains 60)
    nodes=6, byzantine=0.2, rules=("mean", "median"), attacks=("ipm", "mimic"), rounds=3, local_steps=20
)


@pytest.fixture(scope="module")
def table() -> WorstCase:
    return run_table(TINY)


def test_every_cell_is_run_once_with_a_clean_column(table: WorstCase) -> None:
    assert [(c.rule, c.attack) for c in table.cells] == [
        (rule, name) for rule in TINY.rules for name in ("none", *TINY.attacks)
    ]
    assert table.metric == "accuracy" and table.higher_is_better
    assert TINY.bound == 1  # round(0.2 * 6)


def test_the_mean_is_worst_under_ipm_and_the_median_holds(table: WorstCase) -> None:
    worst_mean, by = table.worst("mean")
    assert by == "ipm" and worst_mean < 0.5
    assert table.worst("median")[0] > worst_mean
    assert table.best_rule() == "median"


def test_worst_treats_nan_as_worst_and_lower_error_as_better() -> None:
    cfg = TableConfig(task="stock", nodes=5, rules=("mean",), attacks=("ipm", "mimic"), rounds=1)
    cells = (Cell("mean", "none", 1.0), Cell("mean", "ipm", 3.0), Cell("mean", "mimic", 2.0))
    assert WorstCase(cfg, "mse_ratio", False, cells).worst("mean") == (3.0, "ipm")
    nan = (cells[0], cells[1], Cell("mean", "mimic", math.nan))
    assert WorstCase(cfg, "mse_ratio", False, nan).worst("mean")[1] == "mimic"
    assert WorstCase(cfg, "mse_ratio", False, nan).to_json()["rules"]["mean"]["worst"] is None


def test_text_and_json_forms(table: WorstCase) -> None:
    lines = format_table(table).splitlines()
    assert lines[0].split() == ["rule", "ipm", "mimic", "worst", "by", "clean"]
    assert lines[2].split()[0] == "mean" and lines[-1].endswith("best worst case: median)")
    data = table.to_json()
    assert data["rules"]["median"]["clean"] == table.clean("median")
    assert data["rules"]["mean"]["worst_attack"] == "ipm" and data["f"] == 1
    json.dumps(data)  # JSON-ready


def test_config_refuses_unknown_names() -> None:
    with pytest.raises(ValueError):
        TableConfig(rules=("avg",))
    with pytest.raises(ValueError):
        TableConfig(attacks=("backdoor",))
    assert "nnm+median" in ALL_RULES and "min-sum" in ALL_ATTACKS


def test_cli_writes_table_json_and_heatmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table.json"
    argv = ["sim", "--nodes", "5", "--byzantine", "0.2", "--rule", "all", "--attack", "mimic"]
    argv += ["--rounds", "1", "--workers", "1", "--dirichlet", "0.5", "--json-out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "nnm+median" in text and "worst" in text
    data = json.loads(out.read_text())
    assert data["scheme"] == "dirichlet" and data["alpha"] == 0.5
    assert set(data["rules"]) == set(ALL_RULES) and data["attacks"] == ["mimic"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
