"""The encrypted keystore: round trips, wrong passwords and every kind of tampering
fail loudly, and files are private (0600), atomic and never overwritten by accident."""

from __future__ import annotations

import getpass
import io
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import keystore_file
from node.keystore_file import (
    KeystoreFileError,
    default_wallet_dir,
    keystore_address,
    read_keystore,
    read_password,
    write_keystore,
)
from wallet import (
    DEFAULT_SCRYPT,
    KeystoreAuthError,
    KeystoreError,
    KeystoreFormatError,
    ScryptParams,
    address_of,
    decrypt_keystore,
    encrypt_keystore,
    keypair_from_seed,
    read_keystore_header,
)

FAST = ScryptParams(n=2**10, r=8, p=1)  # ~4 ms: the format, not the cost, is under test
SEED = bytes(range(32))
OTHER_SEED = bytes(range(100, 132))
SALT = bytes(range(16))
NONCE = bytes(range(12))
PASSWORD = "correct horse battery staple"
KEYPAIR = keypair_from_seed(SEED)

# Golden vector: a version 1 keystore (seed 00..1f, password above, n=2**10).
# Every future gradchain must still open it. The ciphertext is the sealed
# 32-byte seed followed by the 16-byte GCM tag.
GOLDEN_V1 = """{
  "version": 1,
  "address": "gc1qy32apzrznvjykmxzl3g70l8ew2p048hufhq07y",
  "public_key": "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
  "kdf": {"name": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": "000102030405060708090a0b0c0d0e0f"},
  "cipher": {"name": "aes-256-gcm", "nonce": "000102030405060708090a0b"},
  "ciphertext": "2584e31cc92267c6644018e35f817ffaf9b9b1a558553b667a77dc4fa7ad6fcbd4757716cc0312a1d5273fca5bc017df"
}"""


def sealed(**overrides: Any) -> bytes:
    params: dict[str, Any] = {"salt": SALT, "nonce": NONCE, "scrypt": FAST}
    params.update(overrides)
    return encrypt_keystore(KEYPAIR, PASSWORD, **params)


def edited(blob: bytes, edit: Any) -> bytes:
    doc = json.loads(blob)
    edit(doc)
    return json.dumps(doc).encode()


# --- wallet.keystore (pure) -------------------------------------------------


def test_roundtrip() -> None:
    opened = decrypt_keystore(sealed(), PASSWORD)
    assert opened == KEYPAIR and opened.seed == SEED


def test_golden_v1_document_opens() -> None:
    assert decrypt_keystore(GOLDEN_V1.encode(), PASSWORD).seed == SEED


def test_sealing_is_deterministic_given_salt_and_nonce() -> None:
    assert json.loads(sealed()) == json.loads(GOLDEN_V1)


def test_header_is_readable_without_password() -> None:
    header = read_keystore_header(sealed())
    assert header.address == address_of(KEYPAIR.public)
    assert header.public == KEYPAIR.public
    assert header.scrypt == FAST and header.salt == SALT and header.nonce == NONCE


def test_default_cost_is_n_2_15_r_8_p_1() -> None:
    assert DEFAULT_SCRYPT == ScryptParams(n=2**15, r=8, p=1)
    blob = encrypt_keystore(KEYPAIR, PASSWORD, salt=SALT, nonce=NONCE)
    assert json.loads(blob)["kdf"] == {
        "name": "scrypt",
        "n": 32768,
        "r": 8,
        "p": 1,
        "salt": SALT.hex(),
    }


def test_password_is_not_stored() -> None:
    blob = sealed()
    assert PASSWORD.encode() not in blob
    assert SEED.hex().encode() not in blob and SEED not in blob


def test_fresh_salt_and_nonce_change_everything() -> None:
    a = json.loads(sealed())
    b = json.loads(sealed(salt=bytes(16), nonce=bytes(12)))
    assert a["ciphertext"] != b["ciphertext"]


def test_wrong_password_is_an_authentication_failure() -> None:
    with pytest.raises(KeystoreAuthError, match="wrong password or the file was modified"):
        decrypt_keystore(sealed(), PASSWORD + "!")


def test_password_is_unicode_normalised() -> None:
    """NFKC: a ligature typed on one system equals the two letters typed on another."""
    blob = encrypt_keystore(KEYPAIR, "ﬁsh", salt=SALT, nonce=NONCE, scrypt=FAST)
    assert decrypt_keystore(blob, "fish") == KEYPAIR


@pytest.mark.parametrize("index", [0, 5, 31, 32, 47])  # seed bytes and tag bytes
def test_flipped_ciphertext_byte_fails(index: int) -> None:
    def flip(doc: dict[str, Any]) -> None:
        raw = bytearray.fromhex(doc["ciphertext"])
        raw[index] ^= 0x01
        doc["ciphertext"] = raw.hex()

    with pytest.raises(KeystoreAuthError, match="wrong password or the file was modified"):
        decrypt_keystore(edited(sealed(), flip), PASSWORD)


def _flip_hex(value: str) -> str:
    raw = bytearray.fromhex(value)
    raw[0] ^= 0x01
    return raw.hex()


HEADER_EDITS = {
    "salt": lambda d: d["kdf"].update(salt=_flip_hex(d["kdf"]["salt"])),
    "nonce": lambda d: d["cipher"].update(nonce=_flip_hex(d["cipher"]["nonce"])),
    "n": lambda d: d["kdf"].update(n=2**11),
    "r": lambda d: d["kdf"].update(r=4),
    "p": lambda d: d["kdf"].update(p=2),
}


@pytest.mark.parametrize("field", sorted(HEADER_EDITS))
def test_edited_header_field_fails_authentication(field: str) -> None:
    with pytest.raises(KeystoreAuthError, match="wrong password or the file was modified"):
        decrypt_keystore(edited(sealed(), HEADER_EDITS[field]), PASSWORD)


def test_swapped_identity_fails_authentication() -> None:
    """Someone puts their own address and key in the clear header to redirect payments."""
    other = keypair_from_seed(OTHER_SEED)

    def swap(doc: dict[str, Any]) -> None:
        doc["address"] = address_of(other.public)
        doc["public_key"] = other.public.hex()

    blob = edited(sealed(), swap)
    assert read_keystore_header(blob).address == address_of(other.public)  # unauthenticated view
    with pytest.raises(KeystoreAuthError):
        decrypt_keystore(blob, PASSWORD)


def test_address_that_does_not_match_the_key_is_malformed() -> None:
    other = keypair_from_seed(OTHER_SEED)
    blob = edited(sealed(), lambda d: d.update(address=address_of(other.public)))
    with pytest.raises(KeystoreFormatError, match="does not belong"):
        read_keystore_header(blob)


def test_unknown_version_says_so() -> None:
    blob = edited(sealed(), lambda d: d.update(version=2))
    with pytest.raises(KeystoreFormatError, match="unsupported keystore version 2"):
        decrypt_keystore(blob, PASSWORD)


MALFORMED = {
    "not json": b"{not json",
    "not utf-8": b"\xff\xfe",
    "array": b"[1, 2]",
    "no version": b"{}",
    "bool version": None,
    "missing field": None,
    "extra field": None,
    "bad hex": None,
    "short salt": None,
    "bool n": None,
    "n not power of two": None,
    "n too costly": None,
    "unknown kdf": None,
    "unknown cipher": None,
    "short ciphertext": None,
    "huge": b" " * (65 * 1024),
}
EDITS = {
    "bool version": lambda d: d.update(version=True),
    "missing field": lambda d: d.pop("public_key"),
    "extra field": lambda d: d.update(password="oops"),
    "bad hex": lambda d: d.update(ciphertext="zz" * 48),
    "short salt": lambda d: d["kdf"].update(salt="00" * 8),
    "bool n": lambda d: d["kdf"].update(n=True),
    "n not power of two": lambda d: d["kdf"].update(n=1000),
    "n too costly": lambda d: d["kdf"].update(n=2**30),
    "unknown kdf": lambda d: d["kdf"].update(name="pbkdf2"),
    "unknown cipher": lambda d: d["cipher"].update(name="chacha20-poly1305"),
    "short ciphertext": lambda d: d.update(ciphertext="00" * 47),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_documents_are_format_errors(case: str) -> None:
    blob = MALFORMED[case]
    if blob is None:
        blob = edited(sealed(), EDITS[case])
    with pytest.raises(KeystoreFormatError):
        decrypt_keystore(blob, PASSWORD)
    with pytest.raises(KeystoreFormatError):
        read_keystore_header(blob)


def test_duplicate_field_is_malformed() -> None:
    """Two readers must never disagree on which of two values counts."""
    blob = sealed().replace(b'"version": 1,', b'"version": 1, "version": 1,')
    with pytest.raises(KeystoreFormatError, match="twice"):
        read_keystore_header(blob)


def test_both_failures_share_one_base_class() -> None:
    assert issubclass(KeystoreAuthError, KeystoreError)
    assert issubclass(KeystoreFormatError, KeystoreError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"salt": bytes(15)}, "salt"),
        ({"nonce": bytes(16)}, "nonce"),
    ],
)
def test_encrypt_checks_its_random_inputs(kwargs: dict[str, bytes], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sealed(**kwargs)


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        encrypt_keystore(KEYPAIR, "", salt=SALT, nonce=NONCE, scrypt=FAST)


@pytest.mark.parametrize(
    ("n", "r", "p"), [(1, 8, 1), (3, 8, 1), (2**20, 8, 1), (16, 0, 1), (16, 8, 99)]
)
def test_scrypt_params_are_checked(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError):
        ScryptParams(n=n, r=r, p=p)


# --- node.keystore_file (I/O) ---------------------------------------------


@pytest.fixture
def zero_umask() -> Iterator[None]:
    """Umask 0: the file mode must come from os.open's 0600, not from the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_written_file_is_0600_even_with_umask_0(tmp_path: Path, zero_umask: None) -> None:
    path = write_keystore(tmp_path / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_then_read(tmp_path: Path) -> None:
    path = write_keystore(tmp_path / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)
    assert read_keystore(path, PASSWORD) == KEYPAIR
    assert keystore_address(path) == address_of(KEYPAIR.public)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]  # no temp file left


def test_random_salt_and_nonce_per_write(tmp_path: Path) -> None:
    a = write_keystore(tmp_path / "a.json", KEYPAIR, PASSWORD, scrypt=FAST)
    b = write_keystore(tmp_path / "b.json", KEYPAIR, PASSWORD, scrypt=FAST)
    ha, hb = read_keystore_header(a.read_bytes()), read_keystore_header(b.read_bytes())
    assert ha.salt != hb.salt and ha.nonce != hb.nonce


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = write_keystore(tmp_path / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)
    before = path.read_bytes()
    other = keypair_from_seed(OTHER_SEED)
    with pytest.raises(KeystoreFileError, match="already exists"):
        write_keystore(path, other, PASSWORD, scrypt=FAST)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]


def test_lost_race_does_not_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that appears between the early check and the rename survives."""
    target = tmp_path / "w.json"
    real_write = keystore_file._write_private_temp

    def write_then_race(path: Path, data: bytes) -> Path:
        tmp = real_write(path, data)
        target.write_bytes(b"someone else's")
        return tmp

    monkeypatch.setattr(keystore_file, "_write_private_temp", write_then_race)
    with pytest.raises(KeystoreFileError, match="already exists"):
        write_keystore(target, KEYPAIR, PASSWORD, scrypt=FAST)
    assert target.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]


def test_overwrite_when_asked(tmp_path: Path) -> None:
    path = write_keystore(tmp_path / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)
    other = keypair_from_seed(OTHER_SEED)
    write_keystore(path, other, PASSWORD, overwrite=True, scrypt=FAST)
    assert read_keystore(path, PASSWORD) == other


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeystoreFileError, match="does not exist"):
        write_keystore(tmp_path / "nope" / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeystoreFileError, match="no keystore at"):
        read_keystore(tmp_path / "absent.json", PASSWORD)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_keystore(tmp_path / "w.json", KEYPAIR, PASSWORD, scrypt=FAST)
    with caplog.at_level(logging.WARNING, logger="node.keystore_file"):
        keystore_address(path)
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="node.keystore_file"):
        assert read_keystore(path, PASSWORD) == KEYPAIR
    assert any("chmod 600" in r.getMessage() for r in caplog.records)


def test_default_wallet_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADCHAIN_HOME", str(tmp_path / "gc"))
    assert default_wallet_dir() == tmp_path / "gc" / "wallets"
    monkeypatch.delenv("GRADCHAIN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_wallet_dir() == tmp_path / ".gradchain" / "wallets"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "from env")
    assert read_password(confirm=True) == "from env"


def test_empty_environment_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "")
    with pytest.raises(KeystoreFileError, match="empty"):
        read_password(confirm=False)


def test_no_tty_and_no_env_says_set_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADCHAIN_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("typed\n"))
    with pytest.raises(KeystoreFileError, match="set GRADCHAIN_PASSWORD"):
        read_password(confirm=False)


def _prompts(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    monkeypatch.delenv("GRADCHAIN_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", FakeTty())
    asked: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        asked.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return asked


def test_tty_prompt_with_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _prompts(monkeypatch, ["pw", "pw"])
    assert read_password(confirm=True) == "pw"
    assert len(asked) == 2


def test_tty_prompt_without_confirmation_asks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _prompts(monkeypatch, ["pw"])
    assert read_password(confirm=False) == "pw"
    assert len(asked) == 1


def test_tty_confirmation_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    _prompts(monkeypatch, ["pw", "wp"])
    with pytest.raises(KeystoreFileError, match="differ"):
        read_password(confirm=True)


def test_tty_empty_password(monkeypatch: pytest.MonkeyPatch) -> None:
    _prompts(monkeypatch, [""])
    with pytest.raises(KeystoreFileError, match="empty"):
        read_password(confirm=False)
