"""`gradchain model get|predict`: the shared model, from any node."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import CliError


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("get", help="save the model's parameters at a height as .npy")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--height", type=int, default=None, help="default: the tip")
    p.add_argument("--out", required=True, type=pathlib.Path)
    p.set_defaults(handler=cmd_get)

    p = verbs.add_parser("predict", help="run inference on inputs from a .csv or .npy file")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--inputs", required=True, type=pathlib.Path, help="rows of features (.csv or .npy)")
    p.add_argument("--height", type=int, default=None)
    p.set_defaults(handler=cmd_predict)


def cmd_get(args: argparse.Namespace) -> int:
    import numpy as np

    from node.client import ApiError, NodeClient

    try:
        params, height = NodeClient(args.node).model_params(args.height)
    except ApiError as exc:
        raise CliError(exc.message) from None
    np.save(args.out, params, allow_pickle=False)
    print(f"saved {params.size} parameters of height {height} to {args.out}")
    return 0


def load_inputs(path: pathlib.Path) -> object:
    import numpy as np

    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    from node.client import ApiError, NodeClient

    inputs = load_inputs(args.inputs)
    try:
        predictions = NodeClient(args.node).predict(inputs, args.height)  # type: ignore[arg-type]
    except ApiError as exc:
        raise CliError(exc.message) from None
    for value in predictions:
        print(value)
    return 0
