"""`gradchain sim --attack miner-poison|sybil-flood|censor|copy`: the chain's two levels, attacked.

Example (the accuracy-against-hashrate curve of the README's security model)::

    gradchain sim --attack miner-poison --hashrate 0,0.1,0.2,0.3,0.4,0.49 --seeds 3 \\
        --json curve.json

Each share is run with every seed; the table shows the worst final accuracy,
every seed's, how many blocks the attacker mined and how many of their votes
a round counted. ``censor``, ``copy`` and ``sybil-flood`` print the same
table and, per seed, what the attacker (the copier, the sybil keys) was paid
against an honest participant. The simulation is :mod:`ml.chainsim`; this
module parses, prints, times and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from node.cli.errors import CliError
from node.cli.options import Progress, print_json, remark

USAGE_EXIT_CODE = 2
BAR_WIDTH = 20
CURVE_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.49)  # miner-poison's default sweep
CENSOR_SHARE = 0.25  # censor's default: one node of four
DEFAULT_SEEDS = 3
DEFAULT_PARTICIPANTS = 6  # honest participants, as in the prototype
DEFAULT_ALPHA = 1.0  # Dirichlet(1.0) label skew, as in the prototype
PLOT_DPI = 120
TITLE_WIDTH = 90  # characters per line of a plot's title
# ml.chainsim.CHAIN_ATTACKS, spelled here so `gradchain --help` does not import numpy
CHAIN_ATTACK_NAMES = ("miner-poison", "sybil-flood", "censor", "copy")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The chain attacks' options, added to the ``sim`` noun."""
    group = parser.add_argument_group(
        "chain attacks (--attack miner-poison, sybil-flood, censor, copy)"
    )
    group.add_argument(
        "--hashrate",
        default=None,
        metavar="SHARES",
        help="attacking miner's share(s) of the blocks, comma-separated "
        "(default: 0,0.1,0.2,0.3,0.4,0.49 for miner-poison, 0.25 for censor)",
    )
    group.add_argument(
        "--blocks", type=int, default=None, help="blocks to mine (default: 240)"
    )
    group.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        metavar="K",
        help=f"run seeds SEED .. SEED+K-1 and report the worst (default: {DEFAULT_SEEDS})",
    )
    group.add_argument(
        "--round-blocks", type=int, default=None, metavar="W", help="blocks per round"
    )
    group.add_argument("--vote-rule", default=None, help="rule over a round's block votes")
    group.add_argument(
        "--round-gate",
        type=float,
        default=None,
        metavar="TOL",
        help="round gate tolerance (relative validation-loss increase a round may cause)",
    )
    group.add_argument(
        "--no-round-gate", action="store_true", help="apply every round's step, gate off"
    )
    group.add_argument(
        "--reveal-delay",
        type=int,
        choices=(0, 1),
        default=None,
        help="rounds from training to counting: 1 with commit-reveal, 0 without",
    )
    group.add_argument(
        "--poison",
        choices=("sign-flip", "gate-aware"),
        default="sign-flip",
        help="miner-poison's vote (default: sign-flip at the norm bound)",
    )
    group.add_argument(
        "--sybils", type=int, default=24, help="sybil-flood's bonded keys (default: 24)"
    )
    group.add_argument(
        "--copy-lag",
        type=int,
        default=None,
        metavar="ROUNDS",
        help="copy: rounds between an honest reveal and the copier's (default: 1; past the "
        "chain's clone window of 2 the copy is no longer a clone)",
    )
    group.add_argument(
        "--server-lr", type=float, default=None, help="override the task's server learning rate"
    )
    group.add_argument(
        "--redraw",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="draw the curves of earlier --json results into one --png, and run nothing",
    )


CHAIN_ONLY = (
    "redraw",
    "hashrate",
    "blocks",
    "round_blocks",
    "vote_rule",
    "round_gate",
    "reveal_delay",
    "copy_lag",
    "server_lr",
)
NOT_FOR_CHAIN = {"byzantine": "--byzantine", "f": "--f", "norm_bound": "--norm-bound"}


def check_not_chain_flags(args: argparse.Namespace) -> None:
    """A federated run refuses the chain attacks' options instead of ignoring them."""
    given = [name for name in CHAIN_ONLY if getattr(args, name) is not None]
    if args.no_round_gate:
        given.append("no_round_gate")
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise CliError(
            f"{flag} applies to the chain attacks only (--attack miner-poison, sybil-flood, "
            "censor, copy)",
            USAGE_EXIT_CODE,
        )


def _shares(text: str | None, attack: str) -> tuple[float, ...]:
    if text is None:
        if attack == "miner-poison":
            return CURVE_SHARES
        return (CENSOR_SHARE,) if attack == "censor" else (0.0,)
    try:
        shares = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CliError(
            f"--hashrate {text!r} is not a list of numbers; write it like 0,0.1,0.25",
            USAGE_EXIT_CODE,
        ) from None
    if not shares:
        raise CliError("--hashrate needs at least one share", USAGE_EXIT_CODE)
    return shares


def _config(args: argparse.Namespace) -> Any:
    from ml.chainsim import CHAIN_DEFAULTS, ChainSimConfig

    for name, flag in NOT_FOR_CHAIN.items():
        if getattr(args, name) is not None:
            raise CliError(
                f"{flag} does not apply to --attack {args.attack}: the chain sim runs the "
                "task's Byzantine bound and norm bound in every block",
                USAGE_EXIT_CODE,
            )
    gate = CHAIN_DEFAULTS.round_gate if args.round_gate is None else args.round_gate
    try:
        return ChainSimConfig(
            task=args.task,
            participants=DEFAULT_PARTICIPANTS if args.nodes is None else args.nodes,
            alpha=DEFAULT_ALPHA if args.dirichlet is None else args.dirichlet,
            blocks=CHAIN_DEFAULTS.blocks if args.blocks is None else args.blocks,
            round_blocks=(
                CHAIN_DEFAULTS.round_blocks if args.round_blocks is None else args.round_blocks
            ),
            vote_rule=CHAIN_DEFAULTS.vote_rule if args.vote_rule is None else args.vote_rule,
            reveal_delay=args.reveal_delay,
            attack=args.attack,
            sybils=args.sybils,
            copy_lag=1 if args.copy_lag is None else args.copy_lag,
            round_gate=None if args.no_round_gate else gate,
            poison=args.poison,
            rule=args.rule,
            server_lr=args.server_lr,
            local_steps=args.local_steps,
            seed=args.seed,
        )
    except ValueError as exc:
        raise CliError(f"{exc}; see gradchain sim --help", USAGE_EXIT_CODE) from None


def _describe(config: Any, shares: tuple[float, ...], seeds: int) -> str:
    from ml.tasks import builtin_task

    block_rule = config.rule or builtin_task(config.task).rule
    gate = "off" if config.round_gate is None else f"tolerance {config.round_gate:g}"
    reveal = "commit-reveal" if config.delay else "no commit-reveal"
    attack = config.attack + (f" ({config.poison})" if config.attack == "miner-poison" else "")
    if config.attack == "sybil-flood":
        attack += f" with {config.sybils} bonded keys"
    share_text = ", ".join(f"{100 * s:g} %" for s in shares)
    return (
        f"chain sim {config.task}: {config.participants} honest participants "
        f"(Dirichlet {config.alpha:g}), {config.rounds * config.round_blocks} blocks in rounds "
        f"of {config.round_blocks}, block rule {block_rule}, "
        f"vote rule {config.vote_rule}, round gate {gate}, {reveal}; "
        f"{attack} at {share_text} of the blocks; worst of {seeds} seed(s)"
    )


def _paid_text(run: Any) -> str:
    from ml.chainsim import COPIER, SYBIL

    honest = [v for k, v in run.paid.items() if k >= 0]
    mean = sum(honest) / len(honest) if honest else 0.0
    parts = [f"honest paid {mean:.1f} updates each"]
    if COPIER in run.paid:
        parts.append(f"copier paid {run.paid[COPIER]}")
    if SYBIL in run.paid:
        parts.append(f"sybil keys paid {run.paid[SYBIL]}")
    return ", ".join(parts)


def format_curve(points: list[Any]) -> str:
    """The table: share, worst accuracy, each seed's, attacker blocks and votes counted."""
    lines = [
        f"{'hashrate':>8}  {'worst':>7}  {'per seed':<24} {'attacker votes counted':>22}  gated rounds"
    ]
    for point in points:
        figures = point.to_json()
        seeds = " ".join(f"{100 * f:.1f}" for f in figures["finals"])
        lines.append(
            f"{100 * point.hashrate:>7g}%  {100 * point.worst:>6.1f}%  {seeds:<24} "
            f"{figures['attacker_votes_counted']:>10} of {figures['attacker_blocks']:<9}  "
            f"{figures['gated_rounds']}"
        )
    return "\n".join(lines)


def write_plot(points: list[Any], title: str, path: Path) -> None:
    """Worst and per-seed accuracy against the attacker's share, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = [100 * p.hashrate for p in points]
    ax.plot(xs, [100 * p.worst for p in points], "o-", label="worst seed")
    for i in range(max(len(p.runs) for p in points)):
        ys = [100 * p.runs[i].final if i < len(p.runs) else float("nan") for p in points]
        ax.plot(xs, ys, ".", color="grey", alpha=0.6, label="each seed" if i == 0 else None)
    ax.axhline(90, color="red", linewidth=0.8, linestyle="--", label="90 %")
    ax.set_xlabel("attacker's share of the blocks (%)")
    ax.set_ylabel("test accuracy after the run (%)")
    ax.set_ylim(0, 100)
    ax.set_title(textwrap.fill(title, TITLE_WIDTH), fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def curve_label(config: dict[str, Any]) -> str:
    """A short legend for a saved run: rounds, vote rule, gate, reveal delay, poison."""
    if config["round_blocks"] == 1 and config["vote_rule"] == "median":
        base = "each block applied (no rounds)"
    else:
        base = f"rounds of {config['round_blocks']}, {config['vote_rule']}"
    gate = "no gate" if config["round_gate"] is None else "round gate"
    poison = "" if config.get("poison", "sign-flip") == "sign-flip" else f", {config['poison']} attacker"
    return f"{base}, {gate}{poison}"


def redraw(paths: list[Path], png: Path) -> int:
    """One plot of the worst-seed curves saved by earlier ``--json`` runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for path in paths:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            points = saved["points"]
            label = curve_label(saved["config"])
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"cannot read {path} as a chain sim result: {exc}") from None
        ax.plot([100 * p["hashrate"] for p in points], [100 * p["worst"] for p in points], "o-", label=label)
    ax.axhline(90, color="red", linewidth=0.8, linestyle="--")
    ax.set_xlabel("attacker's share of the blocks (%)")
    ax.set_ylabel("test accuracy, worst seed (%)")
    ax.set_ylim(0, 100)
    ax.set_title("miner-poison on digits (gradchain sim --attack miner-poison)", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=PLOT_DPI)
    except OSError as exc:
        raise CliError(f"cannot write {png}: {exc.strerror}; pick a writable path") from None
    plt.close(fig)
    print(f"wrote {png}", file=sys.stderr)
    return 0


def cmd_chain_sim(args: argparse.Namespace, write_json: Any) -> int:
    """Run the chain sim over every share and seed, print the table, write JSON/PNG."""
    from ml.chainsim import sweep

    config = _config(args)
    shares = _shares(args.hashrate, config.attack)
    if args.seeds < 1:
        raise CliError("--seeds must be at least 1", USAGE_EXIT_CODE)
    seeds = list(range(args.seed, args.seed + args.seeds))
    remark(_describe(config, shares, len(seeds)), args)
    progress = Progress()
    total = len(shares) * len(seeds)
    start = time.perf_counter()
    done = 0

    def report(run: Any) -> None:
        nonlocal done
        done += 1
        filled = BAR_WIDTH * done // total
        progress(
            f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total}  "
            f"{100 * run.hashrate:g} % seed {run.seed}: accuracy {100 * run.final:.1f} %, "
            f"attacker votes counted {run.attacker_votes_counted} of {run.attacker_blocks}; "
            f"{_paid_text(run)}  {time.perf_counter() - start:.0f}s"
        )

    try:
        points = sweep(config, shares, seeds, workers=args.workers, progress=report)
    except ValueError as exc:
        raise CliError(f"the chain simulation cannot run: {exc}", USAGE_EXIT_CODE) from None
    wall_time_s = time.perf_counter() - start
    remark(format_curve(points), args)
    remark(f"{total} runs in {wall_time_s:.1f}s", args)
    from dataclasses import asdict

    payload = {
        "config": asdict(config),
        "reveal_delay": config.delay,
        "points": [p.to_json() for p in points],
        "runs": [
            {**asdict(run), "paid": {str(k): v for k, v in sorted(run.paid.items())}}
            for p in points
            for run in p.runs
        ],
        "wall_time_s": wall_time_s,
    }
    if args.json:
        print_json(payload)
    if args.json_out is not None:
        write_json(args.json_out, payload)
    png = args.png_out if args.png_out is not None else (
        args.json_out.with_suffix(".png") if args.json_out is not None and len(shares) > 1 else None
    )
    if png is not None:
        try:
            write_plot(points, _describe(config, shares, len(seeds)), png)
        except OSError as exc:
            raise CliError(f"cannot write {png}: {exc.strerror}; pick a writable path") from None
        print(f"wrote {png}", file=sys.stderr)
    return 0
