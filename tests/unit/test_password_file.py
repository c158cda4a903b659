"""``--password-file``: the first line of a private file is the wallet password.

A recorded command line (testnet.json) names the file instead of carrying
the password, so the file gets the keystore's own protection: owner-only
mode, a regular file, read through no symlink.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from node.cli.main import main
from node.keystore_file import KeystoreFileError, read_password, read_password_file


def private(path: pathlib.Path, text: str, mode: int = 0o600) -> pathlib.Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_first_line_is_the_password(tmp_path: pathlib.Path) -> None:
    assert read_password_file(private(tmp_path / "p", "s3cret\nignored\n")) == "s3cret"
    assert read_password_file(private(tmp_path / "q", "with spaces \r\n")) == "with spaces "
    assert read_password_file(private(tmp_path / "r", "no newline")) == "no newline"


def test_the_file_wins_over_the_environment(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "from-env")
    assert read_password(confirm=True, file=private(tmp_path / "p", "from-file\n")) == "from-file"
    assert read_password(confirm=False) == "from-env"


@pytest.mark.parametrize(("text", "mode", "problem"), [
    ("pw\n", 0o640, "chmod 600"),
    ("pw\n", 0o604, "chmod 600"),
    ("\nsecond line\n", 0o600, "no password on its first line"),
    ("", 0o600, "no password"),
    ("x" * 5000, 0o600, "larger than a password file"),
])
def test_unsafe_or_empty_files_are_refused(tmp_path: pathlib.Path, text: str, mode: int, problem: str) -> None:
    with pytest.raises(KeystoreFileError, match=problem):
        read_password_file(private(tmp_path / "p", text, mode))


def test_missing_directory_and_symlink_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreFileError, match="no password file"):
        read_password_file(tmp_path / "absent")
    with pytest.raises(KeystoreFileError, match="not a regular file"):
        read_password_file(tmp_path)
    target = private(tmp_path / "real", "pw\n")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(KeystoreFileError, match="cannot read"):
        read_password_file(tmp_path / "link")


def test_wallet_new_and_chain_mine_read_it_without_a_terminal(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The commands a script runs: no GRADCHAIN_PASSWORD, the file alone."""
    monkeypatch.delenv("GRADCHAIN_PASSWORD", raising=False)
    password = private(tmp_path / "pw", "correct horse\n")
    keystore, datadir = tmp_path / "k.json", tmp_path / "d"
    assert main(["wallet", "new", "--keystore", str(keystore), "--password-file", str(password)]) == 0
    assert main(["chain", "init", "--datadir", str(datadir), "--f", "0"]) == 0
    mine = ["chain", "mine", "--datadir", str(datadir), "--blocks", "1", "--keystore", str(keystore),
            "--no-update", "--threads", "1"]
    assert main([*mine, "--password-file", str(password)]) == 0
    assert "mined block 1" in capsys.readouterr().out
    assert main([*mine, "--password-file", str(private(tmp_path / "wrong", "battery staple\n"))]) == 1
    assert main(mine) == 1  # no file, no variable, no terminal
    assert "--password-file" in capsys.readouterr().err
