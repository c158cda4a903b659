"""Bech32m strings (BIP-350): a checksummed base-32 text form for short byte strings.

Written from the specifications: BIP-173 defines the character set, the
human-readable part (HRP), the separator and the BCH checksum; BIP-350
changes the constant the checksum is XORed with (``0x2bc830a3`` instead of
1), which fixes bech32's weakness to inserted or deleted ``q`` characters
before a final ``p``.

The checksum is a BCH code over GF(32) that detects any error touching at
most four characters in strings up to 89 characters, so a single typo in an
address is always caught. Decoding is strict on purpose: a string that is
accepted has exactly one encoding, so two spellings never name the same
bytes.

https://github.com/bitcoin/bips/blob/master/bip-0173.mediawiki
https://github.com/bitcoin/bips/blob/master/bip-0350.mediawiki
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
"""The 32 data characters; position in this string is the 5-bit value."""

SEPARATOR = "1"
"""Splits HRP from data; the *last* one counts, since the HRP may contain '1'."""

BECH32M_CONST = 0x2BC830A3
"""BIP-350's checksum constant (bech32 used 1)."""

CHECKSUM_LENGTH = 6
"""Six 5-bit symbols: the 30-bit BCH checksum."""

MAX_LENGTH = 90
"""BIP-173's overall length limit; the error-detection guarantee holds up to it."""

HRP_MIN_CHAR = 33
HRP_MAX_CHAR = 126
"""The HRP is printable US-ASCII without space (BIP-173)."""

MAX_HRP_LENGTH = 83
"""90 characters minus the separator and the checksum."""

# The generator of the BCH code, one 30-bit constant per bit shifted out of
# the top of the 30-bit checksum state (BIP-173).
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_STATE_MASK = 0x1FFFFFF  # the low 25 bits that survive a 5-bit shift
_TOP_SHIFT = 25
_DATA_BITS = 5
_DATA_MASK = 0x1F
_DECODE = {c: i for i, c in enumerate(CHARSET)}


class Bech32mError(ValueError):
    """A string is not valid bech32m; the message says which rule it breaks."""


class ChecksumError(Bech32mError):
    """Well-formed, but the checksum fails: almost always a typo."""


def polymod(values: Iterable[int]) -> int:
    """Remainder of the BCH code polynomial over ``values`` (5-bit symbols).

    Parameters
    ----------
    values : iterable of int
        Symbols in ``0..31``.

    Returns
    -------
    int
        The 30-bit checksum state; a valid bech32m string gives ``BECH32M_CONST``.
    """
    chk = 1
    for value in values:
        top = chk >> _TOP_SHIFT
        chk = ((chk & _STATE_MASK) << _DATA_BITS) ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def hrp_expand(hrp: str) -> list[int]:
    """The HRP as checksum input: high 3 bits of each char, a 0, then low 5 bits.

    Both halves go in so that a change to any HRP character changes the
    checksum, while the case-folded HRP is what is checksummed.
    """
    codes = [ord(c) for c in hrp]
    return [c >> _DATA_BITS for c in codes] + [0] + [c & _DATA_MASK for c in codes]


def create_checksum(hrp: str, data: Sequence[int]) -> list[int]:
    """The six checksum symbols that make ``hrp`` + ``data`` verify."""
    value = polymod([*hrp_expand(hrp), *data, *([0] * CHECKSUM_LENGTH)]) ^ BECH32M_CONST
    return [
        (value >> (_DATA_BITS * (CHECKSUM_LENGTH - 1 - i))) & _DATA_MASK
        for i in range(CHECKSUM_LENGTH)
    ]


def verify_checksum(hrp: str, data: Sequence[int]) -> bool:
    """True if ``data`` (payload plus checksum symbols) carries a valid bech32m checksum."""
    return polymod([*hrp_expand(hrp), *data]) == BECH32M_CONST


def _check_hrp(hrp: str) -> None:
    if not 1 <= len(hrp) <= MAX_HRP_LENGTH:
        raise Bech32mError(f"human-readable part must be 1 to {MAX_HRP_LENGTH} characters")
    for c in hrp:
        if not HRP_MIN_CHAR <= ord(c) <= HRP_MAX_CHAR:
            raise Bech32mError(f"human-readable part has a character out of range: {c!r}")


def encode(hrp: str, data: Sequence[int]) -> str:
    """Encode 5-bit ``data`` under ``hrp`` as a lowercase bech32m string.

    Parameters
    ----------
    hrp : str
        Human-readable part, printable ASCII; it is lower-cased.
    data : sequence of int
        Payload symbols in ``0..31``.

    Raises
    ------
    Bech32mError
        If the HRP or a symbol is out of range, or the result exceeds 90 characters.
    """
    _check_hrp(hrp)
    hrp = hrp.lower()
    if any(not 0 <= d <= _DATA_MASK for d in data):
        raise Bech32mError("data symbols must be in 0..31")
    length = len(hrp) + len(SEPARATOR) + len(data) + CHECKSUM_LENGTH
    if length > MAX_LENGTH:
        raise Bech32mError(f"encoding would be {length} characters, over the {MAX_LENGTH} limit")
    symbols = [*data, *create_checksum(hrp, data)]
    return hrp + SEPARATOR + "".join(CHARSET[d] for d in symbols)


def decode(text: str) -> tuple[str, list[int]]:
    """Split a bech32m string into its (lowercase) HRP and 5-bit payload.

    Strict rules (BIP-173/350): at most 90 characters, printable ASCII, one
    case throughout, a non-empty HRP, a separator followed by at least six
    data characters from the charset, and a valid bech32m checksum.

    Returns
    -------
    (str, list of int)
        The HRP in lower case and the payload without the checksum.

    Raises
    ------
    Bech32mError
        Naming the first rule the string breaks.
    """
    if len(text) > MAX_LENGTH:
        raise Bech32mError(f"too long: {len(text)} characters, the limit is {MAX_LENGTH}")
    if any(not HRP_MIN_CHAR <= ord(c) <= HRP_MAX_CHAR for c in text):
        raise Bech32mError("contains a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise Bech32mError("mixes upper and lower case")
    text = text.lower()
    pos = text.rfind(SEPARATOR)
    if pos < 0:
        raise Bech32mError(f"no separator {SEPARATOR!r}")
    if pos == 0:
        raise Bech32mError("empty human-readable part")
    if len(text) - pos - 1 < CHECKSUM_LENGTH:
        raise Bech32mError("too short to hold a checksum")
    hrp, tail = text[:pos], text[pos + 1 :]
    bad = [c for c in tail if c not in _DECODE]
    if bad:
        raise Bech32mError(f"invalid data character {bad[0]!r}")
    symbols = [_DECODE[c] for c in tail]
    if not verify_checksum(hrp, symbols):
        raise ChecksumError("checksum does not match")
    return hrp, symbols[:-CHECKSUM_LENGTH]


def convertbits(data: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    """Regroup a bit string from ``from_bits``-wide to ``to_bits``-wide values.

    Parameters
    ----------
    data : iterable of int
        Values each in ``0 .. 2**from_bits - 1``.
    from_bits, to_bits : int
        Group widths (8 -> 5 to encode bytes, 5 -> 8 to decode).
    pad : bool
        Encoding: pad the last group with zero bits. Decoding (``False``):
        refuse leftover bits that are a whole group or non-zero, so each
        byte string has exactly one encoding.

    Raises
    ------
    Bech32mError
        On an out-of-range value, or bad padding when ``pad`` is false.
    """
    acc = 0
    bits = 0
    out: list[int] = []
    max_out = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise Bech32mError(f"value {value} does not fit in {from_bits} bits")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_out)
        acc &= (1 << bits) - 1  # keep only the bits not yet emitted
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_out)
    elif bits >= from_bits:
        raise Bech32mError("padding longer than one input group")
    elif acc:
        raise Bech32mError("non-zero padding bits")
    return out
