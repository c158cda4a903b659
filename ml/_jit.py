"""Compile an llvmlite IR module for this CPU and call it through ctypes (private).

numba's intrinsics cover kernels whose shape is fixed when numba compiles
them. A kernel unrolled for its input's shape (a sorting network for n rows)
is built here instead: the IR is generated per shape, compiled once per
process with LLVM's JIT for the CPU and features numba itself targets
(``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` if set, else the host), and
called through a ctypes function, which releases the GIL, so Python threads
can run one kernel on disjoint ranges at once.

The target machine is built with LLVM's defaults: no fast-math, and
floating-point contraction only where the IR asks for it (it never does), so
a ``fmul`` followed by an ``fadd`` is never fused into an FMA.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import llvmlite.binding as llvm
import numba
from llvmlite import ir

_ENGINES: list[Any] = []  # an engine must outlive every function pointer taken from it
_LOCK = threading.Lock()
_READY: list[tuple[str, str]] = []


def target() -> tuple[str, str]:
    """(CPU name, features) numba compiles for: its config if set, else the host's."""
    with _LOCK:
        if not _READY:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            name: Any = getattr(numba.config, "CPU_NAME", None)
            features: Any = getattr(numba.config, "CPU_FEATURES", None)
            _READY.append((name or llvm.get_host_cpu_name(), features or llvm.get_host_cpu_features().flatten()))
        return _READY[0]


def compile_function(module: ir.Module, name: str, prototype: Any) -> Any:
    """Compile ``module`` and return its function ``name`` as ``prototype`` (a ctypes CFUNCTYPE)."""
    cpu, features = target()
    module.triple = llvm.get_process_triple()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    machine = llvm.Target.from_default_triple().create_target_machine(cpu=cpu, features=features, opt=3)
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    with _LOCK:
        _ENGINES.append(engine)
    return prototype(engine.get_function_address(name))


def pointer(array: Any) -> ctypes.c_void_p:
    """The address of a numpy array's first element, for a ctypes call."""
    return ctypes.c_void_p(array.ctypes.data)
