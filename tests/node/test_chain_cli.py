"""`gradchain chain ...` end to end on a regtest datadir: init, mine, verify,
show, export and import, and what happens when the data is damaged.
"""

from __future__ import annotations

import io
import json
import pathlib
import sqlite3
import sys

import pytest

from node.cli.main import main

PASSWORD = "correct horse"
SOLO_BLOCKS = 24  # three rounds of the digits task: bond, commit, two rounds of reveals


@pytest.fixture()
def mined(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A datadir with 24 mined blocks: the miner bonds (block 2), commits a round's updates (block
    6, its bond mature), reveals one per block of rounds 1 and 2, and the model moves at 16 and 24."""
    monkeypatch.setenv("GRADCHAIN_PASSWORD", PASSWORD)
    datadir = tmp_path / "a"
    assert main(["chain", "init", "--datadir", str(datadir), "--network", "regtest", "--f", "0"]) == 0
    assert main(["wallet", "new", "--keystore", str(tmp_path / "k.json")]) == 0
    code = main(["chain", "mine", "--datadir", str(datadir), "--blocks", str(SOLO_BLOCKS),
                 "--keystore", str(tmp_path / "k.json"), "--shard", "1/3", "--threads", "1"])
    assert code == 0
    return datadir


class BinaryStdio:
    """Stands in for sys.stdin/sys.stdout where a command uses ``.buffer``."""

    def __init__(self, data: bytes = b"") -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def show(datadir: pathlib.Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    capsys.readouterr()
    assert main(["chain", "show", "--datadir", str(datadir), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_mined_chain_trains_and_verifies(mined: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = show(mined, capsys)
    assert info["height"] == SOLO_BLOCKS
    assert info["model_version"] == 2  # the model moves once per round, from the round after the commitment
    assert len(str(info["tip"])) == 64 and len(str(info["state_root"])) == 64
    assert show(mined, capsys, "--height", "15")["model_version"] == 0
    assert show(mined, capsys, "--height", "16")["model_version"] == 1
    assert main(["chain", "verify", "--datadir", str(mined)]) == 0
    assert "matches" in capsys.readouterr().out


def test_export_import_reaches_same_tip(
    mined: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = BinaryStdio()
    monkeypatch.setattr(sys, "stdout", exported)
    assert main(["chain", "export", "--datadir", str(mined)]) == 0
    monkeypatch.undo()
    monkeypatch.setattr(sys, "stdin", BinaryStdio(exported.buffer.getvalue()))
    fresh = tmp_path / "b"
    assert main(["chain", "import", "--datadir", str(fresh), "--network", "regtest"]) == 0
    monkeypatch.undo()
    assert show(fresh, capsys) == show(mined, capsys)


def test_import_of_a_heavier_chain_forked_deep_below_the_tip_reorgs(
    mined: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is the user's own data: its blocks are stored even where a peer's would be too little work.

    Peers' blocks on a branch far below our tip's work are not stored (the
    anti-DoS threshold, cut to 2 blocks here); an import from genesis of a
    longer chain than the datadir's must still reorg to it.
    """
    import node.chainstate as chainstate

    other = tmp_path / "other"
    assert main(["chain", "init", "--datadir", str(other), "--network", "regtest", "--f", "0"]) == 0
    assert main(["wallet", "new", "--keystore", str(tmp_path / "k2.json")]) == 0
    longer = int(str(show(mined, capsys)["height"])) + 3
    assert main(["chain", "mine", "--datadir", str(other), "--blocks", str(longer), "--no-update",
                 "--keystore", str(tmp_path / "k2.json"), "--threads", "1"]) == 0
    exported = BinaryStdio()
    monkeypatch.setattr(sys, "stdout", exported)
    assert main(["chain", "export", "--datadir", str(other)]) == 0
    monkeypatch.undo()
    monkeypatch.setattr(chainstate, "ANTI_DOS_WORK_BLOCKS", 2)
    monkeypatch.setattr(sys, "stdin", BinaryStdio(exported.buffer.getvalue()))
    assert main(["chain", "import", "--datadir", str(mined)]) == 0
    monkeypatch.undo()
    assert show(mined, capsys) == show(other, capsys)


def test_import_rejects_a_tampered_block(
    mined: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite3.connect(mined / "chain.sqlite")
    (body,) = db.execute("SELECT body FROM blocks b JOIN main_chain m ON m.hash = b.hash WHERE m.height = 3").fetchone()
    db.close()
    # A file whose block 3 has one flipped byte in its last transaction.
    import struct

    from node.chainstate import ChainState
    from node.cli.chain import EXPORT_MAGIC

    chain = ChainState.open(mined)
    records = [chain.get_raw_block(h) for h in chain.main]
    chain.close()
    damaged = bytearray(body)
    damaged[-5] ^= 0x01
    records[3] = bytes(damaged)
    blob = b"".join(EXPORT_MAGIC + struct.pack("<I", len(r)) + r for r in records)
    monkeypatch.setattr(sys, "stdin", BinaryStdio(blob))
    fresh = tmp_path / "c"
    assert main(["chain", "import", "--datadir", str(fresh), "--network", "regtest"]) == 1
    assert "block 3 of the file is invalid" in capsys.readouterr().err
    monkeypatch.undo()
    assert show(fresh, capsys)["height"] == 2  # everything before the bad block, nothing after


def test_verify_reports_where_state_diverged(mined: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A block body rewritten on disk (valid encoding, wrong content) is found."""
    from node.chainstate import ChainState

    chain = ChainState.open(mined)
    block4 = chain.get_raw_block(chain.main[4])
    chain.close()
    db = sqlite3.connect(mined / "chain.sqlite")
    (hash5,) = db.execute("SELECT hash FROM main_chain WHERE height = 5").fetchone()
    db.execute("UPDATE blocks SET body = ? WHERE hash = ?", (block4, hash5))
    db.commit()
    db.close()
    assert main(["chain", "verify", "--datadir", str(mined)]) == 1
    assert "FAILED at height 5" in capsys.readouterr().err
    # The damaged body is dropped by a rebuild from the intact blocks: the chain ends below it.
    assert main(["chain", "reindex", "--datadir", str(mined)]) == 0
    assert "1 damaged rows dropped" in capsys.readouterr().out
    assert main(["chain", "verify", "--datadir", str(mined)]) == 0
    assert show(mined, capsys)["height"] == 4


def test_solo_mining_under_a_byzantine_bound_warns(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The default digits task (median, f=1) needs 3 updates a block: a solo miner is told."""
    monkeypatch.setenv("GRADCHAIN_PASSWORD", PASSWORD)
    datadir = tmp_path / "f1"
    assert main(["chain", "init", "--datadir", str(datadir)]) == 0
    assert main(["wallet", "new", "--keystore", str(tmp_path / "k.json")]) == 0
    capsys.readouterr()
    assert main(["chain", "mine", "--datadir", str(datadir), "--blocks", "1",
                 "--keystore", str(tmp_path / "k.json"), "--threads", "1"]) == 0
    assert "--f 0" in capsys.readouterr().err
    assert show(datadir, capsys)["model_version"] == 0


def test_commands_explain_a_missing_chain(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "show", "--datadir", str(tmp_path / "nothing")]) == 1
    assert "chain init" in capsys.readouterr().err
