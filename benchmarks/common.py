"""What every benchmark shares: timing, machine info, result files.

A benchmark module ``benchmarks/<name>.py`` exposes ``run(quick: bool) -> list[Headline]``.
It writes its raw samples with :func:`write_result` and returns its headline
figures; the runner (``python -m benchmarks``) gathers them into
``results/summary.json``. Benchmarks never assert a time: they report ratios
against a baseline measured in the same process, oriented so > 1 means we win.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

RESULTS_ENV = "GRADCHAIN_BENCH_RESULTS"  # redirects every result file (the QUICK test uses a temp dir)
RESULTS_DIR = pathlib.Path(
    os.environ.get(RESULTS_ENV) or pathlib.Path(__file__).resolve().parent / "results"
)


@dataclass(frozen=True)
class Headline:
    """One figure in summary.json; ``ratio`` > 1 means gradchain is better."""

    name: str
    value: float
    unit: str
    baseline: str
    ratio: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def write_result(name: str, payload: dict[str, Any]) -> pathlib.Path:
    """Write ``results/<name>.json`` with machine info and library versions added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": name,
        "machine": machine_info(),
        "versions": library_versions("numpy", "numba", "llvmlite", "flwr", "aiohttp"),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path
