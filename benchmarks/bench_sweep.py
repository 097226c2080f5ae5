"""Speed of a sweep: 1,200 configurations of Llama 2 7B over devices, device counts and plans.

Run by hand: ``python benchmarks/bench_sweep.py [--workers N] [--no-memo] [--dask]``. 5 devices
(A100 40/80 GB, H100, H200, MI300X) x 5 device counts (8 .. 128) x 48 plans (tp 1/2/4/8 x
pp 1/2 x ZeRO 0/1/3 x recompute none/full), global batch 256: every configuration is one
``simulate`` (invalid ones are rows too). Wall time of the whole ``sweep`` call from a fresh
process, worker start-up and the kernels' JIT cache load included; the README records the
figure on a 2-core machine. ``--no-memo`` leaves out the workers' stage caches
(``simulator.explore.memo.StageCache``) to show what they save; ``--dask`` runs on a 2-worker LocalCluster.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_sweep.py``
    sys.path.insert(0, str(ROOT))

DEVICES = ["a100-sxm4-40gb", "a100-sxm4-80gb", "h100-sxm5-80gb", "h200-sxm", "mi300x"]
COUNTS = [8, 16, 32, 64, 128]
GRID = {"tp": [1, 2, 4, 8], "pp": [1, 2], "zero": [0, 1, 3], "recompute": ["none", "full"],
        "global_batch": [256], "micro_batch": [1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-memo", action="store_true")
    parser.add_argument("--dask", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    from simulator.explore import sweep
    client = None
    if args.dask:
        from distributed import Client, LocalCluster
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))
    t = time.perf_counter()
    rows = sweep.sweep("llama2-7b", DEVICES, COUNTS, GRID, workers=args.workers, client=client,
                       progress=False, memo=not args.no_memo)
    wall = time.perf_counter() - t
    ok = rows[rows.status == "ok"]
    print(f"{len(rows)} configurations of llama2-7b ({len(ok)} valid, "
          f"{int(ok.fits.sum())} fit) in {wall:.1f} s "
          f"({wall / len(rows) * 1e3:.1f} ms each; {len(rows) / wall:.0f} per s); "
          f"imports {t - t0:.1f} s; memo {'off' if args.no_memo else 'on'}; "
          + ("dask LocalCluster, 2 workers" if args.dask
             else f"workers {args.workers or 'all CPUs'}"))
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
