"""The I/O shell: storage, P2P, API, miner, trainer, CLI and testnet."""
