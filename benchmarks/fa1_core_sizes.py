"""How hwsim's unfused attention core scales with sequence length against the FA1 tables
(diagnosis for issue 20 item 1; nothing is fitted into the specs by this script).

    python benchmarks/fa1_core_sizes.py

Data: Dao et al. 2022 (FlashAttention, arXiv:2205.14135v2) appendix E.6, Megatron-LM's
attention core alone on one A100 40GB, fp16, batch 16, 8 heads of 64, no mask, at 512, 1,024
and 2,048 tokens, with and without dropout (``tests/data/fa1_attention_a100.csv``). hwsim
prices the same core (``simulator.calibrate.attention_core``).

It prints (1) each row's error at the catalogue's figures; (2) how the measured and the
priced time grow per doubling of the sequence; (3) the one size-aware mechanism of the form
``fixed cost per kernel + bytes / (efficiency x bandwidth)`` (Hockney's r_inf / n_1/2)
fitted on two of the three sizes and judged on the third (held out by shape range), with
the GEMMs' ``matmul_memory_efficiency`` and the fixed cost both free and every other op at
the spec's figures; (3b) the same with the fixed cost per wave of output tiles of each
batched GEMM instead of per kernel (128 x 128 tiles over the A100's 108 SMs: the s x s
outputs' tiles grow as s^2, the s x 64 outputs' as s, a cost linear in s for the GEMMs that
loop over k = s); (4) what dropout adds, measured and priced, per size.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardware_specs.loader import load_device  # noqa: E402
from simulator.api import simulate  # noqa: E402
from simulator.calibrate.attention_core import CORE  # noqa: E402
from workloads.transformer import TransformerConfig  # noqa: E402

SIZES = (512, 1024, 2048)
#: The core's GEMMs whose output is s x s (QK^T and its twin in the backward, dP = dO V^T);
#: the others' output is s x 64 (PV, dV, dQ, dK), the depth s.
SQUARE_OUTPUT = ("L0.scores", "dgrad0:L0.context")
TILE, SMS = 128, 108


def features(device) -> dict:
    """Per (seq_len, dropout, pass): the core GEMMs' bytes-bound seconds at efficiency 1,
    the other core ops' seconds as priced, the number of core kernels."""
    out = {}
    for s in SIZES:
        for dropout in (False, True):
            config = TransformerConfig("fa1-bench", 1, 512, 8, vocab=128, seq_len=s,
                                       dropout=dropout, style="encoder", bias=False)
            ops = simulate(config, device, micro_batch=16, precision="fp16",
                           attention="materialized").ops
            core = ops[ops.name.str.split(":").str[-1].isin(CORE)]
            for phase in ("forward", "backward"):
                ops_ = core[core.phase == phase]
                gemm = ops_.kind == "matmul"
                heads = 16 * 8
                waves = sum(math.ceil(heads * (s // TILE) ** (2 if name in SQUARE_OUTPUT else 1)
                                      / SMS) for name in ops_.name[gemm])
                out[(s, dropout, phase)] = (
                    float(ops_.memory_s[gemm].sum()) * device.matmul_memory_efficiency,
                    float(ops_.time_s[~gemm].sum()), len(ops_),
                    float(ops_.time_s.sum()), waves)
    return out


def main() -> None:
    device = load_device("a100-sxm4-40gb")
    rows = list(csv.DictReader((ROOT / "tests" / "data" / "fa1_attention_a100.csv").open()))
    feats = features(device)

    def key(row):
        return int(row["seq_len"]), row["dropout"] == "1", row["pass"]

    measured = {key(r): float(r["megatron_ms"]) * 1e-3 for r in rows}
    print("(1) rows at the catalogue's figures (matmul_memory_efficiency "
          f"{device.matmul_memory_efficiency})")
    for k, m in measured.items():
        print(f"  {k[0]:5d} dropout={int(k[1])} {k[2]:8s} measured {1e3 * m:6.2f} ms  "
              f"priced {1e3 * feats[k][3]:6.3f} ms  {feats[k][3] / m - 1:+6.1%}")
    print("(2) growth per doubling, measured / priced")
    for dropout in (False, True):
        for phase in ("forward", "backward"):
            parts = []
            for a, b in zip(SIZES, SIZES[1:]):
                parts.append(f"{a}->{b}: {measured[(b, dropout, phase)] / measured[(a, dropout, phase)]:.2f}"
                             f" / {feats[(b, dropout, phase)][3] / feats[(a, dropout, phase)][3]:.2f}")
            print(f"  dropout={int(dropout)} {phase:8s} " + ", ".join(parts))

    def held_out_fits(count_at: int, start: list[float], unit: str, digits: int) -> None:
        """``bytes / rate + count x fixed`` fitted on two sizes and judged on the third, the
        count the features' ``count_at``-th (2: kernels, 4: waves of output tiles)."""
        def predict(params, k):
            efficiency, fixed_us = params
            gemm_s, other_s = feats[k][:2]
            return gemm_s / efficiency + other_s + feats[k][count_at] * fixed_us * 1e-6

        def residuals(params, keys):
            return [np.log(predict(params, k) / measured[k]) for k in keys]

        for train in ((1024, 2048), (512, 1024), (512, 2048)):
            keys = [k for k in measured if k[0] in train]
            held = [k for k in measured if k[0] not in train]
            fit = least_squares(residuals, start, args=(keys,),
                                bounds=([0.1, 0.0], [1.0, 200.0]))
            errs = np.expm1(residuals(fit.x, held))
            print(f"  fit on {train}: efficiency {fit.x[0]:.3f}, fixed {fit.x[1]:.{digits}f} "
                  f"us/{unit}; held-out {held[0][0]}: " + " ".join(f"{e:+.1%}" for e in errs))

    print("(3) fixed cost per kernel + bytes / rate, fitted on two sizes, held out the third")
    held_out_fits(2, [0.5, 5.0], "kernel", 1)
    print("(3b) fixed cost per wave of GEMM output tiles + bytes / rate, the same splits")
    held_out_fits(4, [0.5, 1.0], "wave", 2)
    print("(4) what dropout adds, measured / priced (ms)")
    for s in SIZES:
        for phase in ("forward", "backward"):
            m = measured[(s, True, phase)] - measured[(s, False, phase)]
            p = feats[(s, True, phase)][3] - feats[(s, False, phase)][3]
            print(f"  {s:5d} {phase:8s} {1e3 * m:5.2f} / {1e3 * p:5.3f}")


if __name__ == "__main__":
    main()
