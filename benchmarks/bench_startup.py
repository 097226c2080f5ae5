"""Start-up: the whole ``hwsim predict llama2-7b --device h100`` process, warm, best of N.

Run by hand: ``python benchmarks/bench_startup.py [--runs N] [--breakdown]``. One untimed run
first (so that the byte-code and numba's kernel cache exist: "warm"), then N timed runs of the
whole process, interpreter start to exit, printing best and median. Beside it, the same for
``python -c pass`` (the interpreter's own floor on this machine). ``--breakdown`` adds up to
five runs under ``python -X importtime`` and prints the import time by top-level package, the
least over those runs (numba's first call loads the rest of numba, and scipy.linalg through
its BLAS check, when the kernels run: that shows up here too, as imports).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "simulator.cli", "predict", "llama2-7b", "--device", "h100"]


def wall_s(args: list[str], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` runs of ``python args`` (output discarded)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def import_breakdown(runs: int) -> tuple[float, Counter]:
    """Seconds of import per top-level package (``-X importtime`` self times), each the least
    over ``runs`` runs, and the least total."""
    best: Counter = Counter()
    total = float("inf")
    for _ in range(runs):
        run = subprocess.run([sys.executable, "-X", "importtime", *COMMAND], cwd=ROOT,
                             check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        by_package: Counter = Counter()
        for line in run.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if match:
                by_package[match[2].split(".")[0]] += int(match[1]) / 1e6
        total = min(total, sum(by_package.values()))
        for package, seconds in by_package.items():
            best[package] = min(best.get(package, seconds), seconds)
    return total, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    wall_s(COMMAND, 1)  # warm: .pyc files and the numba cache written
    times = wall_s(COMMAND, args.runs)
    floor = wall_s(["-c", "pass"], args.runs)
    print(f"hwsim predict llama2-7b --device h100: best {min(times):.3f} s, median "
          f"{statistics.median(times):.3f} s over {args.runs} runs (python -c pass: best "
          f"{min(floor):.3f} s)")
    if args.breakdown:
        total, by_package = import_breakdown(min(args.runs, 5))
        print(f"imports (-X importtime, least of {min(args.runs, 5)} runs): {total:.3f} s")
        for package, seconds in by_package.most_common(12):
            print(f"  {package:<24} {seconds:.3f} s")


if __name__ == "__main__":
    main()
