"""What a node is told at start: datadir, network, listen address, peers, roles."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeConfig:
    datadir: pathlib.Path
    network: str = "regtest"
    task: str = "digits"  # built-in name or spec file; only used when the datadir is new
    rule: str | None = None  # override the task's aggregation rule (a new datadir only: a new chain)
    byzantine_f: int | None = None  # override the task's f (a new datadir only); 0 for a solo chain
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port (tests)
    peers: list[str] = field(default_factory=list)  # listen URLs given with --peer
    mine: bool = False
    train: bool = False
    train_task: str | None = None  # the task id (or unique prefix) --train names; None: the chain's first task
    train_first_too: bool = False  # also train the chain's first task on the built-in shard (--train --train ID)
    shard: tuple[int, int] = (0, 1)  # this node's data shard i/n
    data_file: pathlib.Path | None = None  # the participant's own CSV/npz, instead of a built-in shard
    eval_file: pathlib.Path | None = None  # what the model is scored on, for a task without built-in data
    shard_scheme: str = "hash"  # or "dirichlet" (non-IID label skew)
    dirichlet_alpha: float = 0.5
    keystore: pathlib.Path | None = None
    keypair: Any = None  # wallet.KeyPair given in-process (tests, benchmarks) instead of a keystore
    password: str | None = None  # from GRADCHAIN_PASSWORD or a prompt, never stored
    threads: int | None = 1  # mining threads
    # Seconds the miner waits between blocks it finds: regtest blocks take a
    # few hashes, so an unthrottled regtest miner would flood its peers.
    min_block_interval_s: float = 0.0
    attack: str | None = None  # an attacker node's poisoned trainer (testnet demos)
    attack_scale: float = 1.0
    advertise_url: str | None = None  # the URL peers should use, if not http://host:port
    # False: dial only the --peer seeds, never addresses learned by gossip (they are still
    # kept and passed on), so a benchmark's or test's line or star stays what it was built as.
    dial_learned: bool = True

    @property
    def cookie_path(self) -> pathlib.Path:
        return self.datadir / ".cookie"
