"""Files a user hands to a command, read with errors in our words (never numpy's or Python's).

Each reader says what it expected ("a .npy of float32 with the task's 650
parameters") when the file is missing, is something else, or holds the
wrong thing; nothing is ever unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.cli.errors import CliError

NPY_MAGIC = b"\x93NUMPY"  # the first six bytes of every .npy file (numpy's format spec)
SNIFF_BYTES = 16  # enough of a file's head to say what it looks like


def _readable(path: Path, expected: str) -> None:
    if not path.exists():
        raise CliError(f"no file at {path}; check the path (expected {expected})")
    if path.is_dir():
        raise CliError(f"{path} is a directory; pass {expected}")
    if not os.access(path, os.R_OK):
        raise CliError(f"cannot read {path}: permission denied; fix its permissions or copy it")


def _looks_like(head: bytes) -> str:
    if not head:
        return "it is empty"
    if head.startswith(b"PK"):
        return "it looks like a zip or .npz archive"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return "it is not a .npy file"
    return f"it starts with text {text[:SNIFF_BYTES]!r}, like a CSV"


def load_npy(path: Path, expected: str) -> Any:
    """A numeric array from a .npy file; ``expected`` describes what it should hold."""
    import numpy as np

    _readable(path, expected)
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.startswith(NPY_MAGIC):
        raise CliError(f"{path} is not a .npy file ({_looks_like(head)}); expected {expected}, "
                       "written with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CliError(f"{path} holds Python objects, which gradchain never loads; expected "
                           f"{expected}") from None
        raise CliError(f"{path} is a damaged .npy file ({exc}); write it again with numpy.save") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}; write it again with numpy.save") from None
    if array.dtype.kind not in "fiub":
        raise CliError(f"{path} holds {array.dtype} values; expected {expected}")
    return array


def load_rows(path: Path, columns: int) -> Any:
    """A 2-D float64 array of rows with ``columns`` features, from a .csv or .npy file."""
    import numpy as np

    expected = f"rows of {columns} numbers (.csv, comma-separated, or .npy)"
    if path.suffix == ".npy":
        rows = np.asarray(load_npy(path, expected), dtype=np.float64)
    else:
        _readable(path, expected)
        try:
            rows = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise CliError(f"{path} is not a CSV of numbers ({exc}); expected {expected}, "
                           "no header row") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {path} as text ({exc}); expected {expected}") from None
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] != columns or rows.shape[0] == 0:
        raise CliError(f"{path} holds an array of shape {list(rows.shape)}; expected {expected}")
    if not np.isfinite(rows).all():
        raise CliError(f"{path} has NaN or infinite values; expected {expected}")
    return rows


def write_file(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(path)``; an OSError becomes a CliError that names the path and the fix."""
    if path.is_dir():
        raise CliError(f"{path} is a directory; pass a file name to write")
    if not path.parent.is_dir():
        raise CliError(f"directory {path.parent} does not exist; create it or choose another path")
    try:
        write(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}; pick a writable path") from None
