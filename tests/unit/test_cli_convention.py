"""One CLI convention, held by walking every command's parser (node/cli/options.py states it).

`--json` is a flag that prints JSON on stdout; a file a command writes is
`--out FILE` / `--json-out FILE` / `--png-out FILE`; `--datadir`, `--node`
and `--keystore` are spelled, typed and explained alike; old spellings warn
and still work; progress is shown on a terminal only; errors say what to do
next and no input file is met with numpy's or Python's words.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from node.cli import options
from node.cli.main import build_parser, main

# Commands that print no result to hand to a program: a daemon, a live monitor, a binary stream.
WITHOUT_JSON = {"node run", "testnet up", "chain export"}
# Every option that names a file, by what it does with it. A new file option joins one of these.
WRITTEN_FILES = {"--out", "--json-out", "--png-out"}
READ_FILES = {"--file", "--inputs", "--data", "--eval", "--spec", "--password-file"}  # --data, --eval, --spec: issue 19's names
COMMON = {  # option -> (metavar, type, required, help prefix)
    "--datadir": ("DIR", Path, True, options.DATADIR_HELP),
    "--node": ("URL", None, True, options.NODE_HELP),
    "--keystore": ("FILE", Path, None, options.KEYSTORE_HELP),
}


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every runnable command ("chain show", "sim", ...) and its parser."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        if parser.get_default("handler") is not None:
            found[" ".join(path)] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


COMMANDS = commands()


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_the_walk_finds_every_command() -> None:
    assert {"chain show", "model get", "update submit", "wallet send", "sim", "flower", "node run"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_is_a_flag_that_every_result_printing_command_has(name: str) -> None:
    action = option(COMMANDS[name], "--json")
    if name in WITHOUT_JSON:
        assert action is None, f"{name} is listed as printing no result, yet has --json"
        return
    assert action is not None, f"`gradchain {name}` has no --json"
    assert action.nargs == 0 and action.help == options.JSON_HELP


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_common_options_are_spelled_and_defaulted_alike(name: str) -> None:
    for flag, (metavar, kind, required, help_prefix) in COMMON.items():
        action = option(COMMANDS[name], flag)
        if action is None:
            continue
        assert action.option_strings == [flag]
        assert action.metavar == metavar and action.type is kind, f"{name} {flag}"
        assert action.default is None, f"{name} {flag}: defaults live in the handler, said in the help"
        if required is not None:
            assert action.required is required, f"{name} {flag}"
        assert action.help is not None and action.help.startswith(help_prefix), f"{name} {flag}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_that_unlocks_a_keystore_takes_a_password_file(name: str) -> None:
    keystore, password_file = option(COMMANDS[name], "--keystore"), option(COMMANDS[name], "--password-file")
    unlocks = keystore is not None and options.UNLOCKS in str(keystore.help)
    assert unlocks == (password_file is not None and password_file.help == options.PASSWORD_FILE_HELP), name
    if password_file is not None:
        assert password_file.metavar == "FILE" and password_file.type is Path and password_file.default is None


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_files_are_named_for_what_the_command_does_with_them(name: str) -> None:
    for action in COMMANDS[name]._actions:
        if action.metavar != "FILE" or action.help == argparse.SUPPRESS:
            continue
        flag = action.option_strings[0]
        assert flag in WRITTEN_FILES | READ_FILES | {"--keystore"}, f"{name} {flag}: name it --out or --file"
        assert action.type is Path


def test_the_old_sim_spellings_warn_and_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(options.rewrite_legacy(["sim", "--json", "s.json", "--png", "h.png"]))
    err = capsys.readouterr().err
    assert args.json_out == Path("s.json") and args.json is False
    assert args.png_out == Path("h.png")
    assert "`--json s.json` is deprecated" in err and "write `--json-out s.json`" in err
    assert "`--png h.png` is deprecated" in err
    assert parser.parse_args(options.rewrite_legacy(["sim", "--json=s.json"])).json_out == Path("s.json")
    assert "deprecated" in capsys.readouterr().err
    for flag_use in (["sim", "--json"], ["sim", "--json", "--rounds", "3"], ["-v", "sim", "--rounds", "3", "--json"]):
        args = parser.parse_args(options.rewrite_legacy(flag_use))
        assert args.json is True and args.json_out is None
    assert options.rewrite_legacy(["chain", "show", "--json"]) == ["chain", "show", "--json"]
    assert "deprecated" not in capsys.readouterr().err


def test_progress_shows_on_a_terminal_and_stays_quiet_in_a_pipe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    options.Progress()("working…")  # capsys is a pipe, not a terminal
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(options, "interactive", lambda stream=None: True)
    options.Progress()("working…")
    assert capsys.readouterr() == ("", "working…\n")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.mark.parametrize(("argv", "next_step"), [
    (["chain", "show", "--datadir", "{tmp}/none"], "run `gradchain chain init --datadir"),
    (["chain", "import", "--datadir", "{tmp}/d", "--file", "{tmp}/none.blk"], "pass the file `gradchain chain export --out` wrote"),
    (["model", "get", "--node", UNREACHABLE, "--out", "{tmp}/p.npy"], "is the node running?"),
    (["update", "submit", "--node", UNREACHABLE, "--keystore", "{tmp}/k.json", "--file", "{tmp}/d.npy"], "is the node running?"),
    (["flower", "--node", UNREACHABLE, "--keystore", "{tmp}/k.json", "--client", "a:b"], "is the node running?"),
    (["flower", "--node", UNREACHABLE, "--keystore", "{tmp}/k.json", "--client", "a:b", "--shard", "4/4"], "need 0 <= i < n"),
    (["testnet", "down", "--dir", "{tmp}/none"], "pass the --dir it was started with"),
    (["wallet", "show", "--keystore", "{tmp}/none.json"], "check the path"),
])
def test_errors_say_what_to_do_next(
    argv: list[str], next_step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and next_step in err and "Traceback" not in err


def test_a_wrong_keystore_password_says_what_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "right")
    code, address, _ = run(capsys, "wallet", "new", "--keystore", str(tmp_path / "k.json"))
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "wrong")
    code, _, err = run(capsys, "wallet", "send", "--node", UNREACHABLE, "--keystore", str(tmp_path / "k.json"),
                       "--to", address.strip(), "--amount", "1")
    assert code == 1 and "wrong password" in err and "check GRADCHAIN_PASSWORD" in err


@pytest.mark.parametrize(("content", "said"), [
    (b"1.0,2.0,3.0\n4.0,5.0,6.0\n", "it starts with text '1.0,2.0,3.0"),
    (b"", "it is empty"),
    (b"PK\x03\x04zip", "zip or .npz"),
])
def test_a_file_that_is_not_npy_gets_our_words(content: bytes, said: str, tmp_path: Path) -> None:
    from node.cli.errors import CliError
    from node.cli.files import load_npy

    path = tmp_path / "rows.csv"
    path.write_bytes(content)
    with pytest.raises(CliError) as info:
        load_npy(path, "a .npy of float32 with task digits's 650 parameters")
    message = str(info.value)
    assert "is not a .npy file" in message and said in message
    assert "expected a .npy of float32 with task digits's 650 parameters" in message
    assert "pickle" not in message


def test_pickled_and_non_numeric_npy_files_are_refused(tmp_path: Path) -> None:
    from node.cli.errors import CliError
    from node.cli.files import load_npy, load_rows

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CliError, match="holds Python objects, which gradchain never loads"):
        load_npy(tmp_path / "objects.npy", "numbers")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(CliError, match="holds <U1 values; expected numbers"):
        load_npy(tmp_path / "text.npy", "numbers")
    (tmp_path / "rows.csv").write_text("pixel0,pixel1\n1,2\n")
    with pytest.raises(CliError, match="is not a CSV of numbers .*expected rows of 2 numbers"):
        load_rows(tmp_path / "rows.csv", 2)
    (tmp_path / "wide.csv").write_text("1,2,3\n")
    with pytest.raises(CliError, match=r"shape \[1, 3\]; expected rows of 2 numbers"):
        load_rows(tmp_path / "wide.csv", 2)


def test_json_outputs_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline commands print exactly one JSON document under --json."""
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "pw")
    code, out, _ = run(capsys, "wallet", "new", "--keystore", str(tmp_path / "k.json"), "--json")
    assert code == 0 and json.loads(out)["path"] == str(tmp_path / "k.json")
    code, out, _ = run(capsys, "chain", "init", "--datadir", str(tmp_path / "d"), "--f", "0", "--json")
    assert code == 0 and json.loads(out)["task"] == "digits"
    code, out, _ = run(capsys, "chain", "verify", "--datadir", str(tmp_path / "d"), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
