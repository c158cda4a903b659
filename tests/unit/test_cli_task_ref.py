"""`--task REF` in the client commands: a name or id prefix anyone can copy never picks a task by guess."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from node.cli.errors import CliError
from node.cli.task import resolve_task

WINE_ID = "3f2a" + "1" * 60
DIGITS_ID = "9c00" + "2" * 60


@dataclass
class FakeNode:
    listed: list[dict[str, Any]]

    def tasks(self) -> list[dict[str, Any]]:
        return self.listed


def chain(*extra: dict[str, Any]) -> FakeNode:
    return FakeNode([{"id": DIGITS_ID, "name": "digits"}, {"id": WINE_ID, "name": "wine"}, *extra])


def test_an_id_a_prefix_or_a_unique_name_names_the_task() -> None:
    assert resolve_task(chain(), None)["id"] == DIGITS_ID  # the chain's first
    assert resolve_task(chain(), WINE_ID)["id"] == WINE_ID
    assert resolve_task(chain(), WINE_ID[:6].upper())["id"] == WINE_ID
    assert resolve_task(chain(), "wine")["id"] == WINE_ID


def test_a_task_deployed_under_another_tasks_id_prefix_is_refused_not_picked() -> None:
    """The attacker deploys a task named like the prefix a user types for wine's id: before, the
    name won and the user's bond and updates went to the attacker's task."""
    squat = {"id": "ab" * 32, "name": WINE_ID[:6]}
    with pytest.raises(CliError, match="fits 2 tasks") as refused:
        resolve_task(chain(squat), WINE_ID[:6])
    assert WINE_ID[:16] in str(refused.value) and squat["id"][:16] in str(refused.value)
    assert resolve_task(chain(squat), WINE_ID)["id"] == WINE_ID  # the whole id still works


def test_a_second_task_with_the_same_name_makes_the_name_ambiguous() -> None:
    copy = {"id": "cd" * 32, "name": "wine"}
    with pytest.raises(CliError, match="give more of the id"):
        resolve_task(chain(copy), "wine")
    assert resolve_task(chain(copy), "cdcd")["id"] == copy["id"]


def test_an_unknown_reference_lists_the_chains_tasks() -> None:
    with pytest.raises(CliError, match="no-such-task is not a task of this chain") as refused:
        resolve_task(chain(), "no-such-task")
    assert WINE_ID in str(refused.value) and DIGITS_ID in str(refused.value)
    with pytest.raises(CliError, match="not a task"):
        resolve_task(chain(), "3f2")  # too short to be a prefix
