"""hwsim's power-limit model (``simulator.cost.power``) against Zeus's measured sweeps.

Zeus (You, Chung and Chowdhury, "Zeus: Understanding and Optimizing GPU Energy Consumption
of DNN Training", NSDI 2023) published each workload's epoch time and average GPU power on a
V100 at power limits from 100 to 250 W (``tests/data/zeus_v100_power_limits.csv``, from
ml-energy/zeus ``examples/research_reproducibility/zeus_nsdi23/trace/summary_power_v100.csv``).
hwsim never fits on them: ``rows`` predicts the same workloads (ResNet-50 at batch 256, BERT-base
at batch 32 with SQuAD's 384-token context; fp32, PyTorch's default, which the traces do not
state) on ``v100-pcie-32gb`` (Zeus's limits top out at the PCIe card's 250 W) at each limit, and
compares both sides relative to the 250 W run: slowdown, energy per unit of work, and where
the energy is lowest. Absolute power is not compared: hwsim's busy device draws its TDP (250 W)
where the V100 drew 220-228 W (``docs/model.md``, "Energy and power").

The same traces hold a second catalogue GPU, the P100 PCIe 16 GB (250 W; Zeus's
``summary_power_p100.csv``, ``tests/data/zeus_p100_power_limits.csv``: ResNet-50 at batch 128
and BERT-base at batch 24 on SQuAD, the largest batches Zeus ran on its 16 GB, at limits 125-250
W): ``rows(device="p100-pcie-16gb")``. It shows the power model's gap plainly: the busy P100
drew 165-179 W under its 250 W limit and ran within 1 % of its full speed down to 200 W, where
hwsim's busy device draws the TDP and slows at every limit below it (docs/accuracy.md).
"""
from __future__ import annotations

import csv
from pathlib import Path

TABLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "zeus_v100_power_limits.csv"
DEVICE = "v100-pcie-32gb"
#: Zeus's (dataset, network, batch) -> hwsim's workload and plan.
WORKLOADS = {("imagenet", "resnet50", 256): ("resnet-50", {"micro_batch": 256}),
             ("squad", "bert_base_uncased", 32): ("bert-base", {"micro_batch": 32,
                                                                "seq_len": 384})}
#: Each device's sweep: its table (Zeus's rows, never fitted on) and workloads.
SWEEPS = {DEVICE: (TABLE, WORKLOADS),
          "p100-pcie-16gb": (TABLE.with_name("zeus_p100_power_limits.csv"),
                             {("imagenet", "resnet50", 128): ("resnet-50", {"micro_batch": 128}),
                              ("squad", "bert_base_uncased", 24): ("bert-base",
                                                                   {"micro_batch": 24,
                                                                    "seq_len": 384})})}


def rows(precision: str = "fp32", device: str = DEVICE) -> list[dict]:
    """One row per (workload, power limit) of ``device``'s sweep (``SWEEPS``): the limit and,
    relative to the 250 W run, hwsim's and Zeus's time and energy per unit of work, and both
    sides' average power."""
    from simulator.api import simulate

    path, workloads = SWEEPS[device]
    with path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    out = []
    for (dataset, network, batch), (model, plan) in workloads.items():
        measured = {float(r["power_limit"]): (float(r["time_per_epoch"]),
                                              float(r["average_power"]))
                    for r in table if (r["dataset"], r["network"], int(r["batch_size"]))
                    == (dataset, network, batch)}
        top = max(measured)
        base = None
        for limit in sorted(measured, reverse=True):
            r = simulate(model, device, precision=precision, power_limit_w=limit, **plan)
            time_s, power_w = measured[limit]
            if base is None:
                base = (r.step_time_s, r.energy_j_per_step, time_s, time_s * power_w)
            out.append({"workload": f"{network} b{batch}", "limit_w": limit,
                        "predicted_time": r.step_time_s / base[0],
                        "measured_time": time_s / base[2],
                        "predicted_energy": r.energy_j_per_step / base[1],
                        "measured_energy": time_s * power_w / base[3],
                        "predicted_power_w": r.avg_power_w, "measured_power_w": power_w,
                        "top_w": top})
    return out


def section(device: str = DEVICE, power: bool = False) -> list[str]:
    """The comparison as a markdown table (for docs/accuracy.md); ``power``: with both sides'
    average power in watts."""
    head = "| workload | limit (W) | time, hwsim | time, Zeus | energy, hwsim | energy, Zeus |"
    rule = "|---|---|---|---|---|---|"
    if power:
        head, rule = head + " power (W), hwsim | power (W), Zeus |", rule + "---|---|"
    lines = [head, rule]
    for row in rows(device=device):
        line = (f"| {row['workload']} | {row['limit_w']:.0f} | "
                f"{row['predicted_time']:.3f} | {row['measured_time']:.3f} | "
                f"{row['predicted_energy']:.3f} | {row['measured_energy']:.3f} |")
        if power:
            line += f" {row['predicted_power_w']:.0f} | {row['measured_power_w']:.0f} |"
        lines.append(line)
    return lines


__all__ = ["DEVICE", "SWEEPS", "TABLE", "WORKLOADS", "rows", "section"]
