"""Switch this thread's x86 MXCSR to flush subnormals (FTZ and DAZ), as a ``-ffast-math`` library would.

Only for tests of ``ml.floatenv`` and the node's start-up check: the mode is
set with numba's access to the ``ldmxcsr`` instruction and always restored.
New threads inherit the mode (POSIX), so a node started inside the block
runs its chain thread in it too.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

MXCSR_FTZ = 0x8000  # flush-to-zero: subnormal results become 0
MXCSR_DAZ = 0x0040  # denormals-are-zero: subnormal inputs read as 0
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_functions() -> tuple[Any, Any]:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    def _call(builder: Any, name: str, ptr: Any) -> None:
        fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
        fn = builder.module.declare_intrinsic(name, fnty=fnty)
        builder.call(fn, [builder.bitcast(ptr, ir.PointerType(ir.IntType(8)))])

    @intrinsic
    def _load(typingctx: Any, value: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = builder.alloca(ir.IntType(32))
            builder.store(args[0], ptr)
            _call(builder, "llvm.x86.sse.ldmxcsr", ptr)
            return context.get_dummy_value()

        return types.void(types.uint32), codegen

    @intrinsic
    def _store(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = builder.alloca(ir.IntType(32))
            _call(builder, "llvm.x86.sse.stmxcsr", ptr)
            return builder.load(ptr)

        return types.uint32(), codegen

    @njit
    def set_mxcsr(value: Any) -> None:
        _load(value)

    @njit
    def get_mxcsr() -> Any:
        return _store()

    return set_mxcsr, get_mxcsr


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """Run the block with FTZ and DAZ on in this thread (skips the test off x86-64)."""
    if not X86_64:
        pytest.skip("MXCSR is x86-64 only")
    set_mxcsr, get_mxcsr = _mxcsr_functions()
    before = int(get_mxcsr())
    set_mxcsr(np.uint32(before | MXCSR_FTZ | MXCSR_DAZ))
    try:
        yield
    finally:
        set_mxcsr(np.uint32(before))
