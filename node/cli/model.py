"""`gradchain model get|predict`: the shared model, from any node."""

from __future__ import annotations

import argparse
import pathlib

from node.cli.errors import api_failure
from node.cli.options import add_json, add_node, add_out, add_task, print_json


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = verbs.add_parser("get", help="save the model's parameters at a height as .npy")
    add_node(p)
    add_task(p)
    p.add_argument("--height", type=int, default=None, help="default: the tip")
    add_out(p, "the flat float32 parameters as .npy", required=True)
    add_json(p)
    p.set_defaults(handler=cmd_get)

    p = verbs.add_parser("predict", help="run inference on inputs from a .csv or .npy file")
    add_node(p)
    add_task(p)
    p.add_argument("--inputs", required=True, type=pathlib.Path, metavar="FILE",
                   help="rows of the task's features: .csv (comma-separated numbers, no header) or .npy")
    p.add_argument("--height", type=int, default=None, help="default: the tip")
    add_json(p)
    p.set_defaults(handler=cmd_predict)


def cmd_get(args: argparse.Namespace) -> int:
    import numpy as np

    from node.cli.files import write_file
    from node.cli.task import task_id_of
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    try:
        params, height = client.model_params(args.height, task_id_of(client, args.task))
    except ApiError as exc:
        raise api_failure(exc, "the model request") from None
    write_file(args.out, lambda path: np.save(path, params, allow_pickle=False))
    if args.json:
        print_json({"path": str(args.out), "height": height, "parameters": int(params.size)})
    else:
        print(f"saved {params.size} parameters of height {height} to {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from node.cli.files import load_rows
    from node.cli.task import task_spec_of
    from node.client import ApiError, NodeClient

    client = NodeClient(args.node)
    task_id, task = task_spec_of(client, args.task)
    inputs = load_rows(args.inputs, task.input_dim)
    try:
        predictions = (client.predict(inputs, args.height) if task_id is None
                       else client.task_predict(task_id, inputs, args.height)[0])
    except ApiError as exc:
        raise api_failure(exc, "the inputs") from None
    if args.json:
        print_json({"predictions": predictions})
    else:
        for value in predictions:
            print(value)
    return 0
