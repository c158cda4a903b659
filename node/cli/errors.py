"""The error a command raises to stop with a one-sentence message, and the mappings into it."""

from __future__ import annotations

from typing import Any

HTTP_SERVER_ERROR = 500  # 5xx: the node failed, not the request


class CliError(Exception):
    """Printed as ``error: <message>``; the message says what to do next."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def api_failure(exc: Any, action: str) -> CliError:
    """A :class:`node.client.ApiError` from ``action`` (e.g. "the update") as a CliError with a next step."""
    if exc.status == 0:  # unreachable: the client's message already asks whether the node runs
        return CliError(exc.message)
    if exc.status >= HTTP_SERVER_ERROR:
        return CliError(f"the node failed on {action} (HTTP {exc.status}: {exc.message}); check the node's log")
    return CliError(f"the node refused {action} (HTTP {exc.status}): {exc.message}; fix what it names and retry")
