"""`gradchain update bond|submit`: bring your own trainer, contribute its updates.

``bond`` locks the task's bond for the key (once; it matures after the
task's ``bond_maturity`` blocks). ``submit`` commits the updates of a .npy
file now and pools their reveals when the next round starts, as the chain
requires (docs/DESIGN-NOTES.md, "Rounds, bonds and commit-reveal"); a block
takes one per sender, and the command returns when they are all on chain
(or that round is over). ``--task`` picks a task deployed by transaction;
without it, the chain's first task.
"""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError, api_failure
from node.cli.options import (
    Progress,
    add_json,
    add_node,
    add_task,
    add_unlocked_keystore,
    print_json,
)


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("bond", help="lock the task's bond for your key (needed once before submitting)")
    add_node(p)
    add_unlocked_keystore(p, "the key to bond")
    add_task(p)
    p.add_argument("--fee", type=int, default=0)
    add_json(p)
    p.set_defaults(handler=cmd_bond)

    p = verbs.add_parser("submit", help="commit updates from a .npy file now, reveal them next round",
                         description="The .npy holds delta = params_round_start - params_after_training "
                                     "(float32, the task's parameter count): one flat update, or one per "
                                     "row, at most a round's worth. Train on the model of the current "
                                     "round (`gradchain model get`); the key needs a mature bond.")
    add_node(p)
    add_unlocked_keystore(p, "signs the commitment and the reveals")
    add_task(p)
    p.add_argument("--file", required=True, type=pathlib.Path, metavar="FILE",
                   help="the update(s): a .npy of float32, one row of the task's parameter count per update "
                        "(numpy.save)")
    p.add_argument("--encoding", choices=("f32", "f16", "int8", "topk"), default="f32")
    add_json(p)
    p.set_defaults(handler=cmd_submit)


def cmd_bond(args: argparse.Namespace) -> int:
    from node.cli.options import unlock_keystore
    from node.cli.task import task_id_of
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    keypair = unlock_keystore(args.keystore, args.password_file)
    try:
        tx_id = client.bond(keypair, fee=args.fee, task_id=task_id_of(client, args.task))
    except ApiError as exc:
        if exc.status == 0:
            raise CliError(exc.message) from None
        raise CliError(f"the node refused the bond: {exc.message}; a bond needs the task's bond "
                       "amount in the account (mine, or have coins sent with `gradchain wallet send`)") from None
    if args.json:
        print_json({"txid": tx_id, "already_bonded": tx_id is None})
    else:
        print("already bonded" if tx_id is None else tx_id)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import numpy as np

    from node.cli.files import load_npy
    from node.cli.options import unlock_keystore
    from node.cli.task import task_spec_of
    from node.client import ApiError, NodeClient, UpdateRefused, check_update_locally

    client = NodeClient(args.node)
    task_id, task = task_spec_of(client, args.task)
    expected = (f"a .npy of float32 with task {task.name}'s {task.param_count} parameters per row, "
                f"at most {task.round_blocks} rows")
    deltas = load_npy(args.file, expected)
    rows = deltas[None, :] if deltas.ndim == 1 else deltas
    if rows.ndim != 2 or not 1 <= rows.shape[0] <= task.round_blocks:
        raise CliError(f"{args.file} holds an array of shape {list(deltas.shape)}; expected {expected}")
    try:
        for row in rows:
            check_update_locally(task, row, args.encoding)
    except UpdateRefused as exc:
        raise CliError(f"{exc}; nothing was sent") from None
    keypair = unlock_keystore(args.keystore, args.password_file)
    try:
        tx_ids = client.contribute(keypair, [row.astype(np.float32) for row in rows], task_id=task_id,
                                   encoding=args.encoding, progress=Progress())
    except ApiError as exc:
        raise api_failure(exc, "the update") from None
    if args.json:
        print_json({"txids": tx_ids})
    else:
        for tx_id in tx_ids:
            print(tx_id)
    return 0
