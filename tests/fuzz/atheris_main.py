"""One target under atheris (libFuzzer): ``python -m tests.fuzz.atheris_main TARGET [libFuzzer flags]``.

Run by ``python -m tests.fuzz --engine atheris`` in a child process per
target (libFuzzer owns the process and exits on the first crash, writing
the input to ``crash-*``). The seeds are written to a fresh corpus
directory; every ``MEMORY_SAMPLE``-th input is also measured with
tracemalloc and an input over its allowance is a crash too. Modules with
numba kernels are not instrumented (numba compiles their bytecode).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

import atheris

# Modules with numba kernels load before instrumentation: atheris rewrites the
# bytecode of the functions it instruments, and numba cannot compile that.
NUMBA_MODULES = ("ml._agg_kernels", "ml._agg_robust", "ml.aggregation", "ml.checks", "ml.gate",
                 "consensus._sha256_portable", "consensus._sha256_shani")
for module in NUMBA_MODULES:
    importlib.import_module(module)

with atheris.instrument_imports(include=["consensus", "ml", "node", "wallet"]):
    from tests.fuzz.engine import MEMORY_SAMPLE, memory_ratio
    from tests.fuzz.targets import TARGETS, check_one


def main() -> None:
    name, flags = sys.argv[1], sys.argv[2:]
    target = TARGETS[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"gradchain-fuzz-{name}-"))
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed{i}").write_bytes(seed)
    count = 0

    def one_input(data: bytes) -> None:
        nonlocal count
        count += 1
        if count % MEMORY_SAMPLE == 0:
            ratio = memory_ratio(target, data)
            if ratio > 1.0:
                raise MemoryError(f"{name}: a {len(data)}-byte input used {ratio:.1f}x its memory allowance")
        else:
            check_one(target, data)

    atheris.Setup([sys.argv[0], f"-max_len={target.max_len}", *flags, str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
