"""`gradchain flower`: run an unchanged Flower NumPyClient as a participant of a node's task.

Example (the client of ``examples/flower/``, joining ``make testnet``)::

    gradchain flower --node http://127.0.0.1:18740 --keystore me.json \\
        --app-dir examples/flower --client flower_digits.client_app:client_fn --shard 1/4

The key bonds as soon as it holds the task's bond (send it the coins
first), then takes part in every round: one line per round handled (the
client's evaluation of the round's model, the fits, the commitment sent)
and one per update pooled at the start of the next round (a block counts
one per sender, so each block of that round carries one); ``--json``
prints each as a JSON object instead (JSON lines, ``"kind": "round"`` or
``"reveal"``; a round's ``client_s`` and ``bridge_s`` split its time between
the client and the bridge). ``--task ID`` trains a task deployed by a transaction
(``gradchain task deploy``) instead of the chain's first: its model, its
bond, its rounds. The work itself is :func:`node.flower.run_flower_client`.
"""

from __future__ import annotations

import argparse
import logging
import pathlib

from node.cli.errors import CliError, api_failure
from node.cli.options import add_json, add_node, add_unlocked_keystore


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``flower`` noun has no verbs: it is one long-running command."""
    add_node(parser)
    add_unlocked_keystore(parser, "bonds and signs every update")
    parser.add_argument("--client", required=True, metavar="pkg.module:factory",
                        help="the NumPyClient: an instance, a function returning one, or a Flower "
                             "client_fn(context)")
    parser.add_argument("--task", default=None, metavar="ID",
                        help="the task to train: its id or a unique prefix (`gradchain task list`; "
                             "default: the chain's first task)")
    parser.add_argument("--app-dir", type=pathlib.Path, default=None, metavar="DIR",
                        help="directory to import the client from (default: the working directory)")
    parser.add_argument("--shard", default="0/1", metavar="i/n",
                        help="given to a client_fn as node_config partition-id / num-partitions (default 0/1)")
    parser.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="stop once N rounds' updates are committed and revealed on chain (default: run until Ctrl-C)")
    parser.add_argument("--fee", type=int, default=0, help="base units paid for the bond; updates carry no fee (default: 0)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="how often to ask the node for a new block (default: 1)")
    add_json(parser)
    parser.set_defaults(handler=cmd_flower)


def cmd_flower(args: argparse.Namespace) -> int:
    from node.cli.chain import parse_shard
    from node.cli.options import Progress, print_json, unlock_keystore
    from node.client import ApiError, NodeClient
    from node.flower import (
        BridgeError,
        FlowerBridge,
        RevealReport,
        RoundReport,
        find_task,
        load_client,
        run_config,
    )

    if args.rounds is not None and args.rounds < 1:
        raise CliError("--rounds must be at least 1 (or left out to run until Ctrl-C)")
    if not args.poll > 0:
        raise CliError("--poll must be a positive number of seconds")
    index, total = parse_shard(args.shard)
    node = NodeClient(args.node)
    try:
        task_id, task = find_task(node, args.task)
    except ApiError as exc:
        raise api_failure(exc, "the request for its task") from None
    except BridgeError as exc:
        raise CliError(str(exc)) from None
    keypair = unlock_keystore(args.keystore, args.password_file)
    if not args.verbose:  # each model's line is printed below; the bridge's log of it would repeat it
        logging.getLogger("gradchain.flower").setLevel(logging.WARNING)
    progress = Progress()
    last_wait = ""

    def on_wait(message: str) -> None:
        nonlocal last_wait
        if message != last_wait:
            progress(message)
            last_wait = message

    def on_report(report: RoundReport | RevealReport) -> None:
        nonlocal last_wait
        last_wait = ""
        if args.json:
            print_json(report.to_json())
        else:
            print(report.describe(), flush=True)

    try:
        client = load_client(args.client, node_config={"partition-id": index, "num-partitions": total},
                             run_config=run_config(task),
                             app_dir=args.app_dir)
        which = f"task {task.name}" + ("" if task_id is None else f" ({task_id[:12]}…)")
        progress(f"{type(client).__name__} joins {which} at {args.node}; Ctrl-C to stop")
        bridge = FlowerBridge(client, node, keypair, task, fee=args.fee, poll_s=args.poll, task_id=task_id)
        bridge.run(rounds=args.rounds, on_round=on_report, on_wait=on_wait, on_reveal=on_report)
    except BridgeError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        progress("stopped")
    return 0
