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


def rows(precision: str = "fp32") -> list[dict]:
    """One row per (workload, power limit): the limit and, relative to the 250 W run, hwsim's
    and Zeus's time and energy per unit of work."""
    from simulator.api import simulate

    with TABLE.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    out = []
    for (dataset, network, batch), (model, plan) in WORKLOADS.items():
        measured = {float(r["power_limit"]): (float(r["time_per_epoch"]),
                                              float(r["average_power"]))
                    for r in table if (r["dataset"], r["network"], int(r["batch_size"]))
                    == (dataset, network, batch)}
        top = max(measured)
        base = None
        for limit in sorted(measured, reverse=True):
            r = simulate(model, DEVICE, precision=precision, power_limit_w=limit, **plan)
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


def section() -> list[str]:
    """The comparison as a markdown table (for docs/accuracy.md)."""
    lines = ["| workload | limit (W) | time, hwsim | time, Zeus | energy, hwsim | energy, Zeus |",
             "|---|---|---|---|---|---|"]
    for row in rows():
        lines.append(f"| {row['workload']} | {row['limit_w']:.0f} | "
                     f"{row['predicted_time']:.3f} | {row['measured_time']:.3f} | "
                     f"{row['predicted_energy']:.3f} | {row['measured_energy']:.3f} |")
    return lines


__all__ = ["DEVICE", "TABLE", "WORKLOADS", "rows", "section"]
