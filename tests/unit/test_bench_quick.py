"""`make bench QUICK=1` keeps working: every benchmark produces well-formed results.

The suite runs once, smoke-sized, in a subprocess whose results go to a
temporary folder (``GRADCHAIN_BENCH_RESULTS``), so the committed results are
never overwritten; a quick run lands in its ``quick/`` subfolder. Nothing
here looks at a time or a speed: only that each benchmark wrote its JSON and
a PNG, that summary.json has the agreed shape (every row stamped with the
run's commit and time), and that a partial run never mixes with a complete
one. The README generator is checked on temporary READMEs.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from benchmarks.__main__ import destination, discover, publish
from benchmarks.common import RESULTS_ENV, Headline
from benchmarks.report import END, START
from benchmarks.report import main as report_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTION_PREFIXES = ("hash_", "aggregation_", "verify_", "propagation_", "learning_")
ROW_KEYS = set(Headline.__dataclass_fields__) | {"commit", "time"}
RUN_STAMP = {"commit": "0123456789ab", "time": "2026-01-01T00:00:00+00:00"}
QUICK_TIMEOUT_S = 900  # a deadline for a wedged run on a loaded box, not a speed check

pytestmark = pytest.mark.timeout(QUICK_TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("bench-results")
    env = {**os.environ, RESULTS_ENV: str(out), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert not (out / "summary.json").exists(), "a quick run wrote over the full run's place"
    return out / "quick"


def test_summary_rows_are_well_formed(results: pathlib.Path) -> None:
    body = json.loads((results / "summary.json").read_text())
    run, rows = body["run"], body["rows"]
    assert run["quick"] is True and run["complete"] is True and run["failed"] == []
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert (row["commit"], row["time"]) == (run["commit"], run["time"])
        if row["of_ceiling"] is not None:
            assert row["ceiling"] and row["ceiling_value"] > 0 and row["of_ceiling"] > 0
        assert row["name"].startswith(SECTION_PREFIXES), row["name"]
        assert isinstance(row["unit"], str) and row["unit"]
        assert isinstance(row["baseline"], str) and row["baseline"]
        assert isinstance(row["value"], int | float) and math.isfinite(row["value"])
        assert isinstance(row["ratio"], int | float) and math.isfinite(row["ratio"]) and row["ratio"] >= 0
    names = [row["name"] for row in rows]
    assert len(names) == len(set(names)), "a headline name appears twice"
    for prefix in SECTION_PREFIXES:
        assert any(n.startswith(prefix) for n in names), f"no {prefix} figure"


def test_every_benchmark_wrote_its_json_and_a_png(results: pathlib.Path) -> None:
    for name in discover():
        body = json.loads((results / f"{name}.json").read_text())
        assert body["benchmark"] == name
        assert {"machine", "versions"} <= set(body)
        assert list(results.glob(f"{name}*.png")), f"{name} drew no plot"


def test_named_network_and_learning_headlines(results: pathlib.Path) -> None:
    rows = {row["name"]: row for row in json.loads((results / "summary.json").read_text())["rows"]}
    assert {"propagation_p50_ms_n3", "propagation_p99_ms_n3", "propagation_sync_blocks_per_s",
            "learning_chain_final_accuracy", "learning_fedavg_final_accuracy",
            "learning_median_30pct_accuracy"} <= set(rows)
    assert (results / "learning_attack_curves.png").exists()
    for name, row in rows.items():
        if name.startswith("learning_"):
            assert row["samples"] >= 2 and row["spread"] is not None, name
    for name in ("propagation_p50_ms_n3", "verify_blocks_per_s", "hash_mhs_1thread", "hash_mhs_all_threads"):
        assert row_has_same_run_baseline(rows[name]), name


def row_has_same_run_baseline(row: dict[str, Any]) -> bool:
    return isinstance(row["baseline_value"], int | float) and row["baseline_value"] > 0


def test_network_topology_was_held(results: pathlib.Path) -> None:
    params = json.loads((results / "network.json").read_text())["params"]
    assert "checked after every block" in params["topology"]


def test_a_partial_run_goes_to_its_own_folder(tmp_path: pathlib.Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "summary.json").write_text("{}")
    (tmp_path / "summary.json").write_text("complete run")
    publish(staging, destination(tmp_path, complete=False, quick=False))
    assert (tmp_path / "summary.json").read_text() == "complete run"
    assert (tmp_path / "partial" / "summary.json").read_text() == "{}"
    assert destination(tmp_path, complete=True, quick=False) == tmp_path
    assert destination(tmp_path, complete=True, quick=True) == tmp_path / "quick"


def summary(rows: list[dict[str, Any]], **run: Any) -> str:
    stamp = {**RUN_STAMP, "quick": False, "complete": True, "failed": [], "cores": 2,
             "load_average": {"before": 0.5, "after": 0.7}, **run}
    return json.dumps({"run": stamp, "rows": [{**RUN_STAMP, **row} for row in rows]})


@pytest.fixture
def small_results(tmp_path: pathlib.Path) -> pathlib.Path:
    """A results folder with two headlines, one result file and one plot: what report.py reads."""
    out = tmp_path / "results"
    out.mkdir()
    rows = [
        Headline("learning_chain_final_accuracy", 0.93, "accuracy", "centralised SGD", 0.98, baseline_value=0.95,
                 spread=0.004, samples=3).as_dict(),
        Headline("propagation_p50_ms_n3", 8.0, "ms", "2 hops x (fetch + accept)", 0.5, baseline_value=4.0,
                 ceiling="2 hops x (fetch + accept)", ceiling_value=4.0, of_ceiling=0.5).as_dict(),
    ]
    (out / "summary.json").write_text(summary(rows))
    (out / "learning.json").write_text(json.dumps({"machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11"}}))
    (out / "learning_attack_curves.png").write_bytes(b"\x89PNG\r\n")
    return out


def test_report_appends_a_section_when_the_markers_are_missing(small_results: pathlib.Path,
                                                               tmp_path: pathlib.Path) -> None:
    results = small_results
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\nintro\n")
    assert report_main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# project\n\nintro\n")
    assert "## Performance" in text and text.index(START) < text.index(END)
    assert "`learning_chain_final_accuracy`" in text and "0.9300 ± 0.004000 (n=3)" in text
    assert "learning_attack_curves.png" in text and "Test CPU, 2 cores" in text
    assert RUN_STAMP["commit"] in text


def test_report_rewrites_only_between_the_markers(small_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
    results = small_results
    readme = tmp_path / "README.md"
    before, after = "# project\n\n## Performance\n\n", "\n\n## Licence\n\nkept as is\n"
    readme.write_text(f"{before}{START}\nstale table\n{END}{after}")
    report_main(["--results", str(results), "--readme", str(readme)])
    once = readme.read_text()
    assert once.startswith(before + START) and once.endswith(END + after)
    assert "stale table" not in once and "`propagation_p50_ms_n3`" in once
    report_main(["--results", str(results), "--readme", str(readme)])
    assert readme.read_text() == once, "regenerating twice changed the README"


@pytest.mark.parametrize("run", [{"quick": True}, {"complete": False}])
def test_report_refuses_a_quick_or_partial_run(small_results: pathlib.Path, tmp_path: pathlib.Path,
                                               run: dict[str, Any]) -> None:
    rows = json.loads((small_results / "summary.json").read_text())["rows"]
    (small_results / "summary.json").write_text(summary(rows, **run))
    readme = tmp_path / "README.md"
    readme.write_text(f"# project\n\n{START}\nkept\n{END}\n")
    assert report_main(["--results", str(small_results), "--readme", str(readme)]) == 1
    assert "kept" in readme.read_text()


def test_report_refuses_rows_of_two_runs(small_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
    body = json.loads((small_results / "summary.json").read_text())
    body["rows"][0]["commit"] = "another"
    (small_results / "summary.json").write_text(json.dumps(body))
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    assert report_main(["--results", str(small_results), "--readme", str(readme)]) == 1
