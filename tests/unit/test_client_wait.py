"""`node.client.wait_for`: the polling helper scripts use while a node starts and works."""

from __future__ import annotations

import pytest

from node.client import ApiError, wait_for


def test_returns_the_first_truthy_value_treating_an_unreachable_node_as_not_ready() -> None:
    answers: list[object] = [ApiError(0, "connection refused"), None, 0, {"height": 7}, {"height": 8}]
    calls = 0

    def ready() -> object:
        nonlocal calls
        answer = answers[calls]
        calls += 1
        if isinstance(answer, ApiError):
            raise answer
        return answer

    assert wait_for("the node", ready, timeout_s=60, poll_s=0) == {"height": 7}
    assert calls == 4  # stopped at the first truthy answer


def test_gives_up_after_the_timeout_and_names_what_it_waited_for() -> None:
    calls = 0

    def never() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(TimeoutError, match="waiting for the late joiner to sync"):
        wait_for("the late joiner to sync", never, timeout_s=0, poll_s=0)
    assert calls == 1  # asked once before giving up


def test_other_errors_are_not_swallowed() -> None:
    def broken() -> None:
        raise KeyError("height")

    with pytest.raises(KeyError):
        wait_for("the node", broken, timeout_s=60, poll_s=0)
