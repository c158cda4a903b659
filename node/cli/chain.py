"""`gradchain chain ...`: a chain without a network.

init, mine (blocks carrying this node's own gradient update), verify (full
replay from genesis), export / import (raw block files), show.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

from node.cli.errors import CliError
from node.cli.options import (
    add_datadir,
    add_json,
    add_out,
    add_unlocked_keystore,
    print_json,
    remark,
)

NETWORKS = ("main", "testnet", "regtest")


def configure(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = verbs.add_parser("init", help="create a datadir holding the genesis block of a network and task")
    add_datadir(p, "created")
    p.add_argument("--network", choices=NETWORKS, default="regtest")
    p.add_argument("--task", default="digits", help="built-in task (digits, stock) or a spec file (task init)")
    p.add_argument("--rule", default=None, help="aggregation rule (default: the task's)")
    p.add_argument("--f", type=int, default=None, dest="byzantine_f",
                   help="Byzantine bound (default: the task's). A chain mined alone needs 0: with f the "
                        "rule only moves the model for blocks of at least 2f+1 updates")
    add_json(p)
    p.set_defaults(handler=cmd_init)

    p = verbs.add_parser("mine", help="mine N blocks, each carrying this wallet's own gradient update")
    add_datadir(p)
    p.add_argument("--blocks", type=int, required=True, help="how many blocks to mine")
    add_unlocked_keystore(p, "receives the rewards and signs the updates")
    p.add_argument("--shard", default="0/1", help="this node's data shard i/n (default 0/1: all data)")
    p.add_argument("--data", type=pathlib.Path, default=None, metavar="FILE",
                   help="train on your own CSV/npz instead of the built-in data")
    p.add_argument("--threads", type=int, default=None, help="mining threads (default: all cores)")
    p.add_argument("--no-update", action="store_true", help="mine empty blocks (no training)")
    add_json(p)
    p.set_defaults(handler=cmd_mine)

    p = verbs.add_parser("verify", help="replay every block from genesis with full validation (repairs nothing)")
    add_datadir(p)
    add_json(p)
    p.set_defaults(handler=cmd_verify)

    p = verbs.add_parser("reindex", help="rebuild the database from the blocks it stores (a node does it "
                                          "by itself when it finds its database damaged)")
    add_datadir(p)
    add_json(p)
    p.set_defaults(handler=cmd_reindex)

    p = verbs.add_parser("export", help="write the main chain as a raw block file (stdout, or --out)")
    add_datadir(p)
    add_out(p, "the block file instead of stdout")
    p.set_defaults(handler=cmd_export)

    p = verbs.add_parser("import", help="read a raw block file from stdin (or --file), validating every block")
    add_datadir(p, "created if new")
    p.add_argument("--network", choices=NETWORKS, default=None, help="network, if the datadir is new")
    p.add_argument("--file", type=pathlib.Path, default=None, metavar="FILE",
                   help="the block file `chain export` wrote (default: stdin)")
    add_json(p)
    p.set_defaults(handler=cmd_import)

    p = verbs.add_parser("show", help="the tip (or a height): hash, state root, model version")
    add_datadir(p)
    p.add_argument("--height", type=int, default=None)
    add_json(p)
    p.set_defaults(handler=cmd_show)


def _open(datadir: pathlib.Path, *, repair: bool = True) -> Any:
    from node.chainstate import ChainState
    from node.storage import StorageError

    try:
        return ChainState.open(datadir, repair=repair)
    except StorageError as exc:
        raise CliError(str(exc)) from None


def cmd_init(args: argparse.Namespace) -> int:
    from ml.tasks import with_overrides
    from node.chainstate import ChainState
    from node.storage import StorageError
    from node.taskfile import load_task

    try:
        task = with_overrides(load_task(args.task), rule=args.rule, f=args.byzantine_f)
        chain = ChainState.create(args.datadir, args.network, task)
    except (ValueError, StorageError) as exc:
        raise CliError(str(exc)) from None
    from consensus.header import hash_hex

    genesis = hash_hex(chain.genesis_hash)
    chain.close()
    if args.json:
        print_json({"datadir": str(args.datadir), "network": args.network, "task": task.name, "genesis": genesis})
    else:
        print(f"initialised {args.datadir} on {args.network}, task {task.name}: genesis {genesis}")
    return 0


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, total = (int(x) for x in text.split("/"))
    except ValueError:
        raise CliError(f"--shard must look like i/n (e.g. 0/3), got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise CliError(f"--shard {text}: need 0 <= i < n")
    return index, total


def _training_rows(
    task: Any, data: pathlib.Path | None, index: int, total: int, *, needed: bool
) -> tuple[Any, tuple[Any, Any]]:
    """(the built-in dataset or None, this miner's rows): its shard, or the ``--data`` file."""
    from ml.datafile import DataFileError, parse_data
    from ml.datasets import load_dataset
    from ml.shards import shard

    try:
        dataset = load_dataset(task)
    except ValueError:
        dataset = None
    if data is None:
        if dataset is None and not needed:
            return None, (None, None)
        if dataset is None:
            raise CliError(f"task {task.name!r} has no built-in data: train it on your own file with --data FILE")
        return dataset, shard(dataset, index, total)
    try:
        table = parse_data(data.read_bytes(), task, npz=data.suffix.lower() == ".npz")
    except OSError as exc:
        raise CliError(f"cannot read {data}: {exc.strerror or exc}") from None
    except DataFileError as exc:
        raise CliError(f"{data}: {exc}") from None
    return dataset, (table.X, table.y)


def cmd_mine(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from consensus.errors import BlockRejected
    from consensus.header import hash_hex
    from consensus.rounds import round_start
    from consensus.template import build_block
    from consensus.tx import Tx
    from ml.evaluate import evaluate, headline_label
    from ml.trainer import train_update
    from node.cli.options import unlock_keystore
    from node.contributor import Contributor, KeyStatus
    from node.mining import solve
    from wallet import address_bytes

    if args.blocks < 1:
        raise CliError("--blocks must be at least 1")
    index, total = parse_shard(args.shard)
    keypair = unlock_keystore(args.keystore, args.password_file)
    chain = _open(args.datadir)
    task = chain.task
    if not args.no_update and task.pipeline.max_f(1) < task.pipeline.f_for(task.f):
        print(f"note: the task's rule {task.rule} with f={task.f} moves the model only for blocks of "
              f"several updates; this solo miner's blocks carry one, so the model will not change. "
              f"For a chain mined alone, init it with --f 0.", file=sys.stderr)
    dataset, (X, y) = _training_rows(task, args.data, index, total, needed=not args.no_update)
    rng = np.random.default_rng(int.from_bytes(keypair.public[:8], "little") ^ chain.height)
    miner = address_bytes(keypair.public)
    me = Contributor(keypair, task, chain.signing_tag, chain.rules.task_id)
    mined: list[dict[str, Any]] = []
    for _ in range(args.blocks):
        txs: list[Tx] = []
        if not args.no_update:
            # the solo participant's part of the rounds: bond, commit, reveal (node/contributor.py)
            height = chain.height + 1
            account = chain.state.account(miner)
            status = KeyStatus.read(task, chain.state.task, miner, height=height, balance=account.balance,
                                    next_nonce=account.nonce)
            bond = me.bond(status)
            if bond is not None:
                txs.append(bond)
            base = chain.main[round_start(status.round, task.round_blocks)]
            if me.wants_commit(status, base):
                deltas = [train_update(task, chain.state.params, X, y, rng=rng) for _ in range(task.round_blocks)]
                txs.append(me.commit(status, base, deltas))
            reveal = me.reveal(status)
            if reveal is not None:
                txs.append(reveal)
            me.forget_before(status.round)
        now = int(time.time())
        block_time = max(now, chain.min_next_time())
        template, _ = build_block(chain.tip_view(), chain.state, txs, miner=miner, time=block_time)
        started = time.perf_counter()
        block = solve(template, threads=args.threads)
        assert block is not None
        try:
            chain.accept_block(block, int(time.time()))
        except BlockRejected as exc:
            raise CliError(f"the node rejected its own block ({exc}); run `gradchain chain verify`") from None
        figures = evaluate(task, chain.state.params, dataset) if dataset else {}
        seconds = time.perf_counter() - started
        mined.append({"height": chain.height, "hash": hash_hex(block.hash), "txs": len(txs),
                      "model_version": chain.state.model_version, "metrics": figures, "seconds": seconds})
        quality = headline_label(task, figures) if dataset else "no figures"
        remark(f"mined block {chain.height} {hash_hex(block.hash)[:16]}… "
               f"({len(txs)} tx{'s' * (len(txs) != 1)}, model v{chain.state.model_version}, {quality}, "
               f"{seconds:.2f}s)", args)
    chain.close()
    if args.json:
        print_json({"blocks": mined, "height": mined[-1]["height"]})
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from node.cli.options import interactive
    from node.verify import verify_chain

    chain = _open(args.datadir, repair=False)  # report the damage as it is on disk
    report = verify_chain(chain, progress=interactive())
    chain.close()
    if args.json:
        print_json({"ok": not report.error, "height": report.height, "blocks": report.blocks,
                    "seconds": report.seconds, "blocks_per_second": report.blocks_per_second,
                    "state_root": report.state_root_hex, "failed_height": report.failed_height,
                    "error": report.error})
    if report.error:
        print(f"chain verify FAILED at height {report.failed_height}: {report.error}; "
              f"`gradchain chain reindex --datadir {args.datadir}` rebuilds it from the intact blocks",
              file=sys.stderr)
        return 1
    if args.json:
        return 0
    print(
        f"verified {report.blocks} blocks to height {report.height} in {report.seconds:.2f}s "
        f"({report.blocks_per_second:.0f} blocks/s after {report.first_block_s:.2f}s of kernel warm-up); "
        f"state root {report.state_root_hex} matches"
    )
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from node.chainstate import DB_NAME
    from node.reindex import reindex
    from node.storage import StorageError

    if not (args.datadir / DB_NAME).exists():
        raise CliError(f"no chain in {args.datadir}; pass the --datadir that holds one")
    try:
        report = reindex(args.datadir, DB_NAME, ["asked for by `chain reindex`"])
    except StorageError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json({"datadir": str(args.datadir), "height": report.height, "blocks": report.blocks,
                    "dropped": report.dropped, "kept_as": str(report.kept_as)})
    else:
        print(f"reindexed {args.datadir}: tip {report.height}, {report.blocks} blocks kept, "
              f"{report.dropped} damaged rows dropped; the old file is {report.kept_as}")
    return 0


EXPORT_MAGIC = b"GCBK"  # each record: magic, u32 length, canonical block bytes


def cmd_export(args: argparse.Namespace) -> int:
    import struct

    chain = _open(args.datadir)

    def write(out: Any) -> None:
        for block_hash in chain.main:
            raw = chain.get_raw_block(block_hash)
            out.write(EXPORT_MAGIC + struct.pack("<I", len(raw)) + raw)
        out.flush()

    try:
        if args.out is None:
            write(sys.stdout.buffer)
        else:
            from node.cli.files import write_file

            def to_file(path: pathlib.Path) -> None:
                with path.open("wb") as handle:
                    write(handle)

            write_file(args.out, to_file)
            print(f"wrote {len(chain.main)} blocks to {args.out}", file=sys.stderr)
    finally:
        chain.close()
    return 0


def read_records(stream: Any) -> Any:
    import struct

    from consensus.caps import MAX_BLOCK_BYTES

    while True:
        head = stream.read(8)
        if not head:
            return
        if len(head) != 8 or head[:4] != EXPORT_MAGIC:
            raise CliError("the input is not a gradchain block file (bad record header); pass what "
                           "`gradchain chain export` wrote")
        (length,) = struct.unpack("<I", head[4:])
        if length > MAX_BLOCK_BYTES:
            raise CliError(f"a record of {length} bytes exceeds the block size limit; the file is damaged: "
                           "export it again")
        raw = stream.read(length)
        if len(raw) != length:
            raise CliError("the block file is truncated; export it again (or copy it whole)")
        yield raw


def cmd_import(args: argparse.Namespace) -> int:
    if args.file is None:
        return _import_from(sys.stdin.buffer, args)
    from node.cli.files import NPY_MAGIC

    if not args.file.is_file():
        raise CliError(f"no block file at {args.file}; pass the file `gradchain chain export --out` wrote")
    with args.file.open("rb") as stream:
        if stream.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise CliError(f"{args.file} is a .npy array, not a block file; pass what `chain export` wrote")
        stream.seek(0)
        return _import_from(stream, args)


def _import_from(stream: Any, args: argparse.Namespace) -> int:
    import time

    from consensus.block import decode_block
    from consensus.errors import BlockRejected
    from consensus.genesis import task_of_genesis
    from node.chainstate import DB_NAME, ChainState

    records = read_records(stream)
    first = next(records, None)
    if first is None:
        raise CliError("the input is empty; pipe in (or pass --file) what `gradchain chain export` wrote")
    try:
        genesis = decode_block(first)
        task = task_of_genesis(genesis)
    except (BlockRejected, ValueError) as exc:
        raise CliError(f"the first record is not a genesis block ({exc}); export the whole chain from "
                       "height 0") from None
    if (args.datadir / DB_NAME).exists():
        chain = _open(args.datadir)
    else:
        if args.network is None:
            raise CliError("the datadir is new: say which network the file is for with --network")
        chain = ChainState.create(args.datadir, args.network, task)
    if genesis.hash != chain.genesis_hash:
        raise CliError("the file's genesis differs from this datadir's: it is another chain; import it "
                       "into a new --datadir")
    imported = 0
    for raw in records:
        try:
            block = decode_block(raw)
            now = int(time.time())
            # The header first: the user's own file is stored even on a branch too light
            # for a peer's blocks (ChainState.screen), as headers-first sync would store it.
            chain.accept_header(block.header, now)
            result = chain.accept_block(block, now)
        except BlockRejected as exc:
            raise CliError(f"block {imported + 1} of the file is invalid ({exc}); the blocks before it are "
                           "imported; get the rest from a node you trust") from None
        imported += result.status != "duplicate"
    height = chain.height
    chain.close()
    if args.json:
        print_json({"imported": imported, "height": height})
    else:
        print(f"imported {imported} blocks; tip {height}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from consensus.header import hash_hex

    chain = _open(args.datadir)
    height = chain.height if args.height is None else args.height
    block_hash = chain.hash_at(height)
    if block_hash is None:
        raise CliError(f"height {height} is not on the main chain; pass --height 0..{chain.height}")
    entry = chain.index[block_hash]
    block = chain.get_block(block_hash)
    if height == chain.height:
        state_root = chain.state.root
    else:
        state_root = block.state_root
    _, version = chain.model_at(height)
    info = {
        "network": chain.network.name,
        "task": chain.task.name,
        "height": height,
        "tip": hash_hex(block_hash),
        "state_root": hash_hex(state_root),
        "time": entry.header.time,
        "bits": f"{entry.header.bits:#010x}",
        "chain_work": f"{entry.chain_work:#x}",
        "model_version": version,
        "txs": len(block.txs),
    }
    chain.close()
    if args.json:
        print_json(info)
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
