"""`chain verify`: replay the stored main chain from genesis into a fresh state.

Every block is read back from storage, decoded strictly, its header checked
against its parent and its body run through the full state transition, as if
it came from a peer. The replay must end at the stored tip and state root.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from consensus.block import decode_block
from consensus.errors import BlockRejected
from consensus.genesis import genesis_state
from consensus.header import hash_hex
from consensus.transition import BlockContext, apply_block
from consensus.validation import ParentInfo, validate_header
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
    report = VerifyReport(phases={"read": 0.0, "header": 0.0, "transition": 0.0})
    started = time.perf_counter()
    state = genesis_state(chain.task)
    hashes = [chain.genesis_hash]
    headers = [chain.genesis.header]
    span = chain.params.median_time_span
    window = chain.task.staleness_window
    for height in range(1, chain.height + 1):
        t0 = time.perf_counter()
        raw = chain.get_raw_block(chain.main[height])
        try:
            if raw is None:
                raise ValueError("block body missing from storage")
            block = decode_block(raw)
            t1 = time.perf_counter()
            parent = ParentInfo(
                headers[-1], height - 1, hashes[-1], [h.time for h in headers[-span:]]
            )
            validate_header(
                block.header, parent, chain.params, max(int(time.time()), block.header.time),
                anchor_time=headers[1].time if height > 1 else None,
            )
            t2 = time.perf_counter()
            recent = {h: hashes[h] for h in range(max(0, height - window), height)}
            state, _ = apply_block(state, block, BlockContext(chain.chain_id, chain.task, recent))
            t3 = time.perf_counter()
            if block.hash != chain.main[height]:
                raise ValueError("replayed block hash differs from the stored main chain")
        except (BlockRejected, ValueError) as exc:
            report.failed_height, report.error = height, str(exc)
            break
        report.phases["read"] += t1 - t0
        report.phases["header"] += t2 - t1
        report.phases["transition"] += t3 - t2
        hashes.append(block.hash)
        headers.append(block.header)
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
