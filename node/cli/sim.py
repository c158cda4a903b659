"""`gradchain sim`: federated rounds in one process, no chain, to compare rules under attack.

Example::

    gradchain sim --task digits --nodes 8 --rule median --attack sign-flip \\
        --byzantine 0.3 --rounds 100 --json-out sim.json

Shows the test figure every few rounds with a progress bar on a terminal
(nothing of it in a pipe), then the final figure; ``--json-out FILE`` writes
a summary (config, figure per round, final figure, wall time) and ``--json``
prints it on stdout instead of the text.

With ``--rule all`` and/or ``--attack all`` it prints the worst-case table
instead (:mod:`ml.worstcase`): rules x attacks, each rule's worst case and
its clean figure, written as JSON (``--json-out``) and a PNG heatmap
(``--png-out``, default: the JSON path with ``.png``)::

    gradchain sim --task digits --nodes 10 --byzantine 0.2 --rule all \
        --attack all --dirichlet 0.5 --json-out worstcase.json

The table defaults to 30 rounds on 2 worker processes (a few minutes on 2
cores); ``--rounds 100 --workers N`` is the full-size version. The simulation itself is :func:`ml.simulation.run_simulation`; this
module only parses, prints, times and writes. Top-level imports stay light so
``gradchain --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from node.cli.errors import CliError
from node.cli.options import DeprecatedAlias, Progress, add_json, add_out, print_json, remark
from node.cli.sim_chain import (
    CHAIN_ATTACK_NAMES,
    add_flags,
    check_not_chain_flags,
    cmd_chain_sim,
    redraw,
)

USAGE_EXIT_CODE = 2  # argparse's code for a bad command line; a bad config is the same mistake
PROGRESS_LINES = 20  # about this many progress lines per run unless --every says otherwise
BAR_WIDTH = 20  # characters in the progress bar
DEFAULT_ROUNDS = 100  # rounds of a single simulation
FULL_TABLE_ROUNDS = 100  # the full-size worst-case table (the quick one runs 30)
ALL = "all"  # --rule all / --attack all: the worst-case table
DEFAULT_NODES = 8  # participants of a federated run
DEFAULT_ALPHA = 0.5  # Dirichlet skew of --scheme dirichlet

T = TypeVar("T")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the simulation's options to the ``sim`` noun (it has no verbs)."""
    parser.add_argument("--task", default="digits", help="built-in task (default: digits)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="participants, honest and Byzantine (default: 8); with a chain attack, the "
        "honest participants (default: 6)",
    )
    parser.add_argument(
        "--rule",
        default=None,
        help="aggregation rule: mean, median, trimmed_mean, meamed, krum, multi_krum, bulyan, "
        "geomed, centered_clip, optionally after nnm+ or bucket+ (nnm+krum), or all for the "
        "worst-case table; with a chain attack, each block's rule (default: the task's)",
    )
    parser.add_argument(
        "--attack",
        default="none",
        help="none, sign-flip, gaussian, scaling, label-flip, alie, ipm, min-max, min-sum, "
        "mimic, or all for the worst-case table; or a chain attack: miner-poison, "
        "sybil-flood, censor, copy (default: none)",
    )
    parser.add_argument(
        "--byzantine",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of the nodes that attack; round(SHARE * nodes) of them (default: 0)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="federated rounds (default: 100; 30 for a --rule/--attack all table)",
    )
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
        default=None,
        help="Dirichlet label skew for --scheme dirichlet (default: 0.5)",
    )
    parser.add_argument(
        "--dirichlet",
        type=float,
        default=None,
        metavar="ALPHA",
        help="shorthand for --scheme dirichlet --alpha ALPHA (chain attacks: the shards' "
        "skew, default 1.0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes running a worst-case table's cells (default: 2)",
    )
    add_out(parser, "the worst-case table's heatmap (default: the --json-out path with .png)",
            flag="--png-out")
    parser.add_argument("--png", action=DeprecatedAlias, dest="png_out", new="--png-out", type=Path)
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
    add_out(parser, "the JSON summary", flag="--json-out")
    add_json(parser)
    add_flags(parser)
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


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}; pick a writable path") from None
    print(f"wrote {path}", file=sys.stderr)


def _finish(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """The summary: printed under --json, written with --json-out."""
    if args.json:
        print_json(payload)
    if args.json_out is not None:
        _write_json(args.json_out, payload)


def _run_or_usage_error(what: str, run: Callable[[], T]) -> T:
    """Call ``run()``; a ValueError it raises (a configuration it refuses) is a usage error, exit 2."""
    try:
        return run()
    except ValueError as exc:
        raise CliError(f"{what} cannot run: {exc}", USAGE_EXIT_CODE) from None


def cmd_table(args: argparse.Namespace) -> int:
    """Run the worst-case table (``--rule all`` / ``--attack all``), print and write it."""
    from ml.tasks import builtin_task
    from ml.worstcase import (
        ALL_ATTACKS,
        ALL_RULES,
        QUICK_ROUNDS,
        Cell,
        TableConfig,
        format_table,
        run_table,
        write_heatmap,
    )

    try:
        task_rule = builtin_task(args.task).rule
        config = TableConfig(
            task=args.task,
            nodes=args.nodes,
            byzantine=args.byzantine,
            rules=ALL_RULES if args.rule == ALL else (args.rule or task_rule,),
            attacks=ALL_ATTACKS if args.attack in (ALL, "none") else (args.attack,),
            rounds=QUICK_ROUNDS if args.rounds is None else args.rounds,
            scheme=args.scheme,
            alpha=args.alpha,
            seed=args.seed,
            f=args.f,
            workers=args.workers,
            local_steps=args.local_steps,
        )
    except ValueError as exc:
        raise CliError(f"{exc}; see gradchain sim --help", USAGE_EXIT_CODE) from None
    total = len(config.rules) * (len(config.attacks) + 1)
    remark(
        f"worst-case table {config.task}: {config.nodes} nodes, {config.bound} Byzantine, "
        f"{len(config.rules)} rules x {len(config.attacks)} attacks + clean, {config.rounds} "
        f"rounds, {config.scheme} shards, {config.workers} workers "
        f"(full size: --rounds {FULL_TABLE_ROUNDS})",
        args,
    )
    start = time.perf_counter()
    done = 0
    progress = Progress()

    def report(cell: Cell) -> None:
        nonlocal done
        done += 1
        progress(
            f"{_bar(done, total)} {done}/{total}  {cell.rule} / {cell.attack}: "
            f"{cell.final:.4f}  {time.perf_counter() - start:.0f}s"
        )

    table = _run_or_usage_error("the table", lambda: run_table(config, progress=report))
    wall_time_s = time.perf_counter() - start
    remark(format_table(table), args)
    remark(f"{total} runs in {wall_time_s:.1f}s", args)
    payload = {**table.to_json(), "wall_time_s": wall_time_s}
    _finish(args, payload)
    png = (
        args.png_out
        if args.png_out is not None
        else (args.json_out.with_suffix(".png") if args.json_out is not None else None)
    )
    if png is not None:
        try:
            write_heatmap(table, png)
        except OSError as exc:
            raise CliError(f"cannot write {png}: {exc.strerror}; pick a writable path") from None
        print(f"wrote {png}", file=sys.stderr)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulation (or, with ``all``, the worst-case table); print, optionally write JSON."""
    from ml.simulation import RoundRecord, SimConfig, n_attackers, run_simulation
    from ml.tasks import builtin_task

    if args.redraw is not None:
        if args.png_out is None:
            raise CliError("--redraw needs --png-out FILE to draw into", USAGE_EXIT_CODE)
        return redraw(args.redraw, args.png_out)
    if args.attack in CHAIN_ATTACK_NAMES:
        return cmd_chain_sim(args, _write_json)
    check_not_chain_flags(args)
    if args.nodes is None:
        args.nodes = DEFAULT_NODES
    if args.byzantine is None:
        args.byzantine = 0.0
    if args.alpha is None:
        args.alpha = DEFAULT_ALPHA
    if args.dirichlet is not None:
        args.scheme, args.alpha = "dirichlet", args.dirichlet
    if ALL in (args.rule, args.attack):
        return cmd_table(args)
    if args.rounds is None:
        args.rounds = DEFAULT_ROUNDS
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
    remark(
        f"sim {config.task}: {config.nodes} nodes ({attackers}), rule {config.rule or task_rule}, "
        f"{config.rounds} rounds, {config.scheme} shards, {config.codec} updates",
        args,
    )
    start = time.perf_counter()
    progress = Progress()

    def report(record: RoundRecord) -> None:
        if record.round % every and record.round != config.rounds:
            return
        figures = "  ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
        progress(
            f"round {record.round:>{len(str(config.rounds))}}/{config.rounds} "
            f"{_bar(record.round, config.rounds)}  {figures}  "
            f"kept {record.accepted}/{record.accepted + record.rejected}  f {record.f_used}  "
            f"{time.perf_counter() - start:.1f}s"
        )

    result = _run_or_usage_error("the simulation", lambda: run_simulation(config, progress=report))
    wall_time_s = time.perf_counter() - start

    summary: dict[str, Any] = {**result.summary(), "wall_time_s": wall_time_s}
    rejected = ", ".join(
        f"{count} {problem}" for problem, count in sorted(result.rejections.items())
    )
    remark(
        f"final {result.metric_name} {result.final:.4f} (start {summary['initial']:.4f}), "
        f"rule {result.rule} f={result.f}, norm bound {result.norm_bound:g}, {wall_time_s:.1f}s"
        + (f"; rejected updates: {rejected}" if rejected else ""),
        args,
    )
    _finish(args, summary)
    return 0
