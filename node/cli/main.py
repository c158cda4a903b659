"""`gradchain <noun> <verb>`: the command-line entry point.

Each noun lives in its own module under ``node/cli/`` and exposes
``configure(parser)``, which adds its verbs and sets ``handler`` on each.
Noun modules keep their top-level imports light (argparse and the standard
library) so ``gradchain --help`` answers at once; heavy imports happen inside
the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from node.cli.errors import CliError
from node.cli.options import rewrite_legacy

BROKEN_PIPE_EXIT_CODE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left

# (noun, module, one-line help). A new noun is one line here and one module.
NOUNS: tuple[tuple[str, str, str], ...] = (
    ("chain", "node.cli.chain", "a chain without a network: init, mine, verify, export, import, show"),
    ("node", "node.cli.node", "run a node: P2P gossip, API, miner and trainer"),
    ("testnet", "node.cli.testnet", "a local multi-node testnet: up, status, down"),
    ("update", "node.cli.update", "submit a gradient update computed by your own trainer"),
    ("model", "node.cli.model", "fetch the shared model or run inference on it"),
    ("wallet", "node.cli.wallet", "create and inspect encrypted wallets"),
    ("sim", "node.cli.sim", "simulate federated rounds in-process, no chain"),
    ("task", "node.cli.task", "training tasks for your own data: init, split, example, feed"),
    ("flower", "node.cli.flower", "run an unchanged Flower NumPyClient as a participant of a node's task"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradchain",
        description="A proof-of-work blockchain whose blocks train a shared model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    nouns = parser.add_subparsers(dest="noun", metavar="<noun>")
    nouns.required = True
    for noun, module_name, help_text in NOUNS:
        sub = nouns.add_parser(noun, help=help_text, description=help_text)
        sub.set_defaults(noun_parser=sub)
        importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(rewrite_legacy(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handler = getattr(args, "handler", None)
    if handler is None:  # a noun without a verb: show that noun's verbs
        args.noun_parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return BROKEN_PIPE_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
