"""`gradchain testnet up|status|down`: a local multi-node testnet."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError
from node.cli.options import add_json, add_out, print_json, remark

DEFAULT_DIR = pathlib.Path(".testnet")
MEASURE_DIR = pathlib.Path(".testnet-measure")
# the chain attacks (issue 18's names) first, then the poisoned participants
ATTACKS = ("miner-poison", "sybil-flood", "censor", "copy", "sign-flip", "gaussian", "scaling", "label-flip", "alie")


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("up", help="start nodes that mine and train, and watch them (Ctrl-C stops all)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--attackers", type=int, default=0, help="how many of the nodes poison their updates")
    p.add_argument("--attack", choices=ATTACKS, default="sign-flip")
    p.add_argument("--task", default="digits", help="digits, stock, or a spec file (gradchain task init)")
    p.add_argument("--data", type=pathlib.Path, default=None, metavar="DIR",
                   help="the participants' own files: DIR/eval.csv and DIR/node0.csv .. node{N-1}.csv")
    p.add_argument("--rule", default=None, help="aggregation rule (default: the task's); e.g. mean to compare")
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet label skew of the shards (non-IID)")
    p.add_argument("--network", choices=("testnet", "regtest"), default="testnet")
    _dir(p)
    p.add_argument("--detach", action="store_true", help="start the nodes and return")
    p.add_argument("--fresh", action="store_true", help="delete the testnet in --dir first (else it resumes)")
    p.add_argument("--base-port", type=int, default=None, metavar="PORT",
                   help="first port tried for the nodes (default 18740; the next free ones follow)")
    p.set_defaults(handler=cmd_up)

    p = verbs.add_parser("measure", help="run a fresh testnet for a while and record the model's accuracy, "
                         "the attacker's votes and everyone's earnings (the README's security figures)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--attackers", type=int, default=1)
    p.add_argument("--attack", choices=ATTACKS, default="miner-poison")
    p.add_argument("--minutes", type=float, default=6.0, help="how long the testnet runs (default 6)")
    p.add_argument("--goal", type=float, default=0.93, help="accuracy whose first time is reported (default 0.93)")
    p.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                   help="stop early once the accuracy has stayed at or above the goal this long")
    p.add_argument("--dir", type=pathlib.Path, default=MEASURE_DIR, metavar="DIR",
                   help=f"the testnet's directory, deleted first (default: {MEASURE_DIR})")
    add_out(p, "the report as JSON")
    add_json(p)
    p.add_argument("--network", choices=("testnet", "regtest"), default="testnet",
                   help="regtest: easy blocks, for a quick look")
    p.add_argument("--base-port", type=int, default=None, metavar="PORT")
    p.set_defaults(handler=cmd_measure)

    p = verbs.add_parser("status", help="one line per node of a running testnet")
    _dir(p)
    add_json(p)
    p.set_defaults(handler=cmd_status)

    p = verbs.add_parser("down", help="stop every node of a testnet")
    _dir(p)
    add_json(p)
    p.set_defaults(handler=cmd_down)


def _dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=pathlib.Path, default=DEFAULT_DIR, metavar="DIR",
                   help=f"the testnet's directory (default: {DEFAULT_DIR})")


def cmd_up(args: argparse.Namespace) -> int:
    import signal
    import sys
    import time

    from node.testnet.launcher import BASE_PORT, TestnetPlan, down, up

    if not 1 <= args.nodes <= 16:
        raise CliError("--nodes must be 1..16 (the machine has few cores)")
    if not 0 <= args.attackers < args.nodes:
        raise CliError("--attackers must be fewer than --nodes (someone has to be honest)")
    task, data = _task_and_data(args)
    plan = TestnetPlan(nodes=args.nodes, attackers=args.attackers, attack=args.attack, task=task,
                       rule=args.rule, network=args.network, alpha=args.alpha, data=data)
    print(f"starting {args.nodes} nodes in {args.dir} ({args.task}, {args.attackers} attacker(s))…", flush=True)
    try:
        entries = up(args.dir, plan, fresh=args.fresh, base_port=args.base_port or BASE_PORT)
    except (RuntimeError, OSError) as exc:
        raise CliError(str(exc)) from None
    for entry in entries:
        print(f"  {entry.name:<6} {entry.api}/  pid {entry.pid}{'  attacker' if entry.attacker else ''}")
    if args.detach:
        print(f"detached; `gradchain testnet status --dir {args.dir}` to watch, "
              f"`gradchain testnet down --dir {args.dir}` to stop")
        return 0

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    from node.testnet.view import poll, render, render_plain

    started = time.time()
    try:
        if sys.stdout.isatty():
            from rich.live import Live

            with Live(render([poll(e) for e in entries], started), refresh_per_second=2, screen=False) as live:
                while not stop:
                    time.sleep(1.0)
                    live.update(render([poll(e) for e in entries], started))
        else:  # logs, CI, pipes: a plain line per node every few seconds
            while not stop:
                print(render_plain([poll(e) for e in entries]), flush=True)
                time.sleep(5.0)
    except KeyboardInterrupt:
        pass
    print("\nstopping every node…", flush=True)
    stopped = down(args.dir)
    print(f"stopped {stopped} node(s); data kept in {args.dir} (run `make testnet` again to resume)")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    import signal
    import sys

    from ml.tasks import builtin_task
    from node.testnet.launcher import BASE_PORT, TestnetPlan
    from node.testnet.measure import measure, summary, write_report

    if not 0 <= args.attackers < args.nodes <= 16:
        raise CliError("--attackers must be fewer than --nodes, and --nodes at most 16")
    if args.minutes <= 0:
        raise CliError("--minutes must be positive")
    plan = TestnetPlan(nodes=args.nodes, attackers=args.attackers, attack=args.attack, network=args.network)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop the nodes on the way out
    remark(f"measuring {args.nodes} nodes, {args.attackers} {args.attack} attacker(s), for {args.minutes:g} min "
           f"in {args.dir}…", args)
    try:
        report = measure(args.dir, plan, builtin_task(plan.task), goal=args.goal, deadline_s=args.minutes * 60,
                         base_port=args.base_port or BASE_PORT, hold_s=args.hold,
                         progress=lambda s: remark(f"  {s.t:6.0f} s  height {s.height:<5} accuracy {s.accuracy:.3f}  load {s.load:.1f}",
                                                   args))
    except (RuntimeError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.out is not None:
        write_report(report, args.out)
        remark(f"report written to {args.out}", args)
    if args.json:
        print_json(report.to_json())
    else:
        print(summary(report))
    return 0


def _task_and_data(args: argparse.Namespace) -> tuple[str, str | None]:
    """The ``--task`` and ``--data`` a node is given: a spec file and DIR as absolute paths, checked."""
    from ml.datasets import load_dataset
    from node.taskfile import is_spec_path, load_task
    from node.testnet.owndata import check_data_dir

    try:
        spec = load_task(args.task)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    task = str(pathlib.Path(args.task).resolve()) if is_spec_path(args.task) else args.task
    if args.data is None:
        try:
            load_dataset(spec)
        except ValueError:
            raise CliError(f"task {spec.name!r} has no built-in data: give each node its file with --data DIR "
                           "(`gradchain task split` makes one)") from None
        return task, None
    try:
        rows = check_data_dir(spec, args.data, args.nodes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print("data: " + ", ".join(f"{name} {count} rows" for name, count in rows.items()), flush=True)
    return task, str(args.data.resolve())


def cmd_status(args: argparse.Namespace) -> int:
    from node.testnet.launcher import load_manifest
    from node.testnet.view import poll, render_plain

    entries = load_manifest(args.dir)
    if not entries:
        raise CliError(f"no testnet in {args.dir}; start one with `gradchain testnet up --dir {args.dir}`")
    views = [poll(e) for e in entries]
    if args.json:
        print_json([{"name": v.entry.name, "api": v.entry.api, "pid": v.entry.pid, "attacker": v.entry.attacker,
                     "status": v.status, "accuracy": v.accuracy, "last_event": v.last_event,
                     "error": v.error} for v in views])
    else:
        print(render_plain(views))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from node.testnet.launcher import down, load_manifest

    if not load_manifest(args.dir):
        raise CliError(f"no testnet in {args.dir}; pass the --dir it was started with")
    stopped = down(args.dir)
    if args.json:
        print_json({"stopped": stopped})
    else:
        print(f"stopped {stopped} node(s)")
    return 0
