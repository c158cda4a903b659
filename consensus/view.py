"""What consensus reads of the chain a block extends: its rules and its branch.

A block is judged against three things besides its own bytes: the rules its
chain's genesis fixed (:class:`ChainRules`), the post-state of its parent,
and the branch it extends (the headers and hashes from genesis up to its
parent). The branch is a :class:`ChainView`, a small protocol that the
node's block index (:mod:`node.chainstate`), the replay of ``chain verify``
and the test chain builder all answer with :class:`BranchView`, so the glue
from a stored chain to the rules' inputs is written once.

From a view the rules derive what they need (:func:`ancestor_times` for the
median time past, :func:`anchor_time` for the ASERT retarget,
:func:`hash_at_height` for an update's base block and the bucketing seed);
none of them reads more than the last few ancestors. The ASERT anchor
depends on the whole branch (``consensus.pow.next_anchor_time``), so a view
carries it: the node keeps it per block, ``chain verify`` and the test
builder keep a running one, and a view without one works it out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import EllipsisType
from typing import Protocol

from consensus.header import Header
from consensus.params import ChainParams
from consensus.pow import next_anchor_time
from consensus.tx import chain_tag
from ml.gate import GateSet
from ml.tasks import TaskSpec


@dataclass(frozen=True)
class ChainRules:
    """The rules a chain's genesis fixes, and the data they read, loaded by the node.

    Attributes
    ----------
    params:
        The network's parameters with the task's target block time
        (:func:`consensus.genesis.chain_params_for`).
    task:
        The training task every block executes.
    genesis_hash:
        The chain's genesis block hash, which every signature binds
        (:func:`consensus.tx.chain_tag`).
    gate_set:
        The task's committed validation set when its useful-update gate is on
        (``task.gate_examples > 0``), checked against ``task.gate_data_sha256``
        by whoever loaded it; None when the gate is off.
    """

    params: ChainParams
    task: TaskSpec
    genesis_hash: bytes
    gate_set: GateSet | None = None

    def __post_init__(self) -> None:
        if (self.task.gate_examples > 0) != (self.gate_set is not None):
            raise ValueError(
                f"task {self.task.name!r}: pass its committed validation set exactly when its gate is on"
            )

    @property
    def chain_id(self) -> int:
        """The network's u32 chain id."""
        return self.params.chain_id

    @cached_property
    def task_id(self) -> bytes:
        """The id of the genesis task (:func:`consensus.genesis.genesis_task_id`)."""
        from consensus.genesis import genesis_task_id

        return genesis_task_id(self.task)

    @property
    def tag(self) -> bytes:
        """What every signature on this chain binds: the chain id and the genesis hash."""
        return chain_tag(self.params.chain_id, self.genesis_hash)


class ChainView(Protocol):
    """The branch from genesis up to a block's parent, as consensus reads it.

    ``height`` is the parent's height; ``header_at`` and ``hash_at`` answer
    for every height from 0 to ``height`` on this branch (not the node's main
    chain, when the block extends a fork).
    """

    @property
    def rules(self) -> ChainRules: ...

    @property
    def height(self) -> int: ...

    def header_at(self, height: int) -> Header: ...

    def hash_at(self, height: int) -> bytes: ...

    def asert_anchor(self) -> int | None:
        """The ASERT anchor time after the parent (``consensus.pow.next_anchor_time``)."""
        ...


@dataclass(frozen=True)
class BranchView:
    """A :class:`ChainView` over a sequence of block hashes and a header lookup.

    ``hashes[h]`` is the hash at height ``h`` for ``h <= height`` (the
    sequence may run past ``height``: a node's main chain viewed from an
    ancestor of its tip); ``header_of`` maps a hash on it to its header.
    """

    rules: ChainRules
    height: int
    hashes: Sequence[bytes]
    header_of: Callable[[bytes], Header]
    anchor: int | None | EllipsisType = ...  # the ASERT anchor after ``height``; ``...``: work it out

    def __post_init__(self) -> None:
        if not 0 <= self.height < len(self.hashes):
            raise ValueError(f"height {self.height} is not on a branch of {len(self.hashes)} blocks")

    def header_at(self, height: int) -> Header:
        return self.header_of(self.hash_at(height))

    def hash_at(self, height: int) -> bytes:
        if not 0 <= height <= self.height:
            raise IndexError(f"height {height} is not on this branch (0..{self.height})")
        return self.hashes[height]

    def asert_anchor(self) -> int | None:
        if self.anchor is not ...:
            return self.anchor
        return scan_anchor(self)


def scan_anchor(view: ChainView) -> int | None:
    """The ASERT anchor after ``view``'s parent, from every header of the branch (O(height))."""
    params = view.rules.params
    anchor: int | None = None
    for height in range(1, view.height + 1):
        anchor = next_anchor_time(params, anchor, height, view.header_at(height).time)
    return anchor


def parent_hash(view: ChainView) -> bytes:
    """The hash of the block the next one extends."""
    return view.hash_at(view.height)


def ancestor_times(view: ChainView, count: int) -> list[int]:
    """The times of the last ``count`` blocks up to the parent, oldest first (fewer near genesis)."""
    low = max(0, view.height - count + 1)
    return [view.header_at(h).time for h in range(low, view.height + 1)]


def anchor_time(view: ChainView) -> int | None:
    """The ASERT anchor on this branch after the parent; None while the parent is genesis."""
    return view.asert_anchor() if view.height >= 1 else None


def hash_at_height(view: ChainView, height: int) -> bytes | None:
    """The hash at ``height`` on this branch, or None when the branch has no such block."""
    return view.hash_at(height) if 0 <= height <= view.height else None
