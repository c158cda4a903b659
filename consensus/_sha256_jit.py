"""numba glue shared by the SHA-256d kernels (private).

Each kernel module defines two LLVM functions in IR, built into whichever
numba module calls them: the scan loop ``i64 scan(i32* mid, i32* tail, i64
first, i64 end, i32 top)`` and the full digest ``void full(i32* mid, i32*
tail, i32 nonce, i32* out)``. The factories here wrap such a pair of IR
builders as numba intrinsics taking u32 arrays, so the kernels' numba
drivers call them like functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from consensus._sha256_common import DIGEST_WORDS

DefineFn = Callable[[ir.Module], ir.Function]
_I32 = ir.IntType(32)


def _u32_array(ty: Any) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == types.uint32 and ty.ndim == 1 and ty.layout == "C"


def _data(context: Any, builder: ir.IRBuilder, ty: Any, value: Any) -> ir.Value:
    return builder.bitcast(context.make_array(ty)(context, builder, value).data, _I32.as_pointer())


def scan_intrinsic(define_scan: DefineFn) -> Any:
    """A numba intrinsic ``scan_groups(mid, tail, first, end, top) -> int64`` calling the IR loop."""

    @intrinsic
    def scan_groups(typingctx: Any, mid: Any, tail: Any, first: Any, end: Any, top: Any) -> Any:
        if not (_u32_array(mid) and _u32_array(tail)
                and all(isinstance(t, types.Integer) for t in (first, end, top))):
            return None  # a typing error at compile time, never a wrong call
        sig = types.int64(mid, tail, first, end, top)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            mid_ty, tail_ty, first_ty, end_ty, top_ty = signature.args
            return builder.call(define_scan(builder.module), [
                _data(context, builder, mid_ty, args[0]),
                _data(context, builder, tail_ty, args[1]),
                context.cast(builder, args[2], first_ty, types.int64),
                context.cast(builder, args[3], end_ty, types.int64),
                context.cast(builder, args[4], top_ty, types.uint32),
            ])

        return sig, codegen

    return scan_groups


def full_intrinsic(define_full: DefineFn) -> Any:
    """A numba intrinsic ``full_limbs(mid, tail, nonce, out)``: one nonce's 8 digest limbs into ``out``."""

    @intrinsic
    def full_limbs(typingctx: Any, mid: Any, tail: Any, nonce: Any, out: Any) -> Any:
        if not (_u32_array(mid) and _u32_array(tail) and _u32_array(out)
                and isinstance(nonce, types.Integer)):
            return None
        sig = types.void(mid, tail, nonce, out)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            mid_ty, tail_ty, nonce_ty, out_ty = signature.args
            builder.call(define_full(builder.module), [
                _data(context, builder, mid_ty, args[0]),
                _data(context, builder, tail_ty, args[1]),
                context.cast(builder, args[2], nonce_ty, types.uint32),
                _data(context, builder, out_ty, args[3]),
            ])
            return context.get_dummy_value()

        return sig, codegen

    return full_limbs


@numba.njit(nogil=True, cache=True)
def at_most(limbs: npt.NDArray[np.uint32], target: npt.NDArray[np.uint32]) -> bool:
    """Eight little-endian limbs <= the target's, most significant limb first."""
    for j in range(DIGEST_WORDS - 1, -1, -1):
        if limbs[j] != target[j]:
            return bool(limbs[j] < target[j])
    return True


def emit_group_loop(
    fn: ir.Function,
    b: ir.IRBuilder,
    start: ir.Value,
    end: ir.Value,
    ways: int,
    body: Callable[[ir.IRBuilder, ir.Value], ir.Value],
) -> None:
    """The scan loop both kernels share, emitted from ``b``'s block (which must not be terminated).

    For ``group = start, start + ways, ...`` while ``group < end``: ``body(b,
    group)`` emits the hashing of that group's nonces and returns an ``i1``
    that is true if any may meet the target; the function then returns that
    group, or ``end`` once the range is done.
    """
    i64 = ir.IntType(64)
    entry = b.block
    check = fn.append_basic_block("check")
    hashing = fn.append_basic_block("body")
    found = fn.append_basic_block("found")
    done = fn.append_basic_block("done")
    b.branch(check)

    b.position_at_end(check)
    group = b.phi(i64)
    group.add_incoming(start, entry)
    b.cbranch(b.icmp_signed("<", group, end), hashing, done)

    b.position_at_end(hashing)
    hit = body(b, group)
    group.add_incoming(b.add(group, ir.Constant(i64, ways)), b.block)
    b.cbranch(hit, found, check)

    b.position_at_end(found)
    b.ret(group)
    b.position_at_end(done)
    b.ret(end)


def declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    """The declaration of ``name`` in ``module``, added if missing."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name)
