"""Prometheus metrics of one node (its own registry: tests run many nodes per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.height = Gauge("gradchain_height", "height of the active chain tip", registry=r)
        self.peers = Gauge("gradchain_peers", "connected peers", registry=r)
        self.blocks_received = Counter("gradchain_blocks_received", "blocks connected from peers", registry=r)
        self.blocks_mined = Counter("gradchain_blocks_mined", "blocks this node mined", registry=r)
        self.blocks_rejected = Counter(
            "gradchain_blocks_rejected", "blocks rejected, by consensus rule", ["reason"], registry=r
        )
        self.txs_accepted = Counter("gradchain_txs_accepted", "transactions added to the mempool", registry=r)
        self.txs_rejected = Counter(
            "gradchain_txs_rejected", "transactions refused, by reason", ["reason"], registry=r
        )
        self.reorgs = Counter("gradchain_reorgs", "chain reorganisations", registry=r)
        self.reorg_depth = Histogram(
            "gradchain_reorg_depth", "blocks disconnected per reorg", buckets=(1, 2, 3, 5, 10, 20, 50, 100), registry=r
        )
        self.hashrate = Gauge("gradchain_hashrate", "miner hashes per second", registry=r)
        self.mempool_size = Gauge("gradchain_mempool_size", "transactions in the mempool", registry=r)
        self.model_accuracy = Gauge("gradchain_model_accuracy", "test accuracy of the tip model", registry=r)
        self.model_loss = Gauge("gradchain_model_loss", "test loss (or MSE) of the tip model", registry=r)
        self.block_validation_seconds = Histogram(
            "gradchain_block_validation_seconds", "time to validate and connect a block", registry=r
        )
        self.request_seconds = Histogram(
            "gradchain_request_seconds", "HTTP request latency by route", ["route"], registry=r
        )
        self.peer_bans = Counter("gradchain_peer_bans", "peers banned for misbehaviour", registry=r)
        self.announces_dropped = Counter(
            "gradchain_announces_dropped", "peer announces dropped: too many of that peer's still handled", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
