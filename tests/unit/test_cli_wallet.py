"""`gradchain wallet new|show|list` through the real entry point: exit codes a script
can trust, output it can parse, and files that are never overwritten."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from node.cli.main import main
from node.keystore_file import keystore_address, read_keystore
from wallet import decode_address

PASSWORD = "test password"


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own GRADCHAIN_HOME and a password in the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("GRADCHAIN_HOME", str(home))
    monkeypatch.setenv("GRADCHAIN_PASSWORD", PASSWORD)
    return home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["wallet", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_new_with_keystore_prints_the_address(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "mine.json"
    code, out, err = run(capsys, "new", "--keystore", str(path))
    assert code == 0
    address = out.strip()
    decode_address(address)  # a valid gradchain address and nothing else on stdout
    assert keystore_address(path) == address
    assert read_keystore(path, PASSWORD).public is not None
    assert str(path) in err
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_new_default_location_is_named_by_the_address(
    capsys: pytest.CaptureFixture[str], isolated_home: Path
) -> None:
    code, out, _ = run(capsys, "new")
    assert code == 0
    address = out.strip()
    wallets = isolated_home / "wallets"
    assert [p.name for p in wallets.iterdir()] == [f"{address[:16]}.json"]
    if os.name == "posix":
        assert stat.S_IMODE(wallets.stat().st_mode) == 0o700


def test_two_new_wallets_differ(capsys: pytest.CaptureFixture[str], isolated_home: Path) -> None:
    assert run(capsys, "new")[0] == 0
    assert run(capsys, "new")[0] == 0
    files = list((isolated_home / "wallets").iterdir())
    assert len(files) == 2
    assert len({keystore_address(p) for p in files}) == 2


def test_new_refuses_to_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    assert run(capsys, "new", "--keystore", str(path))[0] == 0
    before = path.read_bytes()
    code, out, err = run(capsys, "new", "--keystore", str(path))
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and "already exists" in err
    assert path.read_bytes() == before


def test_new_without_password_source_tells_what_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GRADCHAIN_PASSWORD")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    path = tmp_path / "mine.json"
    code, out, err = run(capsys, "new", "--keystore", str(path))
    assert code == 1
    assert "GRADCHAIN_PASSWORD" in err
    assert not path.exists()


def test_new_into_missing_directory_fails_cleanly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "new", "--keystore", str(tmp_path / "no" / "such" / "w.json"))
    assert code == 1
    assert "does not exist" in err


def test_show_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    _, out, _ = run(capsys, "new", "--keystore", str(path))
    address = out.strip()
    public_hex = json.loads(path.read_text())["public_key"]

    code, out, _ = run(capsys, "show", "--keystore", str(path))
    assert code == 0
    assert address in out and public_hex in out and str(path) in out

    code, out, _ = run(capsys, "show", "--keystore", str(path), "--json")
    assert code == 0
    assert json.loads(out) == {"address": address, "public_key": public_hex, "path": str(path)}


def test_show_needs_no_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "mine.json"
    run(capsys, "new", "--keystore", str(path))
    monkeypatch.delenv("GRADCHAIN_PASSWORD")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run(capsys, "show", "--keystore", str(path))[0] == 0


def test_show_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "show", "--keystore", str(tmp_path / "absent.json"))
    assert code == 1 and out == ""
    assert "no keystore at" in err


def test_show_not_a_keystore(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"hello": "world"}')
    code, _, err = run(capsys, "show", "--keystore", str(path))
    assert code == 1
    assert "not a valid keystore" in err and str(path) in err


def test_show_requires_keystore(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["wallet", "show"])
    assert exc.value.code == 2
    assert "--keystore" in capsys.readouterr().err


def test_list_shows_every_keystore_and_skips_junk(
    capsys: pytest.CaptureFixture[str], isolated_home: Path
) -> None:
    addresses = {run(capsys, "new")[1].strip() for _ in range(2)}
    wallets = isolated_home / "wallets"
    (wallets / "junk.json").write_text("not json")
    (wallets / "readme.txt").write_text("ignored: not *.json")

    code, out, err = run(capsys, "list")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines()}
    assert listed == addresses
    assert "junk.json" in err and "skipping" in err

    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {row["address"] for row in rows} == addresses
    assert all(Path(row["path"]).parent == wallets for row in rows)


def test_list_other_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _, out, _ = run(capsys, "new", "--keystore", str(elsewhere / "a.json"))
    code, listed, _ = run(capsys, "list", "--dir", str(elsewhere))
    assert code == 0
    assert listed.split() == [out.strip(), str(elsewhere / "a.json")]


def test_list_empty_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "list", "--dir", str(tmp_path))
    assert code == 0 and out == ""
    assert "no keystores" in err


def test_list_missing_directory_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert "gradchain wallet new" in err


def test_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["wallet", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in ("new", "show", "list", "send", "balance"):
        assert verb in out
