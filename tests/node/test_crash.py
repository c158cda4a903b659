"""A miner killed with SIGKILL at random moments restarts on a consistent chain.

Each run starts `gradchain chain mine`, kills it after a random number of
reported blocks plus a random delay (so the kill lands anywhere: training,
hashing, mid-write), then checks that the datadir opens, `chain verify`
passes, and every block the process reported as mined is still on the main
chain at its height.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import signal
import subprocess
import sys

from node.chainstate import ChainState
from node.cli.main import main
from node.verify import verify_chain

RUNS = 4
MINED = re.compile(r"^mined block (\d+) ([0-9a-f]{16})…")


def gradchain(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.cli", *args]


def test_sigkill_never_loses_acknowledged_blocks(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "GRADCHAIN_PASSWORD": "pw", "PYTHONUNBUFFERED": "1"}
    datadir, keystore = tmp_path / "d", tmp_path / "k.json"
    os.environ["GRADCHAIN_PASSWORD"] = "pw"
    try:
        assert main(["chain", "init", "--datadir", str(datadir), "--network", "regtest", "--f", "0"]) == 0
        assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    finally:
        del os.environ["GRADCHAIN_PASSWORD"]
    rng = random.Random(2026)
    acknowledged: dict[int, str] = {}
    for run in range(RUNS):
        proc = subprocess.Popen(
            gradchain("chain", "mine", "--datadir", str(datadir), "--blocks", "500",
                      "--keystore", str(keystore), "--threads", "1"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert proc.stdout is not None
        wanted = rng.randint(1, 6)
        seen = 0
        for line in proc.stdout:  # blocks until the miner reports a block (or dies)
            match = MINED.match(line)
            if match:
                acknowledged[int(match.group(1))] = match.group(2)
                seen += 1
                if seen >= wanted:
                    break
        assert seen >= wanted, f"run {run}: the miner stopped before reporting {wanted} blocks"
        try:  # a random extra moment: lands anywhere inside the next block's work
            proc.wait(timeout=rng.uniform(0.0, 0.3))
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        chain = ChainState.open(datadir)
        try:
            report = verify_chain(chain)
            assert report.error == "", f"run {run}: {report.error}"
            for height, short_hash in acknowledged.items():
                stored = chain.hash_at(height)
                assert stored is not None and stored[::-1].hex().startswith(short_hash), (
                    f"run {run}: block {height} was reported mined but is not on the chain"
                )
        finally:
            chain.close()
    assert len(acknowledged) >= RUNS
