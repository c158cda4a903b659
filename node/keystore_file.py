"""Keystore files on disk: the I/O half of ``wallet.keystore``.

The pure package seals and opens keystore documents; this module draws the
salt and nonce from ``os.urandom``, writes files so that the secret is never
readable by anyone but the owner (mode 0600 from the first byte, atomic
rename), reads the password from the environment or the terminal, and knows
where wallets live by default.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import stat
import sys
from pathlib import Path

from wallet import (
    DEFAULT_SCRYPT,
    NONCE_SIZE,
    SALT_SIZE,
    KeyPair,
    KeystoreError,
    KeystoreHeader,
    ScryptParams,
    decrypt_keystore,
    encrypt_keystore,
    read_keystore_header,
)
from wallet.keystore import MAX_KEYSTORE_BYTES

log = logging.getLogger(__name__)

PASSWORD_ENV = "GRADCHAIN_PASSWORD"
"""Password for scripts and tests; beware that other local users may see a
process's environment on some systems."""

HOME_ENV = "GRADCHAIN_HOME"
"""Root of gradchain's per-user files; wallets live in its ``wallets/``."""

DEFAULT_HOME = Path("~/.gradchain")
WALLETS_SUBDIR = "wallets"
KEYSTORE_SUFFIX = ".json"

FILE_MODE = 0o600
"""Owner read/write only: the file holds the (encrypted) seed."""

DIR_MODE = 0o700
"""The wallet directory lists addresses: keep it private too."""

_GROUP_OTHER_BITS = stat.S_IRWXG | stat.S_IRWXO
# Filesystems where hard links are unavailable (some FUSE, SMB, FAT mounts).
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


class KeystoreFileError(Exception):
    """A keystore file cannot be written or read; the message says what to do."""


def default_wallet_dir() -> Path:
    """``$GRADCHAIN_HOME/wallets``, or ``~/.gradchain/wallets`` when it is unset."""
    home = os.environ.get(HOME_ENV)
    root = Path(home) if home else DEFAULT_HOME.expanduser()
    return root / WALLETS_SUBDIR


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform lets a directory be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# A temp file is always new (O_EXCL) and never reached through a link (O_NOFOLLOW): a
# symlink planted where the temp file goes cannot redirect the secret, or truncate its target.
_NEW_PRIVATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def _write_private_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh 0600 temp file beside ``path``, fsynced."""
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{attempt}.tmp")
        try:
            fd = os.open(tmp, _NEW_PRIVATE_FILE, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
    raise KeystoreFileError(f"cannot create a temporary file beside {path}; clean up {path.parent}")


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Move ``tmp`` to ``path`` atomically; without ``overwrite`` never replace a file.

    ``os.link`` fails if the target exists, so there is no window between a
    check and the rename in which another process's file could be clobbered.
    Where hard links are unsupported, fall back to check-then-replace.
    """
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeystoreFileError(
            f"{path} already exists; choose another file name (nothing was overwritten)"
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        if path.exists():
            raise KeystoreFileError(
                f"{path} already exists; choose another file name (nothing was overwritten)"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by this user only (0600).

    The bytes go to a fresh temp file beside ``path`` (created exclusively,
    never through a symlink), which is then renamed over ``path``: a link
    planted at either name is replaced, never followed. For the node's
    cookie and other small secrets that are rewritten at every start.
    """
    tmp = _write_private_temp(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_keystore(
    path: str | os.PathLike[str],
    keypair: KeyPair,
    password: str,
    *,
    overwrite: bool = False,
    scrypt: ScryptParams = DEFAULT_SCRYPT,
) -> Path:
    """Encrypt ``keypair`` under ``password`` and write it to ``path`` with mode 0600.

    Parameters
    ----------
    path : path-like
        Target file; its directory must exist.
    keypair : KeyPair
        The key to store.
    password : str
        Non-empty password.
    overwrite : bool
        Replace an existing file. Off by default: losing a keystore loses
        the funds.
    scrypt : ScryptParams
        KDF cost; keep the default outside tests.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    KeystoreFileError
        If the file exists (and ``overwrite`` is false) or the directory is missing.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise KeystoreFileError(f"directory {target.parent} does not exist; create it first")
    if not overwrite and target.exists():
        raise KeystoreFileError(
            f"{target} already exists; choose another file name (nothing was overwritten)"
        )
    blob = encrypt_keystore(
        keypair,
        password,
        salt=os.urandom(SALT_SIZE),
        nonce=os.urandom(NONCE_SIZE),
        scrypt=scrypt,
    )
    tmp = _write_private_temp(target, blob)
    try:
        _publish(tmp, target, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return target


def _read_blob(path: str | os.PathLike[str]) -> bytes:
    source = Path(path)
    try:
        with source.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            blob = handle.read(MAX_KEYSTORE_BYTES + 1)
    except FileNotFoundError:
        raise KeystoreFileError(f"no keystore at {source}; check the path") from None
    except IsADirectoryError:
        raise KeystoreFileError(f"{source} is a directory, not a keystore file") from None
    except PermissionError:
        raise KeystoreFileError(f"cannot read {source}: permission denied") from None
    if os.name == "posix" and mode & _GROUP_OTHER_BITS:
        log.warning(
            "keystore %s is accessible by group or others (mode %o); run: chmod 600 %s",
            source,
            stat.S_IMODE(mode),
            source,
        )
    return blob


def read_keystore(path: str | os.PathLike[str], password: str) -> KeyPair:
    """Open the keystore at ``path`` with ``password``.

    Raises
    ------
    KeystoreFileError
        If the file is missing or unreadable.
    wallet.KeystoreError
        Wrong password, a modified file, or a malformed one.
    """
    return decrypt_keystore(_read_blob(path), password)


def keystore_header(path: str | os.PathLike[str]) -> KeystoreHeader:
    """The clear header of a keystore file: address, public key, KDF cost (no password).

    Raises
    ------
    KeystoreFileError
        If the file is missing or unreadable.
    wallet.KeystoreError
        If it is not a keystore this version reads.
    """
    return read_keystore_header(_read_blob(path))


def keystore_address(path: str | os.PathLike[str]) -> str:
    """The address a keystore file holds, read from its clear header (no password).

    Raises
    ------
    KeystoreFileError
        If the file is missing or unreadable.
    wallet.KeystoreError
        If it is not a keystore this version reads.
    """
    return keystore_header(path).address


MAX_PASSWORD_FILE_BYTES = 4096  # a password, not a document: refuse to read more


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The password in the first line of ``path`` (``--password-file``), trailing newline dropped.

    The file must be a regular file readable by its owner alone (like the
    keystore it opens), so a command line that names it reveals nothing.

    Raises
    ------
    KeystoreFileError
        Missing, not a regular file, readable by group or others, or empty.
    """
    source = Path(path)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeystoreFileError(f"no password file at {source}; check the path") from None
    except OSError as exc:
        raise KeystoreFileError(f"cannot read the password file {source}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise KeystoreFileError(f"{source} is not a regular file; --password-file needs a file")
    with os.fdopen(fd, "rb") as handle:
        if mode & _GROUP_OTHER_BITS:
            raise KeystoreFileError(
                f"{source} is readable by other users; run `chmod 600 {source}` and try again"
            )
        raw = handle.read(MAX_PASSWORD_FILE_BYTES + 1)
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise KeystoreFileError(f"{source} is larger than a password file can be; check the path")
    password = raw.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    if not password:
        raise KeystoreFileError(f"{source} holds no password on its first line")
    return password


def read_password(*, confirm: bool, file: str | os.PathLike[str] | None = None) -> str:
    """The wallet password: from ``file`` if given, else ``$GRADCHAIN_PASSWORD``, else the terminal.

    Parameters
    ----------
    confirm : bool
        Ask twice and require both to match (when creating a wallet, where a
        typo would lock the key away for good). Not applied to a file or the
        environment variable.
    file : path-like, optional
        A ``--password-file``: see :func:`read_password_file`.

    Raises
    ------
    KeystoreFileError
        No file, no terminal to ask on and no environment variable; an empty
        password; or the two entries differ.
    """
    if file is not None:
        return read_password_file(file)
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        if not from_env:
            raise KeystoreFileError(f"{PASSWORD_ENV} is set but empty; set it to the password")
        return from_env
    if not sys.stdin.isatty():
        raise KeystoreFileError(
            f"no terminal to ask for the password; pass --password-file FILE or set {PASSWORD_ENV}"
        )
    password = getpass.getpass("Wallet password: ")
    if not password:
        raise KeystoreFileError("the password must not be empty; run the command again")
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise KeystoreFileError("the two passwords differ; run the command again")
    return password


def ensure_private_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) with mode 0700 if missing; return it."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(parents=True, mode=DIR_MODE)
    return directory


__all__ = [
    "HOME_ENV",
    "PASSWORD_ENV",
    "KeystoreError",
    "KeystoreFileError",
    "default_wallet_dir",
    "ensure_private_dir",
    "keystore_address",
    "keystore_header",
    "read_keystore",
    "read_password",
    "read_password_file",
    "write_keystore",
]
