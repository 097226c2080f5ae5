"""Pricing speed: per-op rates and roofline times of a 1,000,000-op training graph.

Run by hand: ``python benchmarks/bench_price.py [--device D]``. The graph is the GPT-3 175B
training step (96 layers, forward, backward, optimizer, fused attention) repeated until it
holds at least 1,000,000 ops (copies side by side, each copy's edges its own), so every op kind
the pricing distinguishes is there in its real proportion (fused attention forward, recompute
and gradient kernels priced by their kernel fit included). The timed part is
``simulator.cost.roofline.op_costs``: the rates of every op on the device (``price``) and the
roofline kernel. Best and median of 10 after a warm-up that compiles the kernels. Target
(issue 20): under 100 ms.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_price.py``
    sys.path.insert(0, str(ROOT))

from hardware_specs.loader import load_device
from simulator.cost.roofline import op_costs
from simulator.graph.lower import Lowered, lower
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from workloads.presets import TRANSFORMERS

TARGET_OPS = 1_000_000


def tiled(lowered: Lowered, copies: int) -> Lowered:
    """``copies`` independent copies of ``lowered`` as one graph."""
    n, edges = len(lowered), lowered.n_edges
    fields = {}
    for field in dataclasses.fields(Lowered):
        value = getattr(lowered, field.name)
        if field.name == "names":
            fields["names"] = value * copies
        elif field.name == "indptr":
            fields["indptr"] = np.concatenate(
                [value[:-1] + c * edges for c in range(copies)] + [[copies * edges]])
        elif field.name == "indices":
            fields["indices"] = np.concatenate([value + c * n for c in range(copies)])
        elif isinstance(value, np.ndarray):
            fields[field.name] = np.tile(value, copies)
        else:
            fields[field.name] = value
    return Lowered(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="a100-sxm4-80gb")
    args = parser.parse_args()
    device = load_device(args.device)
    plan = Plan(micro_batch=1)
    forward = fuse_attention(TRANSFORMERS["gpt3-175b"].forward_graph(1, plan.formats.activation))
    one = lower(training_graph(forward, plan))
    big = tiled(one, -(-TARGET_OPS // len(one)))
    op_costs(big, device)   # warm-up: JIT compile / cache load
    times = []
    for _ in range(10):
        t = time.perf_counter()
        op_costs(big, device)
        times.append(time.perf_counter() - t)
    attention = int(np.count_nonzero(big.kind == 2))
    print(f"pricing {len(big):,} ops ({attention:,} fused attention) on {device.name}: best "
          f"{min(times) * 1e3:.1f} ms, median {sorted(times)[len(times) // 2] * 1e3:.1f} ms "
          f"(target 100 ms)")


if __name__ == "__main__":
    main()
