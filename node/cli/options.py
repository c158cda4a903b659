"""The command line's shared spelling: one definition of each common option and of output.

Every command follows one convention (``tests/unit/test_cli_convention.py``
walks the parser tree and holds them to it):

* ``--json`` is a flag: the command's result goes to stdout as JSON and
  nothing else does (human remarks go to stderr).
* A file the command writes is ``--out FILE`` (``--json-out FILE`` when the
  command writes JSON beside another file, like ``sim``'s heatmap).
* ``--datadir DIR``, ``--node URL`` and ``--keystore FILE`` are spelled,
  typed and explained alike everywhere, from the helpers below.
* Long work shows progress on a terminal (stderr) and stays quiet in a pipe:
  :class:`Progress`.
* An old spelling stays for one release as a :class:`DeprecatedAlias` that
  warns on stderr and does what the new one does.

Top-level imports stay light (argparse and the standard library) so that
``gradchain --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

DATADIR_HELP = "the node's data directory"
NODE_HELP = "the node's API URL, e.g. http://127.0.0.1:18740 (the first node of `make testnet`)"
KEYSTORE_HELP = "the encrypted wallet file"
UNLOCKS = " (password: --password-file, GRADCHAIN_PASSWORD, or asked on the terminal)"
PASSWORD_FILE_HELP = "read the wallet password from the first line of FILE (mode 0600) instead of $GRADCHAIN_PASSWORD"
JSON_HELP = "print the result as JSON on stdout (remarks go to stderr)"


def add_datadir(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """``--datadir DIR``: required everywhere; ``purpose`` adds what this command does with it."""
    parser.add_argument("--datadir", required=True, type=Path, metavar="DIR",
                        help=DATADIR_HELP + (f" ({purpose})" if purpose else ""))


def add_node(parser: argparse.ArgumentParser) -> None:
    """``--node URL``: the API a client command talks to; required everywhere."""
    parser.add_argument("--node", required=True, metavar="URL", help=NODE_HELP)


def add_keystore(parser: argparse.ArgumentParser, purpose: str, *, required: bool = True) -> None:
    """``--keystore FILE``: a wallet file; ``purpose`` says what this command uses it for."""
    parser.add_argument("--keystore", required=required, type=Path, metavar="FILE",
                        help=f"{KEYSTORE_HELP}; {purpose}")


def add_unlocked_keystore(parser: argparse.ArgumentParser, purpose: str, *, required: bool = True) -> None:
    """``--keystore FILE`` that the command unlocks, with the ``--password-file FILE`` that can unlock it."""
    add_keystore(parser, purpose + UNLOCKS, required=required)
    add_password_file(parser)


def add_password_file(parser: argparse.ArgumentParser, help_text: str = PASSWORD_FILE_HELP) -> None:
    """``--password-file FILE``: the password for scripts and services, never on the command line."""
    parser.add_argument("--password-file", type=Path, default=None, metavar="FILE", help=help_text)


def add_task(parser: argparse.ArgumentParser) -> None:
    """``--task TASK_ID``: which of the chain's tasks a client command means; optional everywhere."""
    parser.add_argument("--task", default=None, metavar="TASK_ID",
                        help="a task id, a unique prefix of one, or a task's name (`gradchain task list`; "
                             "default: the chain's first task)")


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: a flag, never a file name."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def add_out(parser: argparse.ArgumentParser, what: str, *, required: bool = False,
            flag: str = "--out") -> None:
    """``--out FILE`` (or ``--json-out FILE``): where the command writes ``what``."""
    parser.add_argument(flag, required=required, type=Path, metavar="FILE", help=f"write {what} to FILE")


class DeprecatedAlias(argparse.Action):
    """An old spelling kept for one release: warns on stderr, then stores into the new option's dest.

    ``parser.add_argument("--old", action=DeprecatedAlias, dest="new", new="--new")``
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        warn_deprecated(f"{option_string} {values}" if values is not None else str(option_string),
                        f"{self.new} {values}" if values is not None else self.new)
        setattr(namespace, self.dest, values)


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling works this release, and what to write instead."""
    print(f"warning: `{old}` is deprecated and goes away in the next release; write `{new}`",
          file=sys.stderr)


def print_json(payload: Any) -> None:
    """The ``--json`` answer: one JSON document on stdout."""
    print(json.dumps(payload), flush=True)


def remark(text: str, args: argparse.Namespace | None = None) -> None:
    """A human remark: stdout normally, stderr under ``--json`` so stdout stays machine-readable."""
    stream = sys.stderr if args is not None and getattr(args, "json", False) else sys.stdout
    print(text, file=stream, flush=True)


def interactive(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal: progress is shown only then."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Progress lines for long work: on stderr when it is a terminal, nothing in a pipe.

    ``enabled`` overrides the terminal test (tests pass True to see the lines).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = interactive() if enabled is None else enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


def unlock_keystore(path: Path, password_file: Path | None = None) -> Any:
    """The key pair in ``path``, unlocked with ``password_file``, GRADCHAIN_PASSWORD or a terminal prompt.

    Every failure is a CliError that says what to check.
    """
    from node.cli.errors import CliError
    from node.keystore_file import KeystoreFileError, read_keystore, read_password
    from wallet import KeystoreError
    from wallet.keystore import KeystoreAuthError

    try:
        return read_keystore(path, read_password(confirm=False, file=password_file))
    except KeystoreFileError as exc:
        raise CliError(str(exc)) from None
    except KeystoreAuthError:
        raise CliError(f"{path}: wrong password or a modified file; check GRADCHAIN_PASSWORD "
                       "(or --password-file, or what you typed) and try again") from None
    except KeystoreError as exc:
        raise CliError(f"{path} is not a usable keystore ({exc}); pass a file `gradchain wallet new` "
                       "wrote") from None



# Old spellings that took a value where the convention now has a flag: (noun, old) -> new.
# ``gradchain sim --json FILE`` wrote a file; ``--json`` is a flag now and the file is ``--json-out``.
LEGACY_VALUE_OPTIONS: dict[tuple[str, str], str] = {("sim", "--json"): "--json-out"}


def rewrite_legacy(argv: Sequence[str]) -> list[str]:
    """``argv`` with each old value-taking spelling turned into the new one, warning once for each.

    ``--json FILE`` (a value follows that is not an option) becomes
    ``--json-out FILE``; ``--json`` alone, or followed by another option,
    stays the flag. Only the nouns listed in :data:`LEGACY_VALUE_OPTIONS`
    are touched, and they take no positional arguments, so a value after
    ``--json`` can mean nothing else.
    """
    out = list(argv)
    noun = next((token for token in out if not token.startswith("-")), None)
    for index, token in enumerate(out):
        name, eq, value = token.partition("=")
        new = LEGACY_VALUE_OPTIONS.get((str(noun), name))
        if new is None:
            continue
        if eq:
            warn_deprecated(f"{name} {value}", f"{new} {value}")
            out[index] = f"{new}={value}"
        elif index + 1 < len(out) and not out[index + 1].startswith("-"):
            warn_deprecated(f"{name} {out[index + 1]}", f"{new} {out[index + 1]}")
            out[index] = new
    return out
