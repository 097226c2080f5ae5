"""Where a Megatron-Core / NeMo validation row's micro-batch goes, and what-ifs around it.

Run by hand: ``PYTHONPATH=. python benchmarks/megatron_breakdown.py [run_id ...]`` (default:
NeMo's Llama 3.1 70B and GPT-3 175B bf16 rows on 128 H100s). For each row it prints

- the compute stream of one micro-batch of the stage hwsim reports (``Result.ops``) by op class:
  each GEMM (forward, dgrad, wgrad) with its achieved TFLOP/s, attention, elementwise, norms;
- the collectives by name and phase (their time on their own stream, hidden or not);
- diagnostic what-ifs (never the row's configuration): no communication interference, no
  TransformerEngine userbuffers overlap, no pipeline p2p overlap, separate projections, no
  rank variability;
- the bytes of the fp32 ``main_grad`` read-modify-write that Megatron's gradient-accumulation
  fusion adds to each weight-gradient GEMM's epilogue (not priced by hwsim: its wgrad writes
  its output once, in the compute format), as seconds at the datasheet bandwidth.

``interleaved_step`` is an event simulation of Megatron-LM's interleaved 1F1B order with a
message latency on every hop between ranks: the check behind ``overlap_p2p`` (docs/accuracy.md,
the NeMo 70B / GPT-3 bullet of the eighth session's misses).
"""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this tree's simulator, not an installed one
ROWS = ("nemo-llama3.1-70b-bf16-128", "nemo-gpt3-175b-bf16-128")


def interleaved_order(rank: int, p: int, v: int, m: int) -> list[tuple[str, int, int]]:
    """(kind, model chunk, micro-batch) in the order rank ``rank`` of ``p`` runs them under
    Megatron-LM's interleaved schedule (megatron/core/pipeline_parallel/schedules.py,
    ``forward_backward_pipelining_with_interleaving``, micro-batch groups of p: warm-up
    forwards (p - rank - 1) 2 + (v - 1) p, then one forward and one backward, then the
    remaining backwards; forward k is chunk (k // p) % v of micro-batch (k // pv) p + k % p,
    backward k the same with the chunks reversed). ``m`` a multiple of ``p``."""
    total = m * v
    warm = min((p - rank - 1) * 2 + (v - 1) * p, total)

    def micro(k: int) -> int:
        return (k // (p * v)) * p + k % p

    def forward(k: int) -> tuple[str, int, int]:
        return ("F", (k // p) % v, micro(k))

    def backward(k: int) -> tuple[str, int, int]:
        return ("B", v - 1 - (k // p) % v, micro(k))

    order = [forward(k) for k in range(warm)]
    for i in range(total - warm):
        order += [forward(warm + i), backward(i)]
    return order + [backward(i) for i in range(total - warm, total)]


def interleaved_step(p: int, v: int, m: int, forward: float, backward: float,
                     latency: float) -> float:
    """Seconds of the step when every rank runs ``interleaved_order`` on one stream, a chunk's
    forward ``forward`` and backward ``backward`` seconds, and each activation or gradient
    crossing to another rank arrives ``latency`` after the chunk that sent it ended (the
    receiver waits for it: with ``overlap_p2p_comm`` nothing else does)."""
    if m % p:
        raise ValueError(f"m = {m}: Megatron-LM's interleaved schedule takes a multiple of p = {p}")
    orders = [interleaved_order(r, p, v, m) for r in range(p)]
    end: dict[tuple[int, str, int, int], float] = {}
    position, clock = [0] * p, [0.0] * p
    remaining = sum(len(order) for order in orders)
    while remaining:
        moved = False
        for rank in range(p):
            while position[rank] < len(orders[rank]):
                kind, chunk, micro = orders[rank][position[rank]]
                if kind == "F":
                    source = (rank - 1, "F", chunk, micro) if rank else (
                        (p - 1, "F", chunk - 1, micro) if chunk else None)
                elif rank < p - 1:
                    source = (rank + 1, "B", chunk, micro)
                else:
                    source = (0, "B", chunk + 1, micro) if chunk < v - 1 else \
                        (rank, "F", chunk, micro)
                if source is not None and source not in end:
                    break
                ready = 0.0 if source is None else \
                    end[source] + (latency if source[0] != rank else 0.0)
                clock[rank] = max(clock[rank], ready) + (forward if kind == "F" else backward)
                end[(rank, kind, chunk, micro)] = clock[rank]
                position[rank] += 1
                remaining -= 1
                moved = True
        if not moved:
            raise RuntimeError("the interleaved order deadlocked (a bug in this simulation)")
    return max(clock)


def _classify(name: str, kind: str) -> str:
    if kind != "matmul":
        return kind
    task = name.split(":")[0] if ":" in name else "fwd"
    return f"gemm {re.sub(r'^L[0-9]+[.]', '', name.split(':')[-1])} {task}"


def breakdown(run_id: str) -> None:
    """Print the row's micro-batch by op class, its collectives and the what-ifs."""
    from simulator.api import simulate
    from simulator.graph.op import OpKind, Task
    from tests.conftest import load_module

    report = load_module(ROOT / "benchmarks" / "validation_report.py", "validation_report")
    row = {r["run_id"]: r for r in report.load_rows()}[run_id]
    measured = float(row["published_value"])
    parallel, plan = report.parallel_plan(row), report.step_plan(row)

    def error(par=parallel, pl=plan) -> float:
        result = simulate(report.workload(row), report.hardware(row), pl, parallel=par)
        return 100 * (report.predicted_value(row, result) / measured - 1)

    result = report.predict(row)
    ops = result.ops
    print(f"== {run_id}: error {error():+.1f} %, step {result.step_time_s:.3f} s, "
          f"{result.micro_batches} micro-batches of {1e3 * result.parallel['micro_batch_s']:.1f} ms"
          f" (pacing stage), bubble {result.parallel['bubble_fraction']:.3f}, exposed "
          f"communication {result.parallel['exposed_communication_s']:.3f} s, rank variability "
          f"x {result.parallel.get('rank_variability', {}).get('step_factor', 1.0):.4f}")
    compute = ops[(ops.kind != "collective") & ops.phase.isin(["forward", "backward", "recompute"])]
    compute = compute.assign(part=[_classify(n, k) for n, k in zip(compute.name, compute.kind)])
    parts = compute.groupby("part").agg(ms=("time_s", "sum"), tflop=("flops", "sum"),
                                        ops=("name", "count"))
    parts["ms"] *= 1e3
    parts["tflop"] /= 1e12
    parts["tflop_per_s"] = parts.tflop / parts.ms * 1e3
    print(parts.sort_values("ms", ascending=False).round(1).to_string())
    print(f"compute stream {1e3 * compute.time_s.sum():.1f} ms")
    comm = ops[ops.kind == "collective"]
    comm = comm.assign(what=comm.name.str.replace(r"L[0-9]+", "L", regex=True))
    table = comm.groupby(["phase", "what"]).agg(ms=("time_s", "sum"), ops=("name", "count"))
    table["ms"] *= 1e3
    print(table.sort_values("ms", ascending=False).head(12).round(2).to_string())
    lowered = result.lowered
    wgrad = (lowered.kind == OpKind.MATMUL) & (lowered.task == Task.WEIGHT_GRAD)
    weights = (lowered.n[wgrad] * lowered.k[wgrad] * lowered.batch[wgrad]).astype(float).sum()
    bandwidth = result.device_spec.memory[-1].bandwidth_bytes_per_s
    print(f"weight-gradient GEMMs {1e3 * ops.time_s.values[wgrad].sum():.1f} ms; their fp32 "
          f"main_grad read + write {8 * weights / 1e9:.1f} GB = "
          f"{1e3 * 8 * weights / bandwidth:.1f} ms at the datasheet bandwidth (not priced)")
    what_ifs = {
        "no interference": error(par=dataclasses.replace(parallel, comm_interference=False)),
        "no userbuffers": error(par=dataclasses.replace(parallel, tp_comm_overlap=False)),
        "blocking p2p": error(par=dataclasses.replace(parallel, overlap_p2p_comm=False)),
        "separate projections": error(pl=dataclasses.replace(plan, projections="separate")),
        "no rank variability": error(pl=dataclasses.replace(plan, rank_variability=0.0)),
    }
    print("what-ifs (error %):", {k: round(v, 1) for k, v in what_ifs.items()})


def main(argv: list[str]) -> None:
    for run_id in argv or ROWS:
        breakdown(run_id)


if __name__ == "__main__":
    main(sys.argv[1:])
