"""What every benchmark shares: timing, machine info, result files.

A benchmark module ``benchmarks/<name>.py`` exposes ``run(quick: bool) -> list[Headline]``.
It writes its raw samples with :func:`write_result` and returns its headline
figures; the runner (``python -m benchmarks``) gathers them into
``results/summary.json``. Benchmarks never assert a time: they report ratios
against a baseline measured in the same process, oriented so > 1 means we win,
and, where the hardware sets a limit, the fraction of that limit reached
(measured in the same run too: :mod:`benchmarks.ceilings`).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

RESULTS_ENV = "GRADCHAIN_BENCH_RESULTS"  # redirects every result file (the QUICK test uses a temp dir)
RESULTS_DIR = pathlib.Path(
    os.environ.get(RESULTS_ENV) or pathlib.Path(__file__).resolve().parent / "results"
)
_current_results = RESULTS_DIR


def results_dir() -> pathlib.Path:
    """Where this run writes (the runner sends a partial run to a folder of its own)."""
    return _current_results


def use_results_dir(path: pathlib.Path) -> None:
    global _current_results
    _current_results = path


@dataclass(frozen=True)
class Headline:
    """One figure in summary.json; ``ratio`` > 1 means gradchain is better than the baseline.

    ``baseline_value`` is the baseline's own figure, measured in the same run
    and in the same unit.  ``ceiling`` names the limit the hardware (or the
    work that cannot be skipped) sets, measured in the same run, and
    ``ceiling_value`` is it in the same unit; ``of_ceiling`` is how much of it
    the figure reaches (1 = at the limit; for a time, limit / time).  A figure
    averaged over several runs (seeds) gives their standard deviation in
    ``spread`` and their number in ``samples``.
    """

    name: str
    value: float
    unit: str
    baseline: str
    ratio: float
    baseline_value: float | None = None
    ceiling: str | None = None
    ceiling_value: float | None = None
    of_ceiling: float | None = None
    spread: float | None = None
    samples: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_floor(name: str, value_s: float, floor_s: float) -> dict[str, Any]:
    """The ceiling fields of a time figure (milliseconds) whose floor is ``floor_s``."""
    return {"ceiling": name, "ceiling_value": floor_s * 1e3, "of_ceiling": floor_s / value_s}


def time_call(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call for ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def median(samples: list[float]) -> float:
    return float(statistics.median(samples))


def library_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
    }


def best(samples: list[float]) -> float:
    """The fastest of several timings: other processes only ever slow a repeat down."""
    return float(min(samples))


def load_average() -> float:
    """The one-minute load average (0 where the platform has none): how shared the cores were."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def git_commit() -> str:
    """The checked-out commit (short), with ``-dirty`` if tracked code differs from it."""
    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                  ".", ":!benchmarks/results", ":!README.md"],
                                 cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if changed else head


def save_figure(fig: Any, name: str) -> pathlib.Path:
    """Save a matplotlib figure as ``<results>/<name>.png``."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=110)
    return path


def write_result(name: str, payload: dict[str, Any]) -> pathlib.Path:
    """Write ``<results>/<name>.json`` with machine info and library versions added."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": name,
        "machine": machine_info(),
        "versions": library_versions("numpy", "numba", "llvmlite", "flwr", "aiohttp"),
        **payload,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path
