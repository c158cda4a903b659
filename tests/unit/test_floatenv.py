"""The start-up probe of the floating-point mode: IEEE here, caught when FTZ/DAZ is on."""

from __future__ import annotations

from ml.floatenv import float_environment
from tests.floatmode import subnormals_flushed


def test_this_test_process_keeps_subnormals() -> None:
    env = float_environment()
    assert env.ieee, env
    assert "kept" in env.describe()


def test_flush_to_zero_is_caught_in_numpy_and_numba() -> None:
    with subnormals_flushed():
        env = float_environment()
    assert not env.numpy_keeps_subnormal_results
    assert not env.numpy_reads_subnormal_inputs
    assert not env.numba_keeps_subnormals
    assert not env.ieee and "-ffast-math" in env.describe()
    assert float_environment().ieee, "the mode is restored after the block"
