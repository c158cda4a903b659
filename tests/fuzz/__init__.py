"""Decoder fuzzing at volume: ``make fuzz`` (atheris) and a quick in-process run in ``make test``.

Every decoder that reads a stranger's bytes has one target in
:mod:`tests.fuzz.targets`: the bytes go in, and the only exception allowed out
is the project's reject type for that decoder (``BlockRejected``,
``MessageError``, ``UpdateCheckError``, ``KeystoreError``, ``AddressError``).
Anything else (a ``ValueError`` from numpy, a ``RecursionError`` from a
parser, a ``MemoryError``) is a crash and a bug.
"""
