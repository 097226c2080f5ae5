"""Predictions against published many-GPU training throughput (Megatron-LM on Selene).

Rows come from tests/data/published_runs.csv (copied from the project's validation set with
their sources):

- ``megatron21-*``: Narayanan et al. 2021 (arXiv:2104.04473), Table 1, GPT weak scaling on
  A100-SXM4-80GB DGX nodes, mixed fp16, full activation recomputation. The paper's TFLOP/s per
  GPU counts the recomputed forward (96 B s l h^2 (1 + s/6h + V/16lh)), so it is compared with
  hwsim's hardware FLOP/s (HFU x peak). Each run's micro-batch, schedule (layers per virtual
  stage, or plain 1F1B) and data-parallel implementation are those of the paper's own
  reproduction script (``SC21``); Megatron's "local" DDP reduces gradients after the backward,
  PyTorch's ("torch") during it. The 2021 code had neither the asynchronous tensor-parallel
  all-reduce nor fused gradient accumulation (``overlap_tp_comm`` and
  ``fused_grad_accumulation`` False; both came later and are on by default now). Both
  papers' runs clip gradients (Megatron-LM's --clip-grad 1.0, ``grad_clip``).
- ``korthikanti22-*``: Korthikanti et al. 2022 (arXiv:2205.05198), Megatron-LM README table:
  sequence parallelism + selective recomputation, dp = 1, MFU and HFU against the 312 TFLOP/s
  peak. Each run as the paper's Table 3 and sec. 6 give it (``KORTHIKANTI_RUNS``): micro-batch
  4 for the 22B model (global batch 4: one micro-batch), 1 for the others; the interleaved
  schedule with three chunks for 175B and 530B; vocabulary 51,200. The paper's 530B row at
  dp = 8 (2,240 GPUs, "keeping batch size per model instance constant": global batch 2,240,
  gradient all-reduces not overlapped with the backward, sec. 6.3) is held out.
- ``dao-flashattn-*`` and ``dao23-fa2-t1-*`` (held out): one node of 8 A100s running the
  flash-attn repo's GPT training code with fused kernels, FlashAttention (v1) and -2 or
  PyTorch's standard attention (its training/README.md; Dao 2023, Table 1); see
  ``predict_flash``.
- ``smith22-mtnlg-*``: Smith et al. 2022 (arXiv:2201.11990), sec. 2.4, held out: MT-NLG 530B
  (DeepSpeed's pipeline engine + Megatron-LM's tensor slicing, tp 8, pp 35) at a global batch
  of 1,920 on 2,240, 2,800 and 3,360 A100s, TFLOP/s per GPU counting the recomputation.

- ``nemo-*`` (held out): NVIDIA's DGX Cloud benchmarking recipes on H100 SXM (NeMo: GPT-3
  175B and Llama 3.1 70B, bf16 and fp8, weak scaling from 64 or 128 to 2,048 GPUs), each
  as its recipe's configuration gives it; see ``predict_nemo``.

The A100 rows use Megatron's unfused attention (``attention="materialized"``) and the A100
spec without a GPU calibration of its own: matmuls at their cited sustained best-shape GEMM
efficiency (82.4 % of peak), memory-bound ones (attention's scores and context) at the
bandwidth fitted to FlashAttention's A100 timings of Megatron's attention core (44 %, not to
these rows), other ops at the cited 88 % of the memory's bandwidth, NVLink at its cited
application-level 80 %. Predictions still run high (every row); the median error is asserted
under the issue's 10 %; the spread of the error over a 1,000x range of model sizes, MFU < HFU
and the selective-recompute overhead are asserted with their tolerances.
"""
import csv
import dataclasses
import statistics
from functools import lru_cache
from pathlib import Path

import pytest

from hardware_specs.cluster import load_cluster
from hardware_specs.loader import load_device
from simulator import simulate
from simulator.plan.parallel import ParallelPlan
from workloads.zoo import get_workload
from workloads.transformer import TransformerConfig

ROWS = {row["run_id"]: row for row in
        csv.DictReader((Path(__file__).parent / "data" / "published_runs.csv").open())}
MEGATRON = sorted((r for r in ROWS if r.startswith("megatron21-")
                   and not r.startswith("megatron21-t2-")),
                  key=lambda r: float(ROWS[r]["params_B"]))
PTD_P = ["megatron21-t2-PTD-P-174.6B-384", "megatron21-t2-PTD-P-174.6B-1536",
         "megatron21-t2-PTD-P-529.6B-2240"]
ZERO3 = "megatron21-t2-ZeRO-3-174.6B-1536"
KORTHIKANTI = ["korthikanti22-22B", "korthikanti22-175B", "korthikanti22-530B",
               "korthikanti22-1000B"]
KORTHIKANTI_DP = "korthikanti22-530B-2240"
MTNLG = ["smith22-mtnlg-530B-2240", "smith22-mtnlg-530B-2800", "smith22-mtnlg-530B-3360"]
# Korthikanti et al. 2022, Table 3 (micro-batch size) and sec. 6 ("We use the interleaving
# schedule with three interleaving stages for the 175B and 530B models"):
# run_id -> (micro-batch, model chunks per device)
KORTHIKANTI_RUNS = {"korthikanti22-22B": (4, 1), "korthikanti22-175B": (1, 3),
                    "korthikanti22-530B": (1, 3), "korthikanti22-1000B": (1, 1),
                    KORTHIKANTI_DP: (1, 3)}
PEAK_TFLOPS = 312.0   # A100 dense fp16/bf16, the peak both papers use


def _model(row) -> TransformerConfig:
    return TransformerConfig(row["run_id"], int(row["layers"]), int(row["hidden"]),
                             int(row["heads"]), vocab=int(row["vocab"]),
                             seq_len=int(row["seq_len"]))


# The Table 1 runs as the paper's artifact ran them: NVIDIA/Megatron-LM,
# examples/sc21/run_table_1.sh ("Table 1 showing weak-scaling throughput", examples/sc21/
# README.md): run_id -> (--micro-batch-size, --num-layers-per-virtual-pipeline-stage or None for
# plain 1F1B, --DDP-impl). All use --fp16 and --recompute-method uniform (full recomputation).
SC21 = {"megatron21-1.7B": (16, None, "torch"), "megatron21-3.6B": (16, None, "torch"),
        "megatron21-7.5B": (16, None, "torch"), "megatron21-18.4B": (8, None, "torch"),
        "megatron21-39.1B": (4, None, "local"), "megatron21-76.1B": (2, 5, "local"),
        "megatron21-145.6B": (2, 5, "local"), "megatron21-310.1B": (1, 3, "local"),
        "megatron21-529.6B": (1, 1, "local"), "megatron21-1008.0B": (1, None, "local")}


def _chunks(layers: int, pp: int) -> int:
    return next(v for v in range(2, layers + 1) if layers % (pp * v) == 0)


def _megatron21(run_id: str, work: TransformerConfig, dp: int, tp: int,
                pp: int) -> tuple[ParallelPlan, int]:
    """(plan, micro-batch) of a Megatron-LM 2021 run: Table 1's from its script; Table 2's
    PTD-P rows (no script) micro-batch 1, interleaved with the fewest chunks (>= 2)."""
    if run_id in SC21:
        mbs, per_chunk, ddp = SC21[run_id]
        chunks = work.layers // pp // per_chunk if per_chunk else 1
    else:
        mbs, ddp, chunks = 1, "local", _chunks(work.layers, pp)
    # "local" DDP reduced gradients after the backward: overlap came to Megatron-LM's own
    # DDP with --overlap-grad-reduce in 2023-09 (NVIDIA/Megatron-LM issue #391)
    plan = ParallelPlan(dp=dp, tp=tp, pp=pp, overlap_grad_reduce=ddp == "torch",
                        schedule="interleaved" if chunks > 1 else "1f1b",
                        virtual_stages=chunks, overlap_tp_comm=False,
                        fused_grad_accumulation=False)
    return plan, mbs


@lru_cache(maxsize=None)
def predict(run_id: str):
    row = ROWS[run_id]
    dp, tp, pp = int(row["dp"]), int(row["tp"]), int(row["pp"])
    work = _model(row)
    micro_batch = 1
    if run_id == ZERO3:  # DeepSpeed ZeRO-3, no model parallelism, every GPU a replica
        parallel, recompute = ParallelPlan(dp=dp * tp * pp, zero=3), "full"
    elif run_id.startswith("megatron21-"):
        (parallel, micro_batch), recompute = _megatron21(run_id, work, dp, tp, pp), "full"
    elif run_id in MTNLG:   # DeepSpeed's pipeline engine: 1F1B, gradients reduced after the
        # step's micro-batches (its TrainSchedule ends with ReduceGrads), autograd adding each
        # micro-batch's gradients; Megatron-LM's 2021 tensor slicing; micro-batch not given: 1
        parallel = ParallelPlan(dp=dp, tp=tp, pp=pp, overlap_grad_reduce=False,
                                overlap_tp_comm=False, fused_grad_accumulation=False)
        recompute = "full"
    else:
        micro_batch, chunks = KORTHIKANTI_RUNS[run_id]
        parallel = ParallelPlan(dp=dp, tp=tp, pp=pp, sequence_parallel=True,
                                schedule="interleaved" if chunks > 1 else "1f1b",
                                virtual_stages=chunks, overlap_grad_reduce=False)
        recompute = "selective"
    # Megatron-LM clips gradients at norm 1.0 (its default; examples/sc21/CONFIG.sh sets
    # --clip-grad 1.0 --fp16); DeepSpeed's configuration for the ZeRO-3 row is not published
    return simulate(work, "a100-sxm4-80gb", parallel=parallel, micro_batch=micro_batch,
                    global_batch=int(row["global_batch_seqs"]), precision="fp16",
                    recompute=recompute, attention="materialized", grad_clip=run_id != ZERO3)


def measured_and_predicted(run_id: str) -> tuple[float, float]:
    """(measured, predicted) TFLOP/s per GPU, like for like."""
    row, result = ROWS[run_id], predict(run_id)
    if run_id.startswith(("megatron21-", "smith22-")):
        return float(row["tflops_per_device"]), result.hfu * PEAK_TFLOPS
    return float(row["mfu_pct"]) / 100 * PEAK_TFLOPS, result.mfu * PEAK_TFLOPS


def errors(run_ids) -> list[float]:
    return [p / m - 1 for m, p in map(measured_and_predicted, run_ids)]


@pytest.mark.parametrize("run_id", MEGATRON + KORTHIKANTI)
def test_predicted_plans_run_and_fit(run_id):
    """Every measured run fitted in 80 GB; so must its prediction (the 1T row, 64 micro-batches
    in flight on the first stage of 64, is the tightest: 64.4 GB predicted)."""
    result = predict(run_id)
    assert result.num_devices == int(ROWS[run_id]["device_count"])
    assert result.fits, f"{run_id}: {result.peak_memory_bytes / 1e9:.1f} GB per GPU"


def test_megatron_error_is_stable_over_model_sizes():
    """Uncalibrated, every row is off by a similar factor: the spread of predicted /
    measured over the ten rows (1.7B to 1T parameters, 32 to 3,072 GPUs) stays within 30 %
    (measured: 0.98 to 1.06, a spread of 1.08; every row over-predicted, 1.05 to 1.15, before
    the slowest device's pace was priced, simulator.schedule.variability)."""
    ratios = [1 + e for e in errors(MEGATRON)]
    assert max(ratios) / min(ratios) < 1.30


@pytest.mark.parametrize("run_id", KORTHIKANTI)
def test_selective_recompute_overhead_matches_hfu_over_mfu(run_id):
    """HFU / MFU is the selective recomputation's extra FLOPs: measured 1.01-1.05; predicted
    within 5 %."""
    row, result = ROWS[run_id], predict(run_id)
    measured = float(row["hfu_pct"]) / float(row["mfu_pct"])
    assert result.hfu > result.mfu
    assert result.hfu / result.mfu == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("run_id", PTD_P)
def test_table2_ptd_p_rows_within_25_percent(run_id):
    """Narayanan et al. 2021 Table 2 (held out: added after the model was built; the 174.6B
    shape is GPT-3's, the 529.6B Table 1's; no script gives their micro-batch or chunks:
    1 and the fewest chunks): PTD-P at 384, 1,536 and 2,240 GPUs. Measured 153, 141, 159
    TFLOP/s per GPU; predicted +6 %, +9 %, +13 % (tolerance 25 %: the largest Table 1
    error when this check was added, +24.7 %, rounded up)."""
    measured, predicted = measured_and_predicted(run_id)
    assert predicted == pytest.approx(measured, rel=0.25)


def test_korthikanti_data_parallel_row_within_25_percent():
    """Korthikanti et al. 2022 sec. 6.3 (held out: the 530B run at dp = 8 on 2,240 GPUs,
    global batch 2,240, gradient all-reduces after the backward): measured MFU 54.2 %
    (169 TFLOP/s per GPU, 39.15 s per iteration); predicted +14 % (tolerance 25 %, as the
    Table 2 rows)."""
    measured, predicted = measured_and_predicted(KORTHIKANTI_DP)
    assert predicted == pytest.approx(measured, rel=0.25)


# Korthikanti et al. 2022, Table 4: forward and backward time of one transformer layer of the
# 22B model (tp 8, micro-batch 4, s 2048), ms: (recompute, sequence parallel) -> (fwd, bwd).
TABLE4 = {("none", False): (7.7, 11.9), ("none", True): (7.2, 11.8),
          ("full", False): (7.7, 19.5), ("selective", False): (7.7, 13.2),
          ("selective", True): (7.2, 13.1)}


@lru_cache(maxsize=None)
def _layer_ms(recompute: str, sequence_parallel: bool) -> tuple[float, float]:
    """hwsim's forward and backward (recomputation included) time of a middle layer of the
    22B run, from its first op's start to its last op's end."""
    row = ROWS["korthikanti22-22B"]
    result = simulate(_model(row), "a100-sxm4-80gb", micro_batch=4, global_batch=4,
                      parallel=ParallelPlan(tp=8, sequence_parallel=sequence_parallel),
                      precision="fp16", recompute=recompute, attention="materialized",
                      grad_clip=True)
    ops = result.ops[result.ops.layer == int(row["layers"]) // 2]

    def span(phases):
        part = ops[ops.phase.isin(phases)]
        return 1e3 * (part.end_s.max() - part.start_s.min())
    return span(["forward"]), span(["backward", "recompute"])


@pytest.mark.parametrize("config", TABLE4, ids=[f"{r}-sp{int(s)}" for r, s in TABLE4])
def test_korthikanti_table4_layer_times_within_10_percent(config):
    """One layer's forward and backward, five ways (no recomputation, sequence parallel, full
    and selective recomputation, selective + sequence parallel): predicted 4 % fast to 1 % slow
    (tolerance 10 %; 5 to 10 % fast while the attention core's GEMMs streamed their bytes at
    the rate of a copy, 0 to 5 % fast before norms streamed at their measured rate). What the layer model gets from first principles, the published runs'
    end-to-end errors inherit: they are no pipeline or network artefact."""
    measured_f, measured_b = TABLE4[config]
    forward, backward = _layer_ms(*config)
    assert forward == pytest.approx(measured_f, rel=0.10)
    assert backward == pytest.approx(measured_b, rel=0.10)


def test_korthikanti_table4_recompute_overheads():
    """The overheads Table 4 reports, relative to no recomputation (forward + backward):
    full recomputation +39 % (predicted +39 %, tolerance 5 points: more than the naive 33 %
    because its backward all-reduces no longer hide behind weight gradients), selective +7 %
    (predicted +7 %)."""
    base = sum(_layer_ms("none", False))
    full = sum(_layer_ms("full", False)) / base - 1
    selective = sum(_layer_ms("selective", False)) / base - 1
    assert full == pytest.approx(0.39, abs=0.05)
    assert selective == pytest.approx(0.07, abs=0.05)


@pytest.mark.xfail(strict=True, reason="known miss: ZeRO-3 without model parallelism on 1,536 "
                   "GPUs measured 44 TFLOP/s per GPU (DeepSpeed, 2021), predicted ~202 (+359 %) "
                   "with this module's plan (today's ZeRO-3: prefetched, hierarchical gathers "
                   "that hide behind each layer's compute; the 2021 implementation's "
                   "per-parameter fetches did not) and 72 (+65 %) with the validation report's "
                   "--sharding deepspeed-2021")
def test_table2_zero3_row_within_25_percent():
    measured, predicted = measured_and_predicted(ZERO3)
    assert predicted == pytest.approx(measured, rel=0.25)


_MTNLG_MISS = pytest.mark.xfail(strict=True, reason="known miss: MT-NLG 530B (DeepSpeed's "
                                "pipeline engine with Megatron-LM's tensor slicing, 2021) "
                                "measured 113 TFLOP/s per GPU on 3,360 GPUs, predicted +28 % "
                                "(126 and 121 on 2,240 and 2,800: +23, +24 %; +30 to +36 % "
                                "before the slowest device's pace was priced); Narayanan's "
                                "PTD-P run of the same model on 2,240 of the same GPUs measured "
                                "159 (predicted +5 %): each sample's work is priced fast and, at "
                                "micro-batch 1, seconds a step are missing (docs/model.md, the "
                                "MT-NLG paragraph, sizes what was ruled out)")


@pytest.mark.parametrize("run_id", [*MTNLG[:2], pytest.param(MTNLG[2], marks=_MTNLG_MISS)])
def test_mtnlg_rows_within_25_percent(run_id):
    measured, predicted = measured_and_predicted(run_id)
    assert predicted == pytest.approx(measured, rel=0.25)


def test_mtnlg_throughput_per_gpu_falls_with_scale():
    """MT-NLG at a fixed global batch of 1,920 on 2,240, 2,800 and 3,360 GPUs (Smith et al.
    2022, sec. 2.4; held out): more data-parallel replicas leave fewer micro-batches per
    pipeline, so the 1F1B bubble grows (predicted 12, 15, 17 %) and throughput per GPU falls:
    measured 126, 121, 113 TFLOP/s (-4 %, -10 %), predicted -3 %, -6 %. Asserted: it falls at
    each step, and the ratio to the 2,240-GPU run within 10 % of the measured one."""
    measured, predicted = zip(*map(measured_and_predicted, MTNLG))
    assert predicted[0] > predicted[1] > predicted[2]
    for m, p in zip(measured[1:], predicted[1:]):
        assert p / predicted[0] == pytest.approx(m / measured[0], rel=0.10)


def _median_error() -> float:
    return statistics.median(abs(e) for e in errors(MEGATRON + KORTHIKANTI))


def test_tflops_per_gpu_within_10_percent():
    """The issue's goal: median |error| over the 14 rows under 10 % (measured: +7.4 %, every
    row over-predicted, +4 to +14 %), each run configured as its paper ran it (Narayanan's
    script, Korthikanti's Table 3 and sec. 6), matmuls at their cited sustained best-shape GEMM
    efficiency, memory-bound ones at the bandwidth fitted to FlashAttention's A100 timings of
    Megatron's attention core, norms and softmax at NeuSight's measured A100 streaming rate,
    NVLink at its cited application-level 80 %; no constant fitted to these rows. (+8.0 %
    before the norms' own rate, +11.9 % while those GEMMs streamed at the rate of a copy,
    +16.8 % while the A100 SXM's GEMMs ran at the burst MAMF figure.)"""
    assert _median_error() < 0.10


# -- One node, modern kernels: the flash-attn training code (Dao-AILab/flash-attention) --------
# training/README.md's table (FlashAttention v1 era) and the FlashAttention-2 paper's Table 1,
# 8 x A100 80GB SXM4, held out: added after every mechanism they exercise. Each run as the
# repo's configs give it (training/configs/experiment/pile/): DDP (ZeRO-1 optimizer sharding
# from the 760M model up), micro-batch for an 80 GB GPU, bf16 under PyTorch Lightning's autocast
# (fp32 weights and gradients: ``fp32_grads``), gradient clipping 1.0, no recomputation, fused
# dense+bias+gelu and dropout+add+LayerNorm (``fusion="compiled"``). The attention kernel is
# the run's (``attention_kernel``, priced by its kernel benchmarks, simulator.cost.attention):
# FlashAttention-2 (the A100's default) or FlashAttention (v1); "without FlashAttention"
# PyTorch's separate QK^T, softmax, dropout and AV kernels (``attention="materialized"``, eager).
FLASH = sorted((r for r in ROWS if r.startswith("dao-flashattn-")),
               key=lambda r: float(ROWS[r]["params_B"]))
FLASH_T1 = ["dao23-fa2-t1-gpt3-1.3B-2k-noflash", "dao23-fa2-t1-gpt3-1.3B-2k-fa2",
            "dao23-fa2-t1-gpt3-2.7B-2k-noflash", "dao23-fa2-t1-gpt3-2.7B-2k-fa2"]


@lru_cache(maxsize=None)
def predict_flash(run_id: str):
    row = ROWS[run_id]
    hidden = int(row["hidden"])
    work = dataclasses.replace(_model(row), vocab=50264)  # padded to a multiple of 8
    micro = {768: 32, 1024: 16, 1536: 16, 2048: 8, 2560: 4}[hidden]  # the configs, >= 80 GB
    device = load_device("a100-sxm4-80gb")
    attention, fusion, kernel = "fused", "compiled", "auto"
    if run_id.startswith("dao-flashattn-"):
        kernel = "flash-attn-1"
    elif run_id.endswith("noflash"):  # its s x s scores need a smaller micro-batch (not
        # given): the largest power of two that fits in 80 GB (8 and 4 predict 105 and 98 GB)
        attention, fusion, micro = "materialized", "eager", micro // 2
    return simulate(work, device, parallel=ParallelPlan(dp=8, zero=1 if hidden >= 1536 else 0),
                    micro_batch=micro, global_batch=int(row["global_batch_seqs"]),
                    precision="bf16", fp32_grads=True, recompute="none", attention=attention,
                    fusion=fusion, grad_clip=True, attention_kernel=kernel)


def flash_measured_and_predicted(run_id: str) -> tuple[float, float]:
    """(measured, predicted): tokens/s of the node (README rows), model TFLOP/s per GPU
    (Table 1 rows)."""
    row, result = ROWS[run_id], predict_flash(run_id)
    if run_id in FLASH:
        return float(row["tokens_per_s_total"]), result.tokens_per_s
    return float(row["tflops_per_device"]), result.mfu * PEAK_TFLOPS


def test_flash_attention_runs_fit():
    """Every run fitted in 80 GB; so must its prediction (tightest: the 2.7B model without
    FlashAttention at micro-batch 2, 59.0 GB)."""
    for run_id in FLASH + FLASH_T1:
        assert predict_flash(run_id).fits, run_id


def test_flash_attention_rows_median_within_25_percent():
    """Held out, nine rows: the README's five (FlashAttention v1: 125M to 2.7B, measured
    1,310k to 85k tokens/s on the node) predicted +14 to +27 %, Table 1's FlashAttention-2 rows
    (196 and 205 TFLOP/s per GPU) +21 % and +15 %, its rows without FlashAttention (142, 149)
    +13 % and +16 %: every row over-predicted, as every A100 row is uncalibrated; the median,
    +16 %, within the 25 % the held-out PTD-P rows carry."""
    errors_ = [p / m - 1 for m, p in map(flash_measured_and_predicted, FLASH + FLASH_T1)]
    assert all(e > 0 for e in errors_)
    assert statistics.median(errors_) < 0.25


def test_flash_attention_speedup_over_standard_attention_within_10_percent():
    """What FlashAttention-2 buys over PyTorch's standard attention in the same model on the
    same node (Dao 2023, Table 1): measured 1.38x (1.3B) and 1.38x (2.7B); predicted 1.48x and
    1.39x (tolerance 10 %): the s x s scores' memory traffic, its GEMMs' share at the
    bandwidth FlashAttention's A100 timings give them."""
    for model in ("1.3B", "2.7B"):
        (m_base, p_base), (m_fa2, p_fa2) = (flash_measured_and_predicted(
            f"dao23-fa2-t1-gpt3-{model}-2k-{kind}") for kind in ("noflash", "fa2"))
        assert p_fa2 / p_base == pytest.approx(m_fa2 / m_base, rel=0.10)


# -- H100, 2024 software: NVIDIA's DGX Cloud benchmarking recipes (NVIDIA/dgxc-benchmarking) --
# Held out (added after every mechanism they exercise): NeMo's GPT-3 175B (nemo_megatron/
# README_175b.md and gpt3_175b_hydra.yaml at 0b71cfd, NeMo 24.12: 6 virtual stages, the yaml's,
# which the README's table header gives as 12; tests/data/validation_rows.csv's config_source)
# and Llama 3.1 70B (llama3.1/README_70b.md and llama3.1_70b.yaml at 143b90d, NeMo 24.09: the
# recipe's own yaml, not NeMo-Framework-Launcher's), each at 2 sequences per GPU, bf16 (fp32
# master weights, bf16 gradient sync) and fp8 (Transformer Engine), on DGX H100 nodes. Both
# configurations: micro-batch 1, sequence parallelism, the interleaved schedule, the
# distributed optimizer with overlapped gradient and parameter sync (ZeRO-1), tensor-parallel
# communication overlapped (userbuffers), no recomputation, TE's fused attention and fused
# bias/activation/dropout/add kernels (``fusion="compiled"``), gradient clipping 1.0, the
# vocabulary padded to a multiple of 128 x tp. Measured: tokens/s of the whole run (the
# READMEs' step time of the last step). Priced on the system they ran on: DGX H100 nodes
# (``dgx-h100``: one 400 Gb/s NDR NIC per GPU, at the rate NCCL reaches), not the 200 Gb/s
# HDR network ``cluster_for`` builds by default. fp8 runs keep the TE linears' weights in fp8
# (``fp8_params``: GPT-3's yaml line 221, Llama's configure.sh line 122 when FP8; the
# distributed optimizer all-gathers them at 1 byte, simulator.training.fp8).
# model -> (zoo name, tp, pp, cp, virtual stages, sequence length)
NEMO_RUNS = {"gpt3-175b": ("gpt3-175b", 4, 8, 1, 6, 2048),
             "llama3.1-70b": ("llama3-70b", 4, 4, 2, 5, 8192)}


def _nemo_run(run_id: str) -> tuple[str, str, int]:
    """(model, precision, GPUs) of a ``nemo-<model>-<precision>-<GPUs>`` row."""
    model, precision, gpus = run_id.removeprefix("nemo-").rsplit("-", 2)
    return model, precision, int(gpus)


# the dense H100 runs of the performance summary (its MoE rows, on B200 and GB200, are
# validation rows of benchmarks/validation_report.py)
NEMO = [r for r in ROWS if r.startswith("nemo-") and _nemo_run(r)[0] in NEMO_RUNS]


@lru_cache(maxsize=None)
def predict_nemo(run_id: str):
    model, precision, gpus = _nemo_run(run_id)
    name, tp, pp, cp, chunks, seq = NEMO_RUNS[model]
    work = get_workload(name)
    multiple = 128 * tp
    work = dataclasses.replace(work, seq_len=seq, vocab=-(-work.vocab // multiple) * multiple)
    plan = ParallelPlan(dp=gpus // (tp * pp * cp), tp=tp, pp=pp, cp=cp, sequence_parallel=True,
                        zero=1, schedule="interleaved", virtual_stages=chunks)
    cluster = load_cluster("dgx-h100").with_nodes(gpus // 8)
    return simulate(work, cluster, parallel=plan, micro_batch=1,
                    global_batch=int(ROWS[run_id]["global_batch_seqs"]), precision=precision,
                    recompute="none", attention="fused", fusion="compiled", grad_clip=True,
                    fp8_params=precision == "fp8")


def nemo_measured_and_predicted(run_id: str) -> tuple[float, float]:
    """(measured, predicted) tokens/s of the whole run."""
    return float(ROWS[run_id]["tokens_per_s_total"]), predict_nemo(run_id).tokens_per_s


def _nemo(model: str, precision: str) -> list[str]:
    return sorted((r for r in NEMO if _nemo_run(r)[:2] == (model, precision)),
                  key=lambda r: _nemo_run(r)[2])


@pytest.mark.slow
def test_nemo_h100_runs_fit():
    """Every run fitted in 80 GB; so must its prediction (tightest: GPT-3 175B on 128 GPUs,
    61.5 GB: the fewest data-parallel ranks to shard the optimizer over)."""
    for run_id in NEMO:
        assert predict_nemo(run_id).fits, run_id


@pytest.mark.parametrize("model", sorted(NEMO_RUNS))
def test_nemo_h100_bf16_within_15_percent(model):
    """bf16, uncalibrated: GPT-3 175B on 128 to 2,048 H100s predicted -0.7 to +0.0 % at the
    run's 6 virtual stages (-2.4 to -1.7 % at the 12 these rows had before the twelfth
    session; +3.3 to +4.9 % when this was written) (measured 63.1k to 988k tokens/s, 53.5 to
    52.4 % MFU), Llama 3.1 70B on 64 to 2,048 -6.6 to -6.1 % (-0.1 to +1.2 % when this was
    written) (71.2k to 2.25M tokens/s, 54.1 to 53.4 % MFU), within 15 %. These tests' plans
    leave TP-communication and pipeline send overlap off; the validation report's rows set them
    as the runs did. With the H100's GEMMs
    at their burst figure (before matmul_sustained, docs/model.md 'Sustained, not burst') every
    row was over-predicted, +13 to +15 % and +8 to +10 %; on cluster_for's 25 GB/s HDR network,
    not the DGX H100s' 50 GB/s NDR they ran on, they had come out +6 % (both): the slower
    network hid what was optimistic in the node (with an infinitely fast network GPT-3 on 128
    GPUs was +21 %: the network is 7 % of its step)."""
    for run_id in _nemo(model, "bf16"):
        measured, predicted = nemo_measured_and_predicted(run_id)
        assert predicted == pytest.approx(measured, rel=0.15), run_id


_WEAK_MISS = pytest.mark.xfail(strict=True, reason="known miss: GPT-3 175B fp8 from 128 to "
                               "2,048 GPUs measured +5.9 %, predicted +1.5 % on the DGX H100 "
                               "network it ran on (+3.1 % on a 25 GB/s network): what grows "
                               "with scale is not the network's bandwidth")
@pytest.mark.parametrize("model, precision", [
    ("gpt3-175b", "bf16"), pytest.param("gpt3-175b", "fp8", marks=_WEAK_MISS),
    ("llama3.1-70b", "bf16"), ("llama3.1-70b", "fp8")])
def test_nemo_h100_weak_scaling(model, precision):
    """Weak scaling at 2 sequences per GPU: the step grows as the data-parallel groups reach
    over more nodes. From the fewest GPUs to 2,048, bf16 / fp8: GPT-3 measured +2.2 / +5.9 %,
    predicted +1.7 / +1.5 %; Llama measured +1.4 / +3.5 %, predicted +1.9 / +1.7 % (fp8 +1.8
    and +1.9 % before its weights were gathered at 1 byte, fp8_params; tolerance
    2 points; +0.3 / +0.4 and +0.0 / +0.0 % before the slowest of the devices set the pace,
    simulator.schedule.variability: its expected maximum grows from 128 or 64 devices to
    2,048). On a 25 GB/s network with the ring priced as hierarchical phases, whose bytes
    out of a node grow as (k - 1)/k with k nodes, it came out +2.2 / +3.1 and +1.0 / +1.6 %;
    NCCL's flat ring sends (n - 1)/n of the buffer whatever the nodes, and on the 50 GB/s NICs
    the runs had its growth is a few milliseconds: what grows with scale (stragglers, the
    fabric's switch tiers) is not modelled."""
    runs = _nemo(model, precision)
    small, large = (nemo_measured_and_predicted(r) for r in (runs[0], runs[-1]))
    gpus = _nemo_run(runs[-1])[2] / _nemo_run(runs[0])[2]
    measured = gpus * small[0] / large[0]     # step time ratio
    predicted = gpus * small[1] / large[1]
    # more nodes never make the step shorter (Llama's predicted growth is +0.04 %, bf16);
    # how much it grows is the tolerance's
    assert predicted >= 1 - 1e-9
    assert predicted == pytest.approx(measured, abs=0.02)


@pytest.mark.parametrize("model", sorted(NEMO_RUNS))
def test_nemo_h100_fp8_speedup_within_15_percent(model):
    """What fp8 buys over bf16 on the same GPUs: measured 1.48x (GPT-3 175B, 128 GPUs) and
    1.34x (Llama 3.1 70B, 64 GPUs); predicted 1.44x and 1.34x (1.43x and 1.33x before
    fp8_params; tolerance 15 %; 1.52x and 1.45x
    before Transformer Engine's casts and the fp8 GEMM efficiency were priced): only the
    layers' linear GEMMs run in fp8 (attention's core and the output layer stay bf16)."""
    bf16, fp8 = (nemo_measured_and_predicted(_nemo(model, p)[0]) for p in ("bf16", "fp8"))
    assert fp8[1] / bf16[1] == pytest.approx(fp8[0] / bf16[0], rel=0.15)


@pytest.mark.parametrize("model", ["gpt3-175b", "llama3.1-70b"])
def test_nemo_h100_fp8_within_15_percent(model):
    """fp8, uncalibrated: GPT-3 175B on 128 to 2,048 H100s predicted -2.9 to +1.3 %, Llama 3.1
    70B on 64 to 2,048 -7.2 to -4.7 %, within 15 %, with the runs' fp8 weights gathered at 1
    byte (fp8_params; -3.7 to +0.2 and -7.6 to -5.1 % before; -0.6 to +4.4 and -0.6 to +3.4 %
    when this was written) (+7 to +13 % and +6 to +10 % with the
    H100's GEMMs at their burst figure; then on a 25 GB/s network -2 to +1 % and +3 to +6 %;
    before Transformer Engine's casts, fp8
    all-gathers and the H100's measured fp8 GEMM efficiency were priced,
    ``simulator.training.fp8``: +11 to +14 % and +14 to +18 %, Llama a known miss)."""
    for run_id in _nemo(model, "fp8"):
        measured, predicted = nemo_measured_and_predicted(run_id)
        assert predicted == pytest.approx(measured, rel=0.15), run_id
