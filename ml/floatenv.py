"""Does this thread's CPU keep subnormal float32 numbers, as consensus assumes?

IEEE 754 arithmetic, which the state transition relies on for identical bits
on every node, keeps subnormal numbers (nonzero, below ``2**-126``). x86 and
ARM can be told to flush them to zero instead: FTZ flushes subnormal results,
DAZ reads subnormal inputs as zero. Nothing in gradchain asks for that, but a
shared library built with ``-ffast-math`` switches both on for the whole
process when it is loaded, and new threads inherit the mode. A node in that
mode would compute other parameters, hence another state root, from the same
blocks. Updates on the wire cannot carry subnormals (``ml.codec``), but an
aggregate or an update step can still produce one, so the node checks the
mode at start-up, in numpy and in a numba kernel, on the thread that runs
consensus, and refuses to run in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["FloatEnvironment", "float_environment"]

_LEAST_NORMAL = np.float32(2.0**-126)
_HALF = np.float32(0.5)
_TWO_POW_24 = np.float32(2.0**24)
_SMALLEST_SUBNORMAL = np.array([1], dtype=np.uint32).view(np.float32)  # 2**-149


@dataclass(frozen=True, slots=True)
class FloatEnvironment:
    """What the probes saw: each is True when IEEE behaviour held."""

    numpy_keeps_subnormal_results: bool  # FTZ off, as numpy's loops see it
    numpy_reads_subnormal_inputs: bool  # DAZ off
    numba_keeps_subnormals: bool  # both, inside compiled consensus-style code

    @property
    def ieee(self) -> bool:
        return self.numpy_keeps_subnormal_results and self.numpy_reads_subnormal_inputs and self.numba_keeps_subnormals

    def describe(self) -> str:
        """One sentence for an error message: what is wrong and what to do."""
        if self.ieee:
            return "subnormal float32 numbers are kept (IEEE 754), as consensus needs"
        return (
            "this process flushes subnormal floats to zero (FTZ/DAZ is on, typically switched on "
            "by a library built with -ffast-math); its state roots would differ from other nodes'. "
            "Find the library that sets it (e.g. with LD_DEBUG=libs) and run without it"
        )


@numba.njit(nogil=True, cache=True)
def _numba_probe(least_normal: npt.NDArray[np.float32], smallest: npt.NDArray[np.float32]) -> bool:  # pragma: no cover
    half = least_normal[0] * np.float32(0.5)  # a subnormal result: FTZ makes it 0
    scaled = smallest[0] * np.float32(2.0**24)  # a subnormal input: DAZ reads it as 0
    return bool(half != np.float32(0.0) and scaled == np.float32(2.0**-125))


def float_environment() -> FloatEnvironment:
    """Probe the calling thread's floating-point mode (call it on the thread that runs consensus)."""
    least = np.array([_LEAST_NORMAL], dtype=np.float32)
    half = least * _HALF
    scaled = _SMALLEST_SUBNORMAL * _TWO_POW_24
    return FloatEnvironment(
        numpy_keeps_subnormal_results=bool(half[0] != 0),
        numpy_reads_subnormal_inputs=bool(scaled[0] == np.float32(2.0**-125)),
        numba_keeps_subnormals=bool(_numba_probe(least, _SMALLEST_SUBNORMAL)),
    )
