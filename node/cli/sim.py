"""`gradchain sim`: federated rounds in one process, no chain, to compare rules under attack.

Example::

    gradchain sim --task digits --nodes 8 --rule median --attack sign-flip \\
        --byzantine 0.3 --rounds 100 --json sim.json

Prints the test figure every few rounds with a progress bar and, with
``--json``, writes a summary (config, figure per round, final figure, wall
time). The simulation itself is :func:`ml.simulation.run_simulation`; this
module only parses, prints, times and writes. Top-level imports stay light so
``gradchain --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from node.cli.errors import CliError

USAGE_EXIT_CODE = 2  # argparse's code for a bad command line; a bad config is the same mistake
PROGRESS_LINES = 20  # about this many progress lines per run unless --every says otherwise
BAR_WIDTH = 20  # characters in the progress bar


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the simulation's options to the ``sim`` noun (it has no verbs)."""
    parser.add_argument("--task", default="digits", help="built-in task (default: digits)")
    parser.add_argument(
        "--nodes", type=int, default=8, help="participants, honest and Byzantine (default: 8)"
    )
    parser.add_argument(
        "--rule",
        default=None,
        help="aggregation rule: mean, median, trimmed_mean, krum, multi_krum, bulyan (default: the task's)",
    )
    parser.add_argument(
        "--attack",
        default="none",
        help="none, sign-flip, gaussian, scaling, label-flip or alie (default: none)",
    )
    parser.add_argument(
        "--byzantine",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of the nodes that attack; round(SHARE * nodes) of them (default: 0)",
    )
    parser.add_argument("--rounds", type=int, default=100, help="federated rounds (default: 100)")
    parser.add_argument(
        "--f", type=int, default=None, help="the rule's Byzantine bound (default: the attackers)"
    )
    parser.add_argument(
        "--scheme",
        default="hash",
        choices=("hash", "dirichlet"),
        help="data split (default: hash, i.i.d.)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="Dirichlet label skew for --scheme dirichlet (default: 0.5)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for shards, minibatches and attack noise (default: 0)",
    )
    parser.add_argument(
        "--codec",
        default="f32",
        choices=("f32", "f16", "int8", "topk"),
        help="wire form every update travels as (default: f32, exact)",
    )
    parser.add_argument(
        "--attack-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="attack parameter, repeatable: scale, to_norm, sigma, lam, z, f",
    )
    parser.add_argument(
        "--norm-bound",
        type=float,
        default=None,
        metavar="L2",
        help="override the task's norm bound on every update (default: the task's)",
    )
    parser.add_argument(
        "--local-steps", type=int, default=None, help="override the task's local SGD steps"
    )
    parser.add_argument(
        "--every", type=int, default=None, metavar="K", help="print a line every K rounds"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write a JSON summary here"
    )
    parser.set_defaults(handler=cmd_sim)


def _attack_params(items: list[str]) -> tuple[tuple[str, float], ...]:
    pairs: list[tuple[str, float]] = []
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError(item)
            pairs.append((name, float(value)))
        except ValueError:
            raise CliError(
                f"--attack-param {item!r} is not NAME=NUMBER; write it like sigma=0.5",
                USAGE_EXIT_CODE,
            ) from None
    return tuple(pairs)


def _bar(done: int, total: int) -> str:
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulation, print progress, optionally write the JSON summary."""
    from ml.simulation import RoundRecord, SimConfig, n_attackers, run_simulation
    from ml.tasks import builtin_task

    try:
        task_rule = builtin_task(args.task).rule
        config = SimConfig(
            task=args.task,
            nodes=args.nodes,
            rule=args.rule,
            attack=args.attack,
            byzantine=args.byzantine,
            rounds=args.rounds,
            f=args.f,
            scheme=args.scheme,
            alpha=args.alpha,
            seed=args.seed,
            codec=args.codec,
            attack_params=_attack_params(args.attack_param),
            local_steps=args.local_steps,
            norm_bound=args.norm_bound,
        )
    except ValueError as exc:
        raise CliError(f"{exc}; see gradchain sim --help", USAGE_EXIT_CODE) from None
    every = args.every if args.every is not None else max(1, config.rounds // PROGRESS_LINES)
    if every < 1:
        raise CliError("--every must be at least 1", USAGE_EXIT_CODE)

    n_bad = n_attackers(config)
    attackers = f"{n_bad} attacking with {config.attack}" if n_bad else "no attackers"
    print(
        f"sim {config.task}: {config.nodes} nodes ({attackers}), rule {config.rule or task_rule}, "
        f"{config.rounds} rounds, {config.scheme} shards, {config.codec} updates",
        flush=True,
    )
    start = time.perf_counter()

    def report(record: RoundRecord) -> None:
        if record.round % every and record.round != config.rounds:
            return
        figures = "  ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
        print(
            f"round {record.round:>{len(str(config.rounds))}}/{config.rounds} "
            f"{_bar(record.round, config.rounds)}  {figures}  "
            f"kept {record.accepted}/{record.accepted + record.rejected}  f {record.f_used}  "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )

    try:
        result = run_simulation(config, progress=report)
    except ValueError as exc:
        raise CliError(f"the simulation cannot run: {exc}", USAGE_EXIT_CODE) from None
    wall_time_s = time.perf_counter() - start

    summary: dict[str, Any] = {**result.summary(), "wall_time_s": wall_time_s}
    rejected = ", ".join(
        f"{count} {problem}" for problem, count in sorted(result.rejections.items())
    )
    print(
        f"final {result.metric_name} {result.final:.4f} (start {summary['initial']:.4f}), "
        f"rule {result.rule} f={result.f}, norm bound {result.norm_bound:g}, {wall_time_s:.1f}s"
        + (f"; rejected updates: {rejected}" if rejected else ""),
        flush=True,
    )
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise CliError(
                f"cannot write {args.json}: {exc.strerror}; pick a writable path"
            ) from None
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
