"""`gradchain update submit`: bring your own trainer, submit its update."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError, api_failure
from node.cli.options import add_json, add_node, add_unlocked_keystore, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("submit", help="encode, sign and submit a gradient update from a .npy file",
                         description="The .npy holds delta = params_base - params_after_training "
                                     "(float32, flat, the task's parameter count).")
    add_node(p)
    add_unlocked_keystore(p, "signs the update")
    p.add_argument("--file", required=True, type=pathlib.Path, metavar="FILE",
                   help="the update: a .npy of float32 with the task's parameter count (numpy.save)")
    p.add_argument("--base-height", type=int, default=None, help="height of the model trained on (default: tip)")
    p.add_argument("--fee", type=int, default=0)
    p.add_argument("--encoding", choices=("f32", "f16", "int8", "topk"), default="f32")
    add_json(p)
    p.set_defaults(handler=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    import numpy as np

    from node.cli.files import load_npy
    from node.cli.options import unlock_keystore
    from node.client import ApiError, NodeClient, UpdateRefused, check_update_locally

    client = NodeClient(args.node)
    try:
        task = client.task_spec()
    except ApiError as exc:
        raise api_failure(exc, "the request for its task") from None
    expected = f"a .npy of float32 with task {task.name}'s {task.param_count} parameters"
    delta = load_npy(args.file, expected)
    try:
        check_update_locally(task, delta, args.encoding)
    except UpdateRefused as exc:
        raise CliError(f"{exc}; nothing was sent") from None
    keypair = unlock_keystore(args.keystore, args.password_file)
    try:
        tx_id = client.submit_update(keypair, delta.astype(np.float32), base_height=args.base_height,
                                     fee=args.fee, encoding=args.encoding)
    except ApiError as exc:
        raise api_failure(exc, "the update") from None
    if args.json:
        print_json({"txid": tx_id})
    else:
        print(tx_id)
    return 0
