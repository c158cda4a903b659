"""`make bench QUICK=1` keeps working: every benchmark produces well-formed results.

The suite runs once, smoke-sized, in a subprocess whose results go to a
temporary folder (``GRADCHAIN_BENCH_RESULTS``), so the committed results are
never overwritten. Nothing here looks at a time or a speed: only that each
benchmark wrote its JSON and a PNG and that summary.json has the agreed shape.
The README generator is checked on temporary READMEs.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks.__main__ import discover
from benchmarks.common import RESULTS_ENV
from benchmarks.report import END, START
from benchmarks.report import main as report_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTION_PREFIXES = ("hash_", "aggregation_", "verify_", "propagation_", "learning_")
ROW_KEYS = {"name", "value", "unit", "baseline", "ratio"}
QUICK_TIMEOUT_S = 900  # a deadline for a wedged run on a loaded box, not a speed check

pytestmark = pytest.mark.timeout(QUICK_TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("bench-results")
    env = {**os.environ, RESULTS_ENV: str(out), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return out


def test_summary_rows_are_well_formed(results: pathlib.Path) -> None:
    rows = json.loads((results / "summary.json").read_text())
    assert isinstance(rows, list) and rows
    for row in rows:
        assert set(row) == ROW_KEYS, row
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
    names = {row["name"] for row in json.loads((results / "summary.json").read_text())}
    assert {"propagation_p50_ms_n3", "propagation_p99_ms_n3", "propagation_sync_blocks_per_s",
            "learning_chain_final_accuracy", "learning_fedavg_final_accuracy",
            "learning_median_30pct_accuracy"} <= names
    assert (results / "learning_attack_curves.png").exists()


@pytest.fixture
def small_results(tmp_path: pathlib.Path) -> pathlib.Path:
    """A results folder with two headlines, one result file and one plot: what report.py reads."""
    out = tmp_path / "results"
    out.mkdir()
    rows = [
        {"name": "learning_chain_final_accuracy", "value": 0.93, "unit": "accuracy",
         "baseline": "centralised SGD", "ratio": 0.98},
        {"name": "propagation_sync_blocks_per_s", "value": 80.0, "unit": "blocks/s",
         "baseline": "chain verify replay", "ratio": 0.02},
    ]
    (out / "summary.json").write_text(json.dumps(rows))
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
    assert "`learning_chain_final_accuracy`" in text
    assert "learning_attack_curves.png" in text and "Test CPU, 2 cores" in text


def test_report_rewrites_only_between_the_markers(small_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
    results = small_results
    readme = tmp_path / "README.md"
    before, after = "# project\n\n## Performance\n\n", "\n\n## Licence\n\nkept as is\n"
    readme.write_text(f"{before}{START}\nstale table\n{END}{after}")
    report_main(["--results", str(results), "--readme", str(readme)])
    once = readme.read_text()
    assert once.startswith(before + START) and once.endswith(END + after)
    assert "stale table" not in once and "`propagation_sync_blocks_per_s`" in once
    report_main(["--results", str(results), "--readme", str(readme)])
    assert readme.read_text() == once, "regenerating twice changed the README"
