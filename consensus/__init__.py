"""Pure consensus rules: encoding, hashing, targets, validation, state transition.

Nothing here opens a socket, a file or reads a clock: time, randomness and
storage are passed in, so every rule is a plain function a test can call.
"""

from consensus.errors import BlockRejected, Reject

__all__ = ["BlockRejected", "Reject"]
