"""Rebuild a damaged chain database from the blocks it stores (``-reindex`` in Bitcoin Core).

At open (``ChainState.open``) :func:`repair_if_damaged` asks the storage
what is wrong with it (``Storage.integrity_problems``: torn pages, a block
row that no longer matches its hash or header, missing undo data, a state
that does not match its root). If anything is, the database is rebuilt in a
fresh file: the genesis from the old file's meta, then every header and
every body that still reads back intact, each validated as if a peer had
sent it. A damaged row is dropped, never served; the blocks above it stay
stored and connect when sync fetches the missing one again. The damaged
file is kept beside the new one as ``chain.sqlite.damaged-<time>`` for a
post-mortem, and the repair is logged.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import sqlite3
import time
from dataclasses import dataclass, field

from consensus.block import Block, decode_block
from consensus.errors import BlockRejected
from consensus.genesis import task_of_genesis
from consensus.header import decode as decode_header
from consensus.header import header_hash
from node.storage import Storage, StorageError

log = logging.getLogger("gradchain.reindex")

REBUILD_DIR = ".reindex"  # inside the datadir, so the final rename stays on one filesystem
PROGRESS_EVERY = 500  # blocks between progress lines


@dataclass
class ReindexReport:
    problems: list[str]
    height: int = 0  # the rebuilt tip
    blocks: int = 0  # bodies connected or stored again
    dropped: int = 0  # rows that no longer read back intact
    kept_as: pathlib.Path | None = None
    notes: list[str] = field(default_factory=list)


def repair_if_damaged(datadir: pathlib.Path, db_name: str) -> ReindexReport | None:
    """Check ``datadir``'s database; rebuild it from its blocks if it is damaged."""
    storage = Storage(datadir / db_name)
    try:
        problems = storage.integrity_problems()
    finally:
        storage.close()
    if not problems:
        return None
    log.warning("%s is damaged (%s); reindexing from the stored blocks", datadir / db_name, "; ".join(problems[:3]))
    report = reindex(datadir, db_name, problems)
    log.warning("reindex done: tip %d, %d blocks kept, %d damaged rows dropped; the damaged file is %s",
                report.height, report.blocks, report.dropped, report.kept_as)
    return report


def _salvage(path: pathlib.Path) -> tuple[bytes, bytes, list[tuple[int, bytes]], list[tuple[int, bytes]], int]:
    """(network, genesis, [(height, header)], [(height, body)], dropped) from the old file, row by row."""
    db = sqlite3.connect(path)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('network', 'genesis')").fetchall())
        if "network" not in meta or "genesis" not in meta:
            raise StorageError(f"{path} lost its network and genesis; remove it and sync again from peers")
        rows = db.execute("SELECT hash, height, header FROM block_index ORDER BY height").fetchall()
        headers: list[tuple[int, bytes]] = []
        bodies: list[tuple[int, bytes]] = []
        dropped = 0
        for key, height, header in rows:
            if header_hash(bytes(header)) != bytes(key):
                dropped += 1
                continue
            headers.append((int(height), bytes(header)))
            try:
                body = db.execute("SELECT body FROM blocks WHERE hash = ?", (key,)).fetchone()
            except sqlite3.DatabaseError:
                body = None
            if body is not None:
                bodies.append((int(height), bytes(body[0])))
        return bytes(meta["network"]), bytes(meta["genesis"]), headers, bodies, dropped
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path} cannot be read ({exc}); remove it and sync again from peers") from None
    finally:
        db.close()


def _intact(raw: bytes, expected_height: int, heights: dict[bytes, int]) -> Block | None:
    try:
        block = decode_block(raw)
        block.check_commitment()
    except (BlockRejected, ValueError):
        return None
    return block if heights.get(block.hash) == expected_height else None


def reindex(datadir: pathlib.Path, db_name: str, problems: list[str]) -> ReindexReport:
    """Rebuild ``datadir/db_name`` from its own headers and bodies; see the module docstring."""
    from node.chainstate import ChainState

    path = datadir / db_name
    network, raw_genesis, headers, bodies, dropped = _salvage(path)
    report = ReindexReport(problems, dropped=dropped)
    genesis = decode_block(raw_genesis)
    work_dir = datadir / REBUILD_DIR
    shutil.rmtree(work_dir, ignore_errors=True)
    chain = ChainState.create(work_dir, network.decode(), task_of_genesis(genesis))
    try:
        if chain.genesis_hash != genesis.hash:
            raise StorageError(f"{path}: its genesis is not this gradchain's; it cannot be rebuilt")
        now = int(time.time())
        for height, raw in headers:
            if height > 0:
                try:
                    chain.accept_header(decode_header(raw), max(now, 0))
                except (BlockRejected, ValueError):
                    report.dropped += 1
        heights = {h: e.height for h, e in chain.index.items()}
        for count, (height, raw) in enumerate(bodies, 1):
            if height == 0:
                continue
            block = _intact(raw, height, heights)
            if block is None:
                report.dropped += 1
                continue
            try:
                chain.accept_block(block, now)
                report.blocks += 1
            except BlockRejected as exc:
                report.notes.append(f"block {height}: {exc}")
            if count % PROGRESS_EVERY == 0:
                log.info("reindexing… %d/%d blocks, tip %d", count, len(bodies), chain.height)
        report.height = chain.height
    finally:
        chain.close()
    report.kept_as = _swap(path, work_dir / db_name)
    shutil.rmtree(work_dir, ignore_errors=True)
    return report


def _swap(old: pathlib.Path, new: pathlib.Path) -> pathlib.Path:
    """Keep ``old`` (and its WAL) as ``*.damaged-<time>`` and move ``new`` into its place."""
    kept = old.with_name(f"{old.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = old.with_name(old.name + suffix)
        if source.exists():
            os.replace(source, kept.with_name(kept.name + suffix))
    os.replace(new, old)
    fd = os.open(old.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return kept
