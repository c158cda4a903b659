"""`gradchain node run`: start a node (P2P, API, optional miner and trainer)."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError
from node.cli.options import add_datadir, add_unlocked_keystore

FIRST_TASK = ""  # what a bare --train means: the chain's first task


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("run", help="run a node until Ctrl-C / SIGTERM")
    add_datadir(p, "created if new")
    p.add_argument("--network", choices=("main", "testnet", "regtest"), default="regtest")
    p.add_argument("--task", default="digits",
                   help="task for a new datadir: digits, stock, or a spec file (gradchain task init)")
    p.add_argument("--rule", default=None, help="aggregation rule for a new datadir (default: the task's)")
    p.add_argument("--f", type=int, default=None, dest="byzantine_f",
                   help="Byzantine bound for a new datadir (default: the task's; 0 lets single updates train)")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve P2P and API on (port 0: any)")
    p.add_argument("--peer", action="append", default=[], metavar="URL", help="a peer's URL (repeatable)")
    p.add_argument("--mine", action="store_true", help="mine blocks")
    p.add_argument("--train", nargs="?", const=FIRST_TASK, default=None, action="append", metavar="TASK_ID",
                   help="train a task (its id or a unique prefix; alone: the chain's first task) on this "
                        "node's data and submit updates; `--train --train ID --data FILE` trains the first "
                        "task on its built-in shard and task ID on FILE (a whole ID not yet deployed is waited for)")
    p.add_argument("--data", type=pathlib.Path, default=None, metavar="FILE",
                   help="train on your own CSV or .npz (feature columns, then 'label'; checked against "
                        "the task, kept encrypted in the datadir; rows appended later are picked up)")
    p.add_argument("--eval", type=pathlib.Path, default=None, metavar="FILE", dest="eval_file",
                   help="CSV/npz the dashboard and API score the model on (a task without built-in data)")
    p.add_argument("--shard", default="0/1", help="this node's data shard i/n of the built-in task's data")
    p.add_argument("--shard-scheme", choices=("hash", "dirichlet"), default="hash")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration for non-IID shards")
    add_unlocked_keystore(p, "receives the rewards and signs the updates; --mine and --train need it",
                          required=False)
    p.add_argument("--threads", type=int, default=1, help="mining threads")
    p.add_argument("--block-interval", type=float, default=None,
                   help="seconds to wait after each mined block (default: 1 on regtest, 0 elsewhere)")
    p.add_argument("--attack", default=None, help="make this an attacker node (testnet demos): "
                   "miner-poison, sybil-flood, censor, copy (chain attacks), or a poisoned "
                   "participant: sign-flip, gaussian, scaling, label-flip, alie, ...")
    p.set_defaults(handler=cmd_run)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen must be HOST:PORT, got {text!r}")
    return host, int(port)


def train_targets(given: list[str]) -> tuple[str | None, bool]:
    """What the ``--train`` options ask for: the task to train (None: the first) and whether the
    chain's first task trains too. A node trains at most a named task and the first task."""
    named = [g for g in given if g != FIRST_TASK]
    if len(named) > 1 or len(given) > 2:
        raise CliError("--train names at most one task (with --data) besides a bare --train for the chain's first")
    return (named[0] if named else None), bool(named) and FIRST_TASK in given


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import errno
    import os
    import signal

    from node.cli.chain import parse_shard
    from node.config import NodeConfig
    from node.keystore_file import KeystoreFileError, read_password
    from node.p2p.messages import is_listen_url
    from node.service import DatadirLocked, Node
    from node.storage import StorageError

    host, port = parse_listen(args.listen)
    for url in args.peer:
        if not is_listen_url(url):
            raise CliError(f"--peer must look like http://host:port, got {url!r}")
    from node.training import all_attacks

    if args.data is not None and args.train is None:
        raise CliError("--data is the file this node trains on: add --train")
    train_task, first_too = train_targets(args.train or [])
    if args.attack is not None and args.attack not in all_attacks():
        raise CliError(f"--attack must be one of {', '.join(all_attacks())}")
    password = None
    if args.keystore is not None:
        try:
            password = read_password(confirm=False, file=args.password_file)
        except KeystoreFileError as exc:
            raise CliError(str(exc)) from None
    interval = args.block_interval if args.block_interval is not None else (1.0 if args.network == "regtest" else 0.0)
    config = NodeConfig(
        datadir=args.datadir, network=args.network, task=args.task, rule=args.rule, byzantine_f=args.byzantine_f, host=host, port=port,
        peers=list(args.peer), mine=args.mine, train=args.train is not None,
        train_task=train_task, train_first_too=first_too, shard=parse_shard(args.shard), data_file=args.data,
        eval_file=args.eval_file,
        shard_scheme=args.shard_scheme, dirichlet_alpha=args.alpha, keystore=args.keystore,
        password=password, threads=args.threads, min_block_interval_s=interval, attack=args.attack,
    )

    async def run() -> None:
        node = Node(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        print(f"node {node.url} running (pid {os.getpid()}); Ctrl-C to stop", flush=True)
        try:
            await stop.wait()
        finally:
            print("stopping…", flush=True)
            await node.stop()

    try:
        asyncio.run(run())
    except (DatadirLocked, StorageError, KeystoreFileError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise CliError(f"{exc}; pick another --listen HOST:PORT (port 0: any free one)") from None
        raise CliError(f"{exc}; check that --datadir is a writable directory") from None
    return 0
