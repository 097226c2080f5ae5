"""Extract MLPerf Training's metered node power into ``tests/data/mlperf_power.csv``.

Reads local git copies of mlcommons/training_results_v4.0 and v5.0 (Apache-2.0) and, for each
power submission run of a benchmark hwsim can express or nearly, writes one row: the run's
median training step time (``tracked_stats``: NeMo's 'train_step_timing in s' or v5.0's
'train_step_time', else the global batch over the median 'throughput' in samples/s) and the
mean AC power of its nodes while training (each node's ``power_reading`` samples, every
1-2 s, inside the run's ``block_start`` .. ``block_stop`` intervals, or its ``epoch_start`` ..
``epoch_stop`` ones where it logs no blocks, less its ``eval_start`` .. ``eval_stop`` ones:
evaluation and initialisation left out), averaged over the nodes. Energy per step per node is
their product. NVIDIA's BERT (v4.0 SMC, v5.0 Lenovo) evaluates inside its one training block
and logs as 'throughput' the samples since the last evaluation over the time since it,
evaluation included (run_pretraining.py, 'tracked_stats'); its step time is instead the
training time between consecutive evaluations (``eval_stop`` to the next ``eval_start``)
summed, over the steps between them summed (each gap's samples over the global batch, rounded:
a step holds ``global_batch_size`` = d_batch_size x GPUs x average_packing_rate samples on
average); a sum, not a median, as the gaps alternate between two speeds (B200: ~61.8 and
~63.9 ms a step). Its mean power is taken over the same gaps, so that power and step time
share one window: the block's first segment (``block_start`` to the first evaluation: warm-up
and CUDA-graph capture, ~6.4 kW on the H100 node against ~6.8 kW while training) is in
neither.
Two more figures describe the power profile, for analysis (docs/accuracy.md, "Metered
energy"): ``node_power_p90_w``, each node's 90th percentile reading inside the training blocks
(the plateau while the GPUs compute), and ``node_power_floor_w``, each node's lowest reading
anywhere in its log (initialisation and evaluation included: the least the node drew while
the run held it, an upper bound on its idle draw), both averaged over the nodes.

Usage (prints the CSV; nothing else is written)::

    python benchmarks/mlperf_power_extract.py v4.0=/path/to/training_results_v4.0 \\
        v5.0=/path/to/training_results_v5.0 > tests/data/mlperf_power.csv
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

#: Per MLPerf round, (submitter folder, system, benchmark) of the power runs hwsim can express
#: or might, and every Lenovo B200 power run (benchmarks/energy_validation.py says which it
#: predicts). Not extracted: v4.0's smc-dc-power copies (DC power) and SMC's other AC runs
#: (dlrm_dcnv2, whose folder also holds raw copies of its logs; ssd on 1 and 8 nodes; unet3d
#: on 1 and 9 nodes; 64-node Llama 2 70B LoRA: hwsim expresses none of the first three, and
#: 8-node ssd's power (4.5 %), unet3d's and 64-node LoRA's step times (1.3 %, 3.7 %) spread
#: more than tests/test_energy_validation.py's repeatability check allows), v4.1's one power
#: submission (Dell, 8 x XE9680 8 x H100, llama2_70b_lora; training_results_v4.1 b87b9e3);
#: training_results_v5.1 (441d65f) has no power/ folders.
RUNS = {"v4.0": [("smc-ac-power", "64xSMC-H100-SXM-80GB", "gpt3"),
                 ("smc-ac-power", "1xSMC-H100-SXM-80GB", "resnet"),
                 ("smc-ac-power", "8xSMC-H100-SXM-80GB", "resnet"),
                 ("smc-ac-power", "1xSMC-H100-SXM-80GB", "bert"),
                 ("smc-ac-power", "1xSMC-H100-SXM-80GB", "llama2_70b_lora"),
                 ("smc-ac-power", "8xSMC-H100-SXM-80GB", "llama2_70b_lora")],
        "v5.0": [("Lenovo", "SR780aV3-8xB200_SXM_180GB", "llama2_70b_lora"),
                 ("Lenovo", "SR780aV3-8xB200_SXM_180GB", "bert"),
                 ("Lenovo", "SR780aV3-8xB200_SXM_180GB", "retinanet"),
                 ("Lenovo", "SR780aV3-8xB200_SXM_180GB", "stable_diffusion")]}


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def _events(text: str):
    for line in text.splitlines():
        at = line.find(":::MLLOG ")
        if at >= 0:
            yield json.loads(line[at + len(":::MLLOG "):])


def _intervals(log: list[dict], name: str) -> list[tuple[int, int]]:
    """The log's ``NAME_start`` .. ``NAME_stop`` intervals in ms, in the log's order (a start
    logged again replaces the open one; a stop with none open is ignored)."""
    out, start = [], None
    for e in log:
        if e["key"] == f"{name}_start":
            start = e["time_ms"]
        elif e["key"] == f"{name}_stop" and start is not None:
            out.append((start, e["time_ms"]))
            start = None
    return out


def run_row(repo: str, folder: str, system: str, bench: str, result: str,
            files: list[str]) -> dict:
    base = f"{folder}/results/{system}/{bench}"
    log = list(_events(_git(repo, "show", f"HEAD:{base}/{result}.txt")))
    blocks = _intervals(log, "block") or _intervals(log, "epoch")
    evals = _intervals(log, "eval")
    stats = [e["value"] for e in log if e["key"] == "tracked_stats"]
    batch = next(e["value"] for e in log if e["key"] == "global_batch_size")
    steps = [float(v["train_step_timing in s"]) for v in stats if "train_step_timing in s" in v]
    if not steps:
        steps = [float(v["train_step_time"]) for v in stats if "train_step_time" in v]
    if not steps and bench == "bert":
        # the training time between consecutive evaluations over the steps between them
        marks = sorted({(e["time_ms"], e["key"], e["value"]) for e in log
                        if e["key"] in ("eval_start", "eval_stop")})
        starts = [(t, v) for t, k, v in marks if k == "eval_start"]
        stops = [(t, v) for t, k, v in marks if k == "eval_stop"]
        gaps = [((t1 - t0) / 1e3, round((v1 - v0) / batch))
                for (t0, v0), (t1, v1) in zip(stops, starts[1:])]
        steps = [sum(t for t, _ in gaps) / sum(n for _, n in gaps)] * len(gaps)
        # the power over the same gaps: the block's first segment (block_start to the first
        # evaluation: warm-up and CUDA-graph capture) is in no gap, so it leaves both out
        blocks = [(t0, t1) for (t0, _), (t1, _) in zip(stops, starts[1:])]
    if not steps:
        steps = [batch / float(v["throughput"]) for v in stats if "throughput" in v]
    nodes = [f for f in files if f.startswith(f"{base}/power/{result}/node_")]
    means, plateaus, floors = [], [], []
    for path in nodes:
        readings = [(e["time_ms"], float(e["value"])) for e in _events(_git(repo, "show",
                                                                         f"HEAD:{path}"))
                    if e["key"] == "power_reading"]
        inside = [w for t, w in readings if any(a <= t <= b for a, b in blocks)
                  and not any(a <= t <= b for a, b in evals)]
        means.append(statistics.fmean(inside))
        plateaus.append(statistics.quantiles(inside, n=10)[-1] if len(inside) > 1
                        else inside[0])
        floors.append(min(w for _, w in readings))
    return {"submitter": folder, "system": system, "benchmark": bench, "result": result,
            "nodes": len(nodes), "global_batch": batch, "steps_logged": len(steps),
            "step_time_s": round(statistics.median(steps), 4 if steps[0] > 1 else 6),
            "node_power_w": round(statistics.fmean(means), 1),
            "node_power_min_w": round(min(means), 1), "node_power_max_w": round(max(means), 1),
            "node_power_p90_w": round(statistics.fmean(plateaus), 1),
            "node_power_floor_w": round(statistics.fmean(floors), 1)}


def main(repos: list[str]) -> None:
    """``repos``: ROUND=PATH of local copies of mlcommons/training_results_ROUND."""
    rows = []
    for item in repos:
        round_, repo = item.split("=", 1)
        commit = _git(repo, "rev-parse", "HEAD").strip()
        files = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
        for folder, system, bench in RUNS[round_]:
            prefix = f"{folder}/results/{system}/{bench}/"
            for path in files:
                rest = path[len(prefix):] if path.startswith(prefix) else ""
                if rest.startswith("result_") and rest.endswith(".txt") and "/" not in rest:
                    row = run_row(repo, folder, system, bench, rest[:-4], files)
                    rows.append({"round": round_, **row, "commit": commit[:7]})
    keys = list(rows[0])
    print(",".join(keys))
    for row in rows:
        print(",".join(str(row[k]) for k in keys))


if __name__ == "__main__":
    main(sys.argv[1:])
