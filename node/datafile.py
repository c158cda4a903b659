"""This node's own training data: the user's file, kept encrypted in the datadir, followed as it grows.

``gradchain node run --train --data FILE`` trains on FILE (CSV or ``.npz``,
:mod:`ml.datafile`), checked against the task before the node starts: a bad
file stops the start with the line and column at fault. The checked table is
sealed into ``DATADIR/data.bin`` with the shard encryption (AES-256-GCM under
a key derived from the node's wallet seed, :mod:`ml.shards`), so the node
keeps training on it even if FILE is later removed; the file never leaves
the node, only signed updates do.

Following the file (periodic iteration without a restart). Before each
training step the trainer calls :meth:`LocalData.refresh`:

- One ``stat`` decides whether anything happened: the file's inode, size and
  modification time are compared with the last read. Unchanged: done (this
  is all a step pays while the file is still).
- Grown with the old bytes intact (the SHA-256 of the part already read
  still matches): only the new lines are parsed and checked, then appended.
  Lines are taken up to the last newline; a final line without one is used
  provisionally (a writer may be half-way through it) and re-read next time.
- Anything else (rewritten, truncated, an ``.npz``, a price series whose
  windows span old and new rows): the whole file is parsed again.
- New rows that break the schema are refused with the line and column, the
  rows before them are kept, and training goes on with the data it had; the
  same line is checked again at the next change, so fixing it in place is
  enough.
- Every accepted change re-seals ``data.bin`` (fresh nonce, atomic rename).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.datafile import DataFileError, parse_data, parse_header, parse_rows
from ml.shards import NONCE_BYTES, ShardError, decrypt_shard, derive_shard_key, encrypt_shard
from ml.tasks import TaskSpec
from node.keystore_file import write_private_file

log = logging.getLogger("gradchain.data")

SEALED_FILE = "data.bin"
KEY_SALT = b"gradchain/own-data"  # a key of its own, apart from the built-in shard's
# The node holds the whole table in memory (twice while re-sealing): a file past
# this is not something a participant's node should train on in numpy.
MAX_DATA_FILE_BYTES = 256 * 1024 * 1024


class DataSourceError(ValueError):
    """The data file cannot be used: missing, too large, or not fitting the task."""


@dataclass(frozen=True)
class _Stamp:
    """What one ``stat`` says about the file: enough to notice any write."""

    inode: int
    size: int
    mtime_ns: int


def _stamp(path: pathlib.Path) -> _Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)


class LocalData:
    """The rows this node trains on, from its own file; see the module docstring.

    ``X`` and ``y`` are replaced (never modified in place) when the file
    changes, so a reader holding the old arrays keeps a consistent pair.
    """

    def __init__(self, source: pathlib.Path, datadir: pathlib.Path, secret: bytes, spec: TaskSpec) -> None:
        self.source = source
        self.sealed = datadir / SEALED_FILE
        self.spec = spec
        self._key = derive_shard_key(secret, salt=KEY_SALT)
        self._npz = source.suffix.lower() == ".npz"
        self._incremental = not self._npz and spec.window == 0
        self.X: NDArray[np.float32] = np.empty((0, spec.input_dim), dtype=np.float32)
        self.y: NDArray[np.generic] = np.empty(0)
        self._stamp: _Stamp | None = None
        # What has been read for good: the byte offset after the last complete line
        # taken, the SHA-256 of the bytes before it, its line count, and its rows.
        self._offset = 0
        self._digest = hashlib.sha256(b"").digest()
        self._lines = 0
        self._names: tuple[str, ...] = ()
        self._committed: tuple[NDArray[np.float32], NDArray[np.generic]] | None = None
        self.last_error: str | None = None

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    # -- start -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, source: pathlib.Path, datadir: pathlib.Path, secret: bytes, spec: TaskSpec) -> LocalData:
        """Read and check ``source`` (or, if it is gone, the sealed copy) and seal it.

        Raises
        ------
        DataSourceError
            With the file's name and, for a schema problem, the line and column.
        """
        data = cls(source, datadir, secret, spec)
        if _stamp(source) is None:
            if not data.sealed.exists():
                raise DataSourceError(f"data file {source} does not exist")
            data._load_sealed()
            log.warning("%s is gone; training on the sealed copy %s (%d rows)", source, data.sealed, data.rows)
            return data
        try:
            data._read_all()
        except DataFileError as exc:
            raise DataSourceError(f"{source}: {exc}") from None
        if data.rows == 0:
            raise DataSourceError(f"{source} holds no complete example yet")
        data._seal()
        return data

    def _load_sealed(self) -> None:
        try:
            X, y = decrypt_shard(self.sealed.read_bytes(), self._key)
        except ShardError as exc:
            raise DataSourceError(f"{self.sealed}: {exc}") from None
        if X.ndim != 2 or X.shape[1] != self.spec.input_dim:
            raise DataSourceError(
                f"{self.sealed} holds rows of {X.shape[1]} features; task {self.spec.name!r} takes "
                f"{self.spec.input_dim}: give --data FILE again"
            )
        self.X, self.y = np.asarray(X, dtype=np.float32), np.asarray(y)

    # -- follow ----------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Pick up what changed in the file since the last call; returns how many rows were added.

        Never raises for the file's content: a problem is logged, kept in
        :attr:`last_error`, and the data stays as it was. (A negative count
        means the file was rewritten with fewer rows.)
        """
        stamp = _stamp(self.source)
        if stamp is None or stamp == self._stamp:
            return 0
        before = self.rows
        try:
            if not self._append(stamp):
                self._read_all()
            self.last_error = None
        except (DataFileError, DataSourceError, OSError) as exc:
            self._stamp = stamp  # the same bytes fail the same way: wait for the next write
            message = f"{self.source}: {exc}; training goes on with the {self.rows} rows read up to there"
            if message != self.last_error:
                log.error("%s", message)
            self.last_error = message
        if self.rows != before:
            self._seal()
        return self.rows - before

    def _read_bytes(self) -> tuple[bytes, _Stamp | None]:
        stamp = _stamp(self.source)
        if stamp is not None and stamp.size > MAX_DATA_FILE_BYTES:
            raise DataSourceError(
                f"the file is {stamp.size} bytes; a node trains on at most {MAX_DATA_FILE_BYTES} "
                "(sample it down or split it among several participants)"
            )
        return self.source.read_bytes(), stamp

    def _read_all(self) -> None:
        """Parse the whole file (it is new, rewritten, an npz, or a price series)."""
        blob, stamp = self._read_bytes()
        if not self._incremental:
            table = parse_data(blob, self.spec, npz=self._npz)
            self._set(table.X, table.y)
            self._stamp = stamp
            return
        self._committed = None
        lines = blob.split(b"\n")
        start = next((i for i, line in enumerate(lines) if line.strip()), None)
        if start is None or start == len(lines) - 1:  # no header line ended by a newline
            raise DataFileError("the file needs a header row, then one example per line")
        self._names = parse_header(_decode(lines[start]), self.spec, lineno=start + 1)
        header_end = sum(len(line) + 1 for line in lines[: start + 1])
        self._commit_prefix(blob, header_end, start + 1)
        self._committed = (np.empty((0, self.spec.input_dim), np.float32), _empty_labels(self.spec))
        self._take_new(blob)
        self._stamp = stamp

    def _append(self, stamp: _Stamp) -> bool:
        """Parse only the lines after the part already read; False if that part changed."""
        if not self._incremental or self._committed is None or stamp.size < self._offset:
            return False
        blob, stamp_now = self._read_bytes()
        if len(blob) < self._offset or hashlib.sha256(blob[: self._offset]).digest() != self._digest:
            return False
        self._take_new(blob)
        self._stamp = stamp_now
        return True

    def _take_new(self, blob: bytes) -> None:
        """Check and keep the complete lines after the committed offset, then the provisional tail.

        Raises :class:`DataFileError` for the first bad complete line, after
        keeping the good lines before it.
        """
        assert self._committed is not None
        tail = blob[self._offset :]
        cut = tail.rfind(b"\n") + 1  # complete lines end at the last newline
        complete = _decode(tail[:cut]).split("\n")[:-1] if cut else []
        good, error = self._parse_prefix(complete)
        if good:
            X_new, y_new = _rows_table(self.spec, *parse_rows(complete[:good], self._names, self.spec,
                                                              first_line=self._lines + 1))
            self._committed = (np.concatenate([self._committed[0], X_new]),
                               np.concatenate([self._committed[1], y_new]))
            consumed = len("\n".join(complete[:good]).encode()) + 1
            self._commit_prefix(blob, self._offset + consumed, self._lines + good)
        X, y = self._committed
        if error is None and cut < len(tail):
            try:  # an unterminated last line: use it if it parses, re-read it next time
                X_t, y_t = _rows_table(self.spec, *parse_rows([_decode(tail[cut:])], self._names, self.spec,
                                                              first_line=self._lines + 1))
                X, y = np.concatenate([X, X_t]), np.concatenate([y, y_t])
            except DataFileError:
                pass
        self._set(X, y)
        if error is not None:
            raise error

    def _parse_prefix(self, lines: list[str]) -> tuple[int, DataFileError | None]:
        """How many of ``lines`` parse before the first bad one, and that line's error."""
        try:
            parse_rows(lines, self._names, self.spec, first_line=self._lines + 1)
        except DataFileError as exc:
            assert exc.line is not None
            return exc.line - self._lines - 1, exc
        return len(lines), None

    def _commit_prefix(self, blob: bytes, offset: int, lines: int) -> None:
        self._offset = offset
        self._digest = hashlib.sha256(blob[:offset]).digest()
        self._lines = lines

    def _set(self, X: NDArray[np.floating], y: NDArray[np.generic]) -> None:
        self.X, self.y = np.asarray(X, dtype=np.float32), y

    def _seal(self) -> None:
        """Write the current rows to ``data.bin``, encrypted, replacing the old copy atomically (0600)."""
        write_private_file(self.sealed, encrypt_shard(self.X, self.y, self._key, os.urandom(NONCE_BYTES)))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # a byte order mark, if any, starts the first line
    except UnicodeDecodeError as exc:
        raise DataFileError(f"the CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _empty_labels(spec: TaskSpec) -> NDArray[np.generic]:
    return np.empty(0, dtype=np.int64 if spec.head == "classify" else np.float32)


def _rows_table(
    spec: TaskSpec, X: NDArray[np.float64], labels: NDArray[np.float64]
) -> tuple[NDArray[np.float32], NDArray[np.generic]]:
    y = labels.astype(np.int64) if spec.head == "classify" else labels.astype(np.float32)
    return X.astype(np.float32), y
