"""`gradchain update bond|submit`: bring your own trainer, contribute its updates.

``bond`` locks the task's bond for the key (once; it matures after the
task's ``bond_maturity`` blocks). ``submit`` commits the updates of a .npy
file now and reveals them one per block during the next round, as the chain
requires (docs/DESIGN-NOTES.md, "Rounds, bonds and commit-reveal"); it
returns when they are sent.
"""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("bond", help="lock the task's bond for your key (needed once before submitting)")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--keystore", required=True, type=pathlib.Path)
    p.add_argument("--password-file", type=pathlib.Path, default=None, metavar="FILE",
                   help="read the wallet password from the first line of FILE (mode 0600) instead of $GRADCHAIN_PASSWORD")
    p.add_argument("--fee", type=int, default=0)
    p.set_defaults(handler=cmd_bond)

    p = verbs.add_parser("submit", help="commit updates from a .npy file now, reveal them next round",
                         description="The .npy holds delta = params_round_start - params_after_training "
                                     "(float32, the task's parameter count): one flat update, or one per "
                                     "row, at most a round's worth. Train on the model of the current "
                                     "round (`gradchain model get`); the key needs a mature bond.")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--keystore", required=True, type=pathlib.Path)
    p.add_argument("--password-file", type=pathlib.Path, default=None, metavar="FILE",
                   help="read the wallet password from the first line of FILE (mode 0600) instead of $GRADCHAIN_PASSWORD")
    p.add_argument("--file", required=True, type=pathlib.Path, help="the update(s) as .npy")
    p.add_argument("--encoding", choices=("f32", "f16", "int8", "topk"), default="f32")
    p.set_defaults(handler=cmd_submit)


def _keypair(args: argparse.Namespace) -> object:
    from node import keystore_file
    from wallet import KeystoreError

    try:
        return keystore_file.read_keystore(args.keystore, keystore_file.read_password(confirm=False, file=args.password_file))
    except (keystore_file.KeystoreFileError, KeystoreError) as exc:
        raise CliError(str(exc)) from None


def cmd_bond(args: argparse.Namespace) -> int:
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    keypair = _keypair(args)
    try:
        tx_id = client.bond(keypair, fee=args.fee)  # type: ignore[arg-type]
    except ApiError as exc:
        raise CliError(f"the node refused the bond: {exc.message}; a bond needs the task's bond "
                       "amount in the account (mine, or have coins sent with `gradchain wallet send`)") from None
    print("already bonded" if tx_id is None else tx_id)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from ml.tasks import TaskSpec
    from node.client import ApiError, NodeClient

    try:
        deltas = np.load(args.file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {args.file} as a .npy array: {exc}") from None
    client = NodeClient(args.node)
    try:
        task = TaskSpec.from_dict(client.model()["task"])
    except ApiError as exc:
        raise CliError(exc.message) from None
    rows = deltas[None, :] if deltas.ndim == 1 else deltas
    if rows.ndim != 2 or rows.shape[1] != task.param_count or not 1 <= rows.shape[0] <= task.round_blocks:
        raise CliError(f"the update(s) have shape {list(deltas.shape)}; task {task.name} expects "
                       f"[{task.param_count}] or [k, {task.param_count}] with k <= {task.round_blocks} (float32)")
    if not np.isfinite(rows).all():
        raise CliError("an update has NaN or infinite values; nothing was sent")
    norms = np.sqrt(np.square(rows.astype(np.float64)).sum(axis=1))
    if float(norms.max()) > task.norm_bound:
        raise CliError(f"an update's L2 norm {float(norms.max()):.3f} exceeds the task's bound {task.norm_bound}; "
                       "scale it down (e.g. clip) before submitting")
    keypair = _keypair(args)
    try:
        tx_ids = client.contribute(keypair, [r.astype(np.float32) for r in rows],  # type: ignore[arg-type]
                                   encoding=args.encoding,
                                   progress=lambda text: print(text, file=sys.stderr, flush=True))
    except ApiError as exc:
        raise CliError(f"the node refused the update: {exc.message}") from None
    for tx_id in tx_ids:
        print(tx_id)
    return 0
