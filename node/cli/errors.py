"""The error a command raises to stop with a one-sentence message."""

from __future__ import annotations


class CliError(Exception):
    """Printed as ``error: <message>``; the message says what to do next."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
