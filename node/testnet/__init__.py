"""The local multi-node testnet: start, watch, stop (``gradchain testnet ...``)."""
