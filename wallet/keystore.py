"""The encrypted keystore: a key pair sealed under a password, as a small JSON document.

Layout (version 1)::

    {
      "version": 1,
      "address": "gc1q...",                 # in clear: `wallet list` needs no password
      "public_key": "<64 hex>",
      "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<32 hex>"},
      "cipher": {"name": "aes-256-gcm", "nonce": "<24 hex>"},
      "ciphertext": "<96 hex>"              # the 32-byte seed + the 16-byte GCM tag
    }

The key is ``scrypt(password, salt, n, r, p)`` (RFC 7914): memory-hard, so
each password guess costs an attacker ``128 * n * r`` bytes of memory (32 MiB
by default) as well as time. The seed is sealed with AES-256-GCM, and every
field except the ciphertext goes in as associated data (canonical JSON), so
changing the address, the public key, the KDF cost, the salt or the nonce
fails authentication exactly as a wrong password does: the clear header can
be shown without a password, but not altered without detection.

Pure: salt and nonce are passed in (the node draws them from ``os.urandom``)
and the document is bytes in, bytes out; reading and writing files lives in
``node/keystore_file.py``. The password itself is never stored.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from wallet.address import AddressError, address_of, decode_address
from wallet.keys import PUBLIC_KEY_SIZE, SEED_SIZE, KeyPair, keypair_from_seed

KEYSTORE_VERSION = 1
KDF_NAME = "scrypt"
CIPHER_NAME = "aes-256-gcm"

SALT_SIZE = 16
"""128-bit salt: no two keystores share a derived key, even with one password."""

NONCE_SIZE = 12
"""96-bit nonce, the size AES-GCM is specified for (NIST SP 800-38D)."""

KEY_SIZE = 32
"""AES-256 key."""

TAG_SIZE = 16
"""Full 128-bit GCM tag."""

MAX_KEYSTORE_BYTES = 64 * 1024
"""A version 1 keystore is under 1 KiB; refuse to parse anything far larger."""

SCRYPT_BLOCK_BYTES = 128
"""scrypt's memory use is ``128 * n * r`` bytes (RFC 7914)."""

MAX_SCRYPT_MEMORY_BYTES = 256 * 1024 * 1024
"""Refuse a file whose KDF would need more than 256 MiB: a hostile file must not
exhaust memory before the password is even checked."""

MAX_SCRYPT_P = 16
"""Parallelism beyond this only multiplies time on our 1-8 core machines."""


class KeystoreError(Exception):
    """A keystore cannot be opened; the message says why and what to do."""


class KeystoreFormatError(KeystoreError):
    """The document is malformed, or a version or algorithm this code does not read."""


class KeystoreAuthError(KeystoreError):
    """AES-GCM authentication failed: a wrong password or a modified file."""


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters (RFC 7914).

    Attributes
    ----------
    n : int
        CPU/memory cost, a power of two above 1.
    r : int
        Block size; memory is ``128 * n * r`` bytes.
    p : int
        Parallelism (independent mixes run one after another here).
    """

    n: int
    r: int
    p: int

    def __post_init__(self) -> None:
        for name in ("n", "r", "p"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"scrypt {name} must be a positive integer, got {value!r}")
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"scrypt n must be a power of two above 1, got {self.n}")
        if self.memory_bytes > MAX_SCRYPT_MEMORY_BYTES:
            raise ValueError(
                f"scrypt n={self.n}, r={self.r} needs {self.memory_bytes} bytes, "
                f"over the {MAX_SCRYPT_MEMORY_BYTES}-byte limit"
            )
        if self.p > MAX_SCRYPT_P:
            raise ValueError(f"scrypt p must be at most {MAX_SCRYPT_P}, got {self.p}")

    @property
    def memory_bytes(self) -> int:
        """Memory one derivation needs."""
        return SCRYPT_BLOCK_BYTES * self.n * self.r


DEFAULT_SCRYPT = ScryptParams(n=2**15, r=8, p=1)
"""32 MiB and about 0.1 s per derivation on one core of the 2-core build machine:
quick enough for a CLI prompt, while every offline guess costs an attacker
the same 32 MiB and 0.1 s."""


@dataclass(frozen=True)
class KeystoreHeader:
    """What a keystore says in clear: readable without the password, authenticated with it.

    Attributes
    ----------
    version : int
        Format version (1).
    address : str
        The bech32m address of the key.
    public : bytes
        The 32-byte public key.
    scrypt : ScryptParams
        KDF cost.
    salt : bytes
        KDF salt.
    nonce : bytes
        AES-GCM nonce.
    """

    version: int
    address: str
    public: bytes
    scrypt: ScryptParams
    salt: bytes
    nonce: bytes

    def to_json(self) -> dict[str, Any]:
        """The header fields as they appear in the document (without the ciphertext)."""
        return {
            "version": self.version,
            "address": self.address,
            "public_key": self.public.hex(),
            "kdf": {
                "name": KDF_NAME,
                "n": self.scrypt.n,
                "r": self.scrypt.r,
                "p": self.scrypt.p,
                "salt": self.salt.hex(),
            },
            "cipher": {"name": CIPHER_NAME, "nonce": self.nonce.hex()},
        }

    def associated_data(self) -> bytes:
        """Canonical JSON of the header: AES-GCM associated data binding every clear field."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode("ascii")


def _password_bytes(password: str) -> bytes:
    """NFKC-normalised UTF-8, so one password typed on two systems derives one key."""
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def _derive_key(password: str, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=params.n, r=params.r, p=params.p)
    return kdf.derive(_password_bytes(password))


def encrypt_keystore(
    keypair: KeyPair,
    password: str,
    *,
    salt: bytes,
    nonce: bytes,
    scrypt: ScryptParams = DEFAULT_SCRYPT,
) -> bytes:
    """Seal ``keypair`` under ``password`` as a version 1 keystore document.

    Parameters
    ----------
    keypair : KeyPair
        The key to store.
    password : str
        Non-empty; never stored.
    salt : bytes
        16 fresh random bytes (the caller draws them).
    nonce : bytes
        12 fresh random bytes; never reuse a (key, nonce) pair.
    scrypt : ScryptParams
        KDF cost; lower it only in tests.

    Returns
    -------
    bytes
        UTF-8 JSON, newline-terminated.

    Raises
    ------
    ValueError
        On an empty password or a salt or nonce of the wrong size.
    """
    if not password:
        raise ValueError("the password must not be empty")
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    header = KeystoreHeader(
        version=KEYSTORE_VERSION,
        address=address_of(keypair.public),
        public=keypair.public,
        scrypt=scrypt,
        salt=bytes(salt),
        nonce=bytes(nonce),
    )
    key = _derive_key(password, header.salt, scrypt)
    ciphertext = AESGCM(key).encrypt(header.nonce, keypair.seed, header.associated_data())
    document = {**header.to_json(), "ciphertext": ciphertext.hex()}
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def decrypt_keystore(blob: bytes, password: str) -> KeyPair:
    """Open a keystore document with ``password``.

    Raises
    ------
    KeystoreAuthError
        Wrong password, or any byte of the header or ciphertext was changed
        (AES-GCM cannot tell these apart, and neither does the message).
    KeystoreFormatError
        The document is malformed or of an unknown version.
    """
    header, ciphertext = _parse(blob)
    key = _derive_key(password, header.salt, header.scrypt)
    try:
        seed = AESGCM(key).decrypt(header.nonce, ciphertext, header.associated_data())
    except InvalidTag:
        raise KeystoreAuthError("wrong password or the file was modified") from None
    keypair = keypair_from_seed(seed)
    if keypair.public != header.public:  # only a writer bug could get here
        raise KeystoreFormatError("the sealed key does not match the public key in the file")
    return keypair


def read_keystore_header(blob: bytes) -> KeystoreHeader:
    """The clear header of a keystore document (no password needed, not authenticated).

    Raises
    ------
    KeystoreFormatError
        The document is malformed or of an unknown version.
    """
    header, _ = _parse(blob)
    return header


# --- strict parsing -------------------------------------------------------

_TOP_KEYS = {"version", "address", "public_key", "kdf", "cipher", "ciphertext"}
_KDF_KEYS = {"name", "n", "r", "p", "salt"}
_CIPHER_KEYS = {"name", "nonce"}


def _fail(what: str) -> KeystoreFormatError:
    return KeystoreFormatError(f"not a valid keystore: {what}")


def _object(value: object, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be a JSON object")
    if set(value) != keys:
        raise _fail(f"{where} must have exactly the fields {sorted(keys)}, has {sorted(value)}")
    return value


def _int(value: object, where: str) -> int:
    if type(value) is not int:
        raise _fail(f"{where} must be an integer")
    return value


def _hex(value: object, size: int, where: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(f"{where} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _fail(f"{where} is not hex") from None
    if len(raw) != size:
        raise _fail(f"{where} must be {size} bytes, is {len(raw)}")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated field would let two readers see two documents."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _fail(f"field {key!r} appears twice")
        result[key] = value
    return result


def _parse(blob: bytes) -> tuple[KeystoreHeader, bytes]:
    if len(blob) > MAX_KEYSTORE_BYTES:
        raise _fail(f"{len(blob)} bytes, a keystore is under {MAX_KEYSTORE_BYTES}")
    try:
        doc = json.loads(bytes(blob).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, or an integer past Python's digit limit;
        # RecursionError: arrays nested thousands deep (found by tests/fuzz).
        raise _fail(f"not UTF-8 JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise _fail("the document must be a JSON object")
    version = doc.get("version")
    if type(version) is not int:
        raise _fail("no integer version field")
    if version != KEYSTORE_VERSION:
        raise KeystoreFormatError(
            f"unsupported keystore version {version!r}; this gradchain reads version "
            f"{KEYSTORE_VERSION}: upgrade gradchain to open it"
        )
    doc = _object(doc, _TOP_KEYS, "the document")
    kdf = _object(doc["kdf"], _KDF_KEYS, "kdf")
    cipher = _object(doc["cipher"], _CIPHER_KEYS, "cipher")
    if kdf["name"] != KDF_NAME:
        raise _fail(f"unsupported kdf {kdf['name']!r}, expected {KDF_NAME!r}")
    if cipher["name"] != CIPHER_NAME:
        raise _fail(f"unsupported cipher {cipher['name']!r}, expected {CIPHER_NAME!r}")
    try:
        scrypt = ScryptParams(
            n=_int(kdf["n"], "kdf.n"), r=_int(kdf["r"], "kdf.r"), p=_int(kdf["p"], "kdf.p")
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    public = _hex(doc["public_key"], PUBLIC_KEY_SIZE, "public_key")
    address = doc["address"]
    if not isinstance(address, str):
        raise _fail("address must be a string")
    try:
        decode_address(address)
    except AddressError as exc:
        raise _fail(str(exc)) from None
    if address != address_of(public):
        raise _fail("the address does not belong to the public key")
    header = KeystoreHeader(
        version=version,
        address=address,
        public=public,
        scrypt=scrypt,
        salt=_hex(kdf["salt"], SALT_SIZE, "kdf.salt"),
        nonce=_hex(cipher["nonce"], NONCE_SIZE, "cipher.nonce"),
    )
    ciphertext = _hex(doc["ciphertext"], SEED_SIZE + TAG_SIZE, "ciphertext")
    return header, ciphertext
