"""`gradchain wallet ...`: create and inspect encrypted wallets.

Verbs: ``new`` (a fresh key in a keystore file), ``show`` (one keystore's
address and public key) and ``list`` (every keystore in a directory).
``show`` and ``list`` read only the clear header, so they need no password.
``send`` signs a transfer locally and posts it to a node; ``balance`` asks a
node for an address's balance.

Top-level imports stay light (argparse and the standard library) so that
``gradchain --help`` answers at once; cryptography loads inside handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from node.cli.errors import CliError, api_failure
from node.cli.options import (
    add_json,
    add_keystore,
    add_node,
    add_password_file,
    add_unlocked_keystore,
    print_json,
)

ADDRESS_PREFIX_CHARS = 16
"""Default file name: the address's first 16 characters (``gc1q`` + 12 symbols,
60 bits), enough that two wallets in one directory practically never clash."""

SEED_SIZE = 32  # bytes drawn from os.urandom for a new Ed25519 key


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the wallet verbs to the ``wallet`` noun's parser."""
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")

    new = verbs.add_parser(
        "new",
        help="create a new key in an encrypted keystore file",
        description=(
            "Create a new key and save it encrypted under a password "
            "(from GRADCHAIN_PASSWORD or asked twice on the terminal). Prints the address."
        ),
    )
    add_keystore(new, "where to save it (default: <wallet dir>/<address prefix>.json); never overwritten",
                 required=False)
    add_password_file(new, "read the new password from the first line of FILE (mode 0600) instead of "
                           "$GRADCHAIN_PASSWORD or the terminal")
    add_json(new)
    new.set_defaults(handler=cmd_new)

    show = verbs.add_parser(
        "show",
        help="show a keystore's address and public key (no password needed)",
        description="Show the address, public key and path of one keystore file.",
    )
    add_keystore(show, "the one to show (no password needed)")
    add_json(show)
    show.set_defaults(handler=cmd_show)

    listing = verbs.add_parser(
        "list",
        help="list the keystores in a directory with their addresses",
        description="List every keystore file (*.json) in a directory with its address.",
    )
    listing.add_argument(
        "--dir",
        metavar="DIR",
        type=Path,
        help="wallet directory (default: $GRADCHAIN_HOME/wallets or ~/.gradchain/wallets)",
    )
    add_json(listing)
    listing.set_defaults(handler=cmd_list)

    send = verbs.add_parser("send", help="sign a transfer with a keystore and submit it to a node")
    add_node(send)
    add_unlocked_keystore(send, "pays and signs the transfer")
    send.add_argument("--to", required=True, metavar="ADDRESS")
    send.add_argument("--amount", required=True, type=int, help="base units")
    send.add_argument("--fee", type=int, default=0, help="base units paid to the miner")
    add_json(send)
    send.set_defaults(handler=cmd_send)

    balance = verbs.add_parser("balance", help="an address's balance and nonce, from a node")
    add_node(balance)
    balance.add_argument("address")
    add_json(balance)
    balance.set_defaults(handler=cmd_balance)


def cmd_new(args: argparse.Namespace) -> int:
    """Create a key, seal it, write it (0600, never overwriting) and print its address."""
    from node import keystore_file
    from wallet import address_of, keypair_from_seed

    keypair = keypair_from_seed(os.urandom(SEED_SIZE))
    address = address_of(keypair.public)
    path: Path | None = args.keystore
    if path is None:
        directory = keystore_file.ensure_private_dir(keystore_file.default_wallet_dir())
        path = directory / f"{address[:ADDRESS_PREFIX_CHARS]}{keystore_file.KEYSTORE_SUFFIX}"
    elif path.exists():  # fail before the password prompt, not after
        raise CliError(f"{path} already exists; pass a new file name to --keystore")
    elif not path.parent.is_dir():
        raise CliError(f"directory {path.parent} does not exist; create it or choose another path")
    try:
        password = keystore_file.read_password(confirm=True, file=args.password_file)
        written = keystore_file.write_keystore(path, keypair, password)
    except keystore_file.KeystoreFileError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json({"address": address, "path": str(written)})
    else:
        print(address)
    print(f"saved to {written}; back it up, the password cannot be recovered", file=sys.stderr)
    return 0


def _header_or_error(path: Path) -> tuple[str, str]:
    """(address, public key hex) from a keystore's clear header, or a CliError."""
    from node import keystore_file
    from wallet import KeystoreError

    try:
        header = keystore_file.keystore_header(path)
    except keystore_file.KeystoreFileError as exc:
        raise CliError(str(exc)) from None
    except KeystoreError as exc:
        raise CliError(f"{path}: {exc}") from None
    return header.address, header.public.hex()


def cmd_show(args: argparse.Namespace) -> int:
    """Print one keystore's address, public key and path."""
    path: Path = args.keystore
    address, public_hex = _header_or_error(path)
    if args.json:
        print_json({"address": address, "public_key": public_hex, "path": str(path)})
    else:
        print(f"address:    {address}")
        print(f"public key: {public_hex}")
        print(f"file:       {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print every keystore in a directory with its address; skip (and name) bad files."""
    from node import keystore_file

    directory: Path = args.dir if args.dir is not None else keystore_file.default_wallet_dir()
    if not directory.is_dir():
        raise CliError(
            f"no wallet directory at {directory}; create a wallet with `gradchain wallet new`"
            " or pass --dir"
        )
    rows: list[dict[str, str]] = []
    for path in sorted(directory.glob(f"*{keystore_file.KEYSTORE_SUFFIX}")):
        try:
            address, public_hex = _header_or_error(path)
        except CliError as exc:
            print(f"skipping {exc}", file=sys.stderr)
            continue
        rows.append({"address": address, "public_key": public_hex, "path": str(path)})
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no keystores in {directory}", file=sys.stderr)
    else:
        for row in rows:
            print(f"{row['address']}  {row['path']}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Sign locally (the key never leaves this machine), then submit to the node."""
    from node.cli.options import unlock_keystore
    from node.client import ApiError, NodeClient
    from wallet import AddressError, decode_address

    if args.amount <= 0 or args.fee < 0:
        raise CliError("--amount must be positive and --fee not negative")
    try:
        to = decode_address(args.to)
    except AddressError as exc:
        raise CliError(f"--to: {exc}") from None
    keypair = unlock_keystore(args.keystore, args.password_file)
    try:
        tx_id = NodeClient(args.node).send(keypair, to, args.amount, args.fee)
    except ApiError as exc:
        raise api_failure(exc, "the transfer") from None
    if args.json:
        print_json({"txid": tx_id})
    else:
        print(tx_id)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from node.client import ApiError, NodeClient

    try:
        info = NodeClient(args.node).account(args.address)
    except ApiError as exc:
        raise api_failure(exc, "the address") from None
    if args.json:
        print_json(info)
    else:
        print(f"{info['address']}  balance {info['balance']}  nonce {info['nonce']}  (height {info['height']})")
    return 0
