"""Keys, addresses, signing and the encrypted keystore.

Pure (DESIGN.md): nothing here opens a file, reads a clock or draws
randomness. Seeds, salts and nonces are passed in; reading and writing
keystore files lives in ``node/keystore_file.py``.
"""

from wallet.address import (
    ADDRESS_SIZE,
    HRP,
    AddressError,
    address_bytes,
    address_of,
    decode_address,
    encode_address,
)
from wallet.keys import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    KeyPair,
    keypair_from_seed,
    sign,
    verify,
)
from wallet.keystore import (
    DEFAULT_SCRYPT,
    NONCE_SIZE,
    SALT_SIZE,
    KeystoreAuthError,
    KeystoreError,
    KeystoreFormatError,
    KeystoreHeader,
    ScryptParams,
    decrypt_keystore,
    encrypt_keystore,
    read_keystore_header,
)

__all__ = [
    "ADDRESS_SIZE",
    "DEFAULT_SCRYPT",
    "HRP",
    "NONCE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SALT_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "AddressError",
    "KeyPair",
    "KeystoreAuthError",
    "KeystoreError",
    "KeystoreFormatError",
    "KeystoreHeader",
    "ScryptParams",
    "address_bytes",
    "address_of",
    "decode_address",
    "decrypt_keystore",
    "encode_address",
    "encrypt_keystore",
    "keypair_from_seed",
    "read_keystore_header",
    "sign",
    "verify",
]
