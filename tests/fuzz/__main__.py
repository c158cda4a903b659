"""``python -m tests.fuzz``: fuzz every decoder (``make fuzz`` runs it at volume).

    python -m tests.fuzz --runs 1000000                 # atheris, every target, 1M inputs each
    python -m tests.fuzz --engine mutate --runs 20000   # the in-process mutator, no atheris
    python -m tests.fuzz --runs 50000 block tx          # some targets only

Prints one line per target (inputs, decoded/rejected where known, inputs/s)
and exits 1 if any target let out anything but its reject type.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from tests.fuzz.engine import fuzz
from tests.fuzz.targets import TARGETS, Crash

DONE = re.compile(r"Done (\d+) (?:runs )?in (\d+) second")
RSS = re.compile(r"rss: (\d+)Mb")
RSS_LIMIT_MB = 1536  # libFuzzer kills a target whose process grows past this


def run_atheris(name: str, runs: int) -> tuple[bool, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_main", name, f"-atheris_runs={runs}",
         f"-rss_limit_mb={RSS_LIMIT_MB}", "-print_final_stats=1"],
        capture_output=True, text=True,
    )
    log = proc.stdout + proc.stderr
    done = DONE.search(log)
    rss = max((int(x) for x in RSS.findall(log)), default=0)
    seconds = time.monotonic() - started
    # libFuzzer prints "Uncaught Python exception" / "ERROR" for a finding; a process that
    # finished its runs ("Done N") and was then killed by an alarm while exiting found nothing.
    crashed = "Uncaught Python exception" in log or "==ERROR" in log or "ERROR: libFuzzer" in log
    if crashed or done is None:
        tail = "\n".join(log.strip().splitlines()[-25:])
        return False, f"{name:22} CRASH (exit {proc.returncode}) after {seconds:.0f}s\n{tail}"
    executed = int(done.group(1))
    return True, f"{name:22} {executed:>9} inputs  {executed / max(seconds, 1e-9):>8.0f}/s  peak rss {rss} MB  ok"


def run_mutator(name: str, runs: int, seed: int) -> tuple[bool, str]:
    try:
        stats = fuzz(TARGETS[name], runs, seed)
    except Crash as exc:
        return False, f"{name:22} CRASH {exc}"
    return True, (f"{name:22} {stats.runs:>9} inputs  {stats.per_second:>8.0f}/s  decoded {stats.decoded}, "
                  f"rejected {stats.rejected}, worst memory {stats.worst_memory_ratio:.3f} of allowance  ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--engine", choices=("atheris", "mutate"), default="atheris")
    parser.add_argument("--seed", type=int, default=0, help="the mutator's seed")
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    if args.engine == "atheris":
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: `pip install atheris`, or use --engine mutate", file=sys.stderr)
            return 2
    print(f"fuzzing {len(names)} decoders, {args.runs} inputs each ({args.engine})", flush=True)
    failed = 0
    for name in names:
        ok, line = run_atheris(name, args.runs) if args.engine == "atheris" else run_mutator(name, args.runs, args.seed)
        print(line, flush=True)
        failed += not ok
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
