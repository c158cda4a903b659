"""`chain verify`: replay the stored main chain from genesis into a fresh state.

Every block is read back from storage, decoded strictly and run through
:func:`consensus.transition.state_transition` (header and body) on the
branch replayed so far, as if it came from a peer. The replay must end at
the stored tip and state root.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from consensus.block import decode_block
from consensus.errors import BlockRejected
from consensus.genesis import genesis_state
from consensus.header import Header, hash_hex
from consensus.pow import next_anchor_time
from consensus.transition import state_transition
from consensus.view import BranchView
from node.chainstate import ChainState


@dataclass
class VerifyReport:
    height: int = 0
    blocks: int = 0
    seconds: float = 0.0
    state_root_hex: str = ""
    failed_height: int | None = None
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    first_block_s: float = 0.0  # includes loading the numba kernels, once per process

    @property
    def blocks_per_second(self) -> float:
        """Steady replay speed: the first block (kernel warm-up) is left out when there are others."""
        if self.blocks > 1 and self.seconds > self.first_block_s:
            return (self.blocks - 1) / (self.seconds - self.first_block_s)
        return self.blocks / self.seconds if self.seconds > 0 else 0.0


def verify_chain(chain: ChainState, *, progress: bool = False) -> VerifyReport:
    """Replay ``chain``'s main chain; the report says where it diverged, if it did."""
    report = VerifyReport(phases={"read": 0.0, "transition": 0.0})
    started = time.perf_counter()
    state = genesis_state(chain.task)
    hashes = [chain.genesis_hash]
    headers: dict[bytes, Header] = {chain.genesis_hash: chain.genesis.header}
    anchor: int | None = None  # the ASERT anchor after the last replayed block
    for height in range(1, chain.height + 1):
        t0 = time.perf_counter()
        raw = chain.get_raw_block(chain.main[height])
        try:
            if raw is None:
                raise ValueError("block body missing from storage")
            block = decode_block(raw)
            t1 = time.perf_counter()
            view = BranchView(chain.rules, height - 1, hashes, headers.__getitem__, anchor)
            # Blocks from the future were accepted once; replaying them later must not fail.
            now = max(int(time.time()), block.header.time)
            state, _ = state_transition(view, state, block, now)
            t2 = time.perf_counter()
            if block.hash != chain.main[height]:
                raise ValueError("replayed block hash differs from the stored main chain")
        except (BlockRejected, ValueError) as exc:
            report.failed_height, report.error = height, str(exc)
            break
        report.phases["read"] += t1 - t0
        report.phases["transition"] += t2 - t1
        hashes.append(block.hash)
        headers[block.hash] = block.header
        anchor = next_anchor_time(chain.params, anchor, height, block.header.time)
        report.blocks += 1
        if report.blocks == 1:
            report.first_block_s = time.perf_counter() - started
        if progress and height % 100 == 0:
            print(f"\rverifying… {height}/{chain.height}", end="", file=sys.stderr, flush=True)
    if progress:
        print("\r", end="", file=sys.stderr)
    report.seconds = time.perf_counter() - started
    report.height = len(hashes) - 1
    report.state_root_hex = hash_hex(state.root)
    if report.error == "" and state.root != chain.state.root:
        report.failed_height = chain.height
        report.error = (
            f"replayed state root {hash_hex(state.root)[:16]}… differs from the stored "
            f"{hash_hex(chain.state.root)[:16]}…"
        )
    return report
