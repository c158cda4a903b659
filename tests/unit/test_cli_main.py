"""The top-level CLI: nouns listed, a noun without a verb is a usage error."""

from __future__ import annotations

import argparse

import pytest

from node.cli.main import NOUNS, build_parser, main


def _has_verbs(noun: str) -> bool:
    nouns = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return any(isinstance(a, argparse._SubParsersAction) for a in nouns.choices[noun]._actions)


# Nouns that are commands of their own (``gradchain sim ...``, ``gradchain flower ...``) have no verbs.
NOUNS_WITH_VERBS = [n for n, _, _ in NOUNS if _has_verbs(n)]


def test_help_lists_every_noun(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for noun, _, _ in NOUNS:
        assert noun in out


@pytest.mark.parametrize("noun", NOUNS_WITH_VERBS)
def test_noun_without_verb_prints_its_verbs_and_fails(noun: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([noun]) == 2
    assert "<verb>" in capsys.readouterr().err
