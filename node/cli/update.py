"""`gradchain update submit`: bring your own trainer, submit its update."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("submit", help="encode, sign and submit a gradient update from a .npy file",
                         description="The .npy holds delta = params_base - params_after_training "
                                     "(float32, flat, the task's parameter count).")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--keystore", required=True, type=pathlib.Path)
    p.add_argument("--password-file", type=pathlib.Path, default=None, metavar="FILE",
                   help="read the wallet password from the first line of FILE (mode 0600) instead of $GRADCHAIN_PASSWORD")
    p.add_argument("--file", required=True, type=pathlib.Path, help="the update as .npy")
    p.add_argument("--base-height", type=int, default=None, help="height of the model trained on (default: tip)")
    p.add_argument("--fee", type=int, default=0)
    p.add_argument("--encoding", choices=("f32", "f16", "int8", "topk"), default="f32")
    p.set_defaults(handler=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.tasks import TaskSpec
    from node import keystore_file
    from node.client import ApiError, NodeClient
    from wallet import KeystoreError

    try:
        delta = np.load(args.file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {args.file} as a .npy array: {exc}") from None
    client = NodeClient(args.node)
    try:
        task = TaskSpec.from_dict(client.model()["task"])
    except ApiError as exc:
        raise CliError(exc.message) from None
    if delta.ndim != 1 or delta.size != task.param_count:
        raise CliError(f"the update has shape {list(delta.shape)}; task {task.name} expects "
                       f"[{task.param_count}] (flat float32)")
    if not np.isfinite(delta).all():
        raise CliError("the update has NaN or infinite values; nothing was sent")
    norm = float(np.sqrt(np.square(delta.astype(np.float64)).sum()))
    if norm > task.norm_bound:
        raise CliError(f"the update's L2 norm {norm:.3f} exceeds the task's bound {task.norm_bound}; "
                       "scale it down (e.g. clip) before submitting")
    try:
        keypair = keystore_file.read_keystore(args.keystore, keystore_file.read_password(confirm=False, file=args.password_file))
    except (keystore_file.KeystoreFileError, KeystoreError) as exc:
        raise CliError(str(exc)) from None
    try:
        tx_id = client.submit_update(keypair, delta.astype(np.float32), base_height=args.base_height,
                                     fee=args.fee, encoding=args.encoding)
    except ApiError as exc:
        raise CliError(f"the node refused the update: {exc.message}") from None
    print(tx_id)
    return 0
