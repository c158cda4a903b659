"""The worst-case table: every rule against every attack, on non-IID shards.

Current work on Byzantine-robust learning (ByzFL, Blades) judges a rule by
its WORST final figure over a set of attacks on heterogeneous data, since an
attacker picks the attack that hurts most. :func:`run_table` runs
:func:`ml.simulation.run_simulation` for each (rule, attack) pair plus a
clean run per rule (no attackers, the same ``f``), and :class:`WorstCase`
holds the grid, each rule's worst cell and its clean figure.

For a classify task the figure is test accuracy (higher is better); for a
regression task it is ``mse_ratio``, the model's test MSE over the naive
"tomorrow = today" predictor's (lower is better; 1 is the naive baseline).

This module reads no clock and no file; the CLI times and writes.
:func:`write_heatmap` draws the grid with matplotlib's Agg backend (imported
only there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.attacks import ATTACKS
from ml.simulation import NO_ATTACK, SimConfig, run_simulation
from ml.tasks import builtin_task

__all__ = [
    "ALL_ATTACKS",
    "ALL_RULES",
    "Cell",
    "TableConfig",
    "WorstCase",
    "format_table",
    "run_table",
    "write_heatmap",
]

# The rules of the table, classic first, then the newer ones and their compositions.
ALL_RULES: tuple[str, ...] = (
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geomed",
    "centered_clip",
    "nnm+median",
    "nnm+trimmed_mean",
    "nnm+krum",
    "nnm+geomed",
    "bucket+median",
    "bucket+geomed",
)
ALL_ATTACKS: tuple[str, ...] = ATTACKS
CLEAN = NO_ATTACK  # the column name of the run without attackers
QUICK_ROUNDS = 30  # what the CLI's table uses unless --rounds says otherwise (2 cores, minutes)
FULL_ROUNDS = 100  # the full-size table (docs/robustness.md)
HEATMAP_DPI = 120
HEATMAP_INCH_PER_CELL = 0.75


@dataclass(frozen=True)
class TableConfig:
    """One worst-case table: the federation, and the rules and attacks crossed.

    ``f`` is the Byzantine bound every rule gets, in the clean runs too (a
    task fixes its bound before it knows who attacks); None: the attackers.
    """

    task: str = "digits"
    nodes: int = 10
    byzantine: float = 0.2
    rules: tuple[str, ...] = ALL_RULES
    attacks: tuple[str, ...] = ALL_ATTACKS
    rounds: int = QUICK_ROUNDS
    scheme: str = "dirichlet"
    alpha: float = 0.5
    seed: int = 0
    f: int | None = None
    workers: int = 1
    local_steps: int | None = None  # None: the task's

    def __post_init__(self) -> None:
        if not self.rules or not self.attacks:
            raise ValueError("a table needs at least one rule and one attack")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for rule in self.rules:
            self.sim(rule, CLEAN)  # validates every rule name up front
        for name in self.attacks:
            self.sim(self.rules[0], name)

    @property
    def bound(self) -> int:
        """The ``f`` each run gets."""
        attackers = math.floor(self.byzantine * self.nodes + 0.5)
        return attackers if self.f is None else self.f

    def sim(self, rule: str, attack: str) -> SimConfig:
        """The simulation of one cell (``attack`` == ``"none"``: the clean run)."""
        return SimConfig(
            task=self.task,
            nodes=self.nodes,
            rule=rule,
            attack=attack,
            byzantine=0.0 if attack == CLEAN else self.byzantine,
            rounds=self.rounds,
            f=self.bound,
            scheme=self.scheme,
            alpha=self.alpha,
            seed=self.seed,
            local_steps=self.local_steps,
        )


@dataclass(frozen=True)
class Cell:
    """One finished run: rule, attack (``"none"`` for clean) and its final figure."""

    rule: str
    attack: str
    final: float


@dataclass(frozen=True)
class WorstCase:
    """The finished table."""

    config: TableConfig
    metric: str
    higher_is_better: bool
    cells: tuple[Cell, ...] = field(repr=False)

    def value(self, rule: str, attack: str) -> float:
        """The final figure of one cell."""
        for cell in self.cells:
            if cell.rule == rule and cell.attack == attack:
                return cell.final
        raise KeyError((rule, attack))

    def clean(self, rule: str) -> float:
        """The rule's figure with no attackers."""
        return self.value(rule, CLEAN)

    def worst(self, rule: str) -> tuple[float, str]:
        """The rule's worst figure over the attacks, and the attack that caused it.

        A NaN figure (a diverged model) counts as the worst; ties go to the
        attack listed first.
        """
        worst_attack = self.config.attacks[0]
        worst_value = self.value(rule, worst_attack)
        for name in self.config.attacks[1:]:
            v = self.value(rule, name)
            if self._worse(v, worst_value):
                worst_value, worst_attack = v, name
        return worst_value, worst_attack

    def _worse(self, a: float, b: float) -> bool:
        if math.isnan(b):
            return False
        if math.isnan(a):
            return True
        return a < b if self.higher_is_better else a > b

    def best_rule(self) -> str:
        """The rule with the best worst case (ties: the one listed first)."""
        best = self.config.rules[0]
        for rule in self.config.rules[1:]:
            if self._worse(self.worst(best)[0], self.worst(rule)[0]):
                best = rule
        return best

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: config, metric, the grid by rule then attack, worst and clean per rule."""
        rules: dict[str, Any] = {}
        for rule in self.config.rules:
            worst_value, worst_attack = self.worst(rule)
            rules[rule] = {
                "attacks": {name: _finite(self.value(rule, name)) for name in self.config.attacks},
                "worst": _finite(worst_value),
                "worst_attack": worst_attack,
                "clean": _finite(self.clean(rule)),
            }
        cfg = self.config
        return {
            "task": cfg.task,
            "nodes": cfg.nodes,
            "byzantine": cfg.byzantine,
            "f": cfg.bound,
            "rounds": cfg.rounds,
            "scheme": cfg.scheme,
            "alpha": cfg.alpha,
            "seed": cfg.seed,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "attacks": list(cfg.attacks),
            "best_rule": self.best_rule(),
            "rules": rules,
        }


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged figure is written as null."""
    return value if math.isfinite(value) else None


def _run_cell(job: tuple[str, str, SimConfig]) -> Cell:
    rule, name, sim = job
    return Cell(rule=rule, attack=name, final=float(run_simulation(sim).final))


def _jobs(config: TableConfig) -> list[tuple[str, str, SimConfig]]:
    return [
        (rule, name, config.sim(rule, name))
        for rule in config.rules
        for name in (CLEAN, *config.attacks)
    ]


def _cells(config: TableConfig, jobs: Sequence[tuple[str, str, SimConfig]]) -> Iterable[Cell]:
    if config.workers == 1:
        return map(_run_cell, jobs)
    pool = ProcessPoolExecutor(max_workers=config.workers)
    return _pooled(pool, jobs)


def _pooled(
    pool: ProcessPoolExecutor, jobs: Sequence[tuple[str, str, SimConfig]]
) -> Iterable[Cell]:
    with pool:
        yield from pool.map(_run_cell, jobs)


def run_table(config: TableConfig, progress: Callable[[Cell], None] | None = None) -> WorstCase:
    """Run every cell of ``config`` (``config.workers`` processes) and return the table.

    Each cell is an independent seeded simulation, so the table is the same
    for any worker count.
    """
    jobs = _jobs(config)
    done: list[Cell] = []
    for cell in _cells(config, jobs):
        done.append(cell)
        if progress is not None:
            progress(cell)
    classify = builtin_task(config.task).head == "classify"
    return WorstCase(
        config=config,
        metric="accuracy" if classify else "mse_ratio",
        higher_is_better=classify,
        cells=tuple(done),
    )


def _show(value: float, metric: str) -> str:
    if math.isnan(value):
        return "nan"
    return f"{100 * value:.1f}" if metric == "accuracy" else f"{value:.3g}"


def format_table(table: WorstCase) -> str:
    """A plain-text grid: rules down, attacks across, then worst (and by what) and clean.

    Accuracy is shown in percent; ``mse_ratio`` as the ratio (1 = naive baseline).
    """
    cfg = table.config
    header = ["rule", *cfg.attacks, "worst", "by", "clean"]
    rows = [header]
    for rule in cfg.rules:
        worst_value, worst_attack = table.worst(rule)
        rows.append(
            [
                rule,
                *(_show(table.value(rule, name), table.metric) for name in cfg.attacks),
                _show(worst_value, table.metric),
                worst_attack,
                _show(table.clean(rule), table.metric),
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[c]) if c in (0, len(header) - 2) else cell.rjust(widths[c])
            for c, cell in enumerate(row)
        )
        for row in rows
    ]
    unit = "accuracy %" if table.metric == "accuracy" else "test MSE / naive MSE"
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"({unit}; best worst case: {table.best_rule()})")
    return "\n".join(lines)


def write_heatmap(table: WorstCase, path: Path) -> None:
    """Draw the grid (attacks, then worst and clean) as a PNG heatmap at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = table.config
    columns = [*cfg.attacks, "WORST", "clean"]
    grid = [
        [table.value(rule, name) for name in cfg.attacks]
        + [table.worst(rule)[0], table.clean(rule)]
        for rule in cfg.rules
    ]
    accuracy = table.metric == "accuracy"
    shown = [[100 * v if accuracy else v for v in row] for row in grid]
    if accuracy:
        cmap, vmin, vmax = "RdYlGn", 0.0, 100.0
    else:
        # ratio to naive: 1 is the baseline; clamp the colour scale so one blow-up
        # does not wash out the rest
        cmap, vmin, vmax = "RdYlGn_r", 0.9, 2.0
    fig, ax = plt.subplots(
        figsize=(
            HEATMAP_INCH_PER_CELL * (len(columns) + 3),
            HEATMAP_INCH_PER_CELL * (len(grid) + 2),
        )
    )
    image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(cfg.rules)), cfg.rules)
    for r, row in enumerate(shown):
        for c, v in enumerate(row):
            text = "nan" if math.isnan(v) else (f"{v:.0f}" if accuracy else f"{v:.2g}")
            ax.text(c, r, text, ha="center", va="center", fontsize=8)
    ax.axvline(len(cfg.attacks) - 0.5, color="black", linewidth=1.5)
    label = "test accuracy %" if accuracy else "test MSE / naive MSE (lower is better)"
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(
        f"{cfg.task}: {cfg.nodes} nodes, {cfg.bound} Byzantine, "
        f"{cfg.scheme}{f'({cfg.alpha:g})' if cfg.scheme == 'dirichlet' else ''}, "
        f"{cfg.rounds} rounds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=HEATMAP_DPI)
    plt.close(fig)
