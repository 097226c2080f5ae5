"""hwsim against NeuSight's single-GPU fp32 training and inference labels
(benchmarks/neusight_labels.py).

Validation, never fitted on: the bounds below are regression checks set just above what was
measured on 2026-12-03: median |error| 25.8 % over 37 labels on 7 GPUs at 88dabca, 29.2 % at
5cc5f48 (the host stream and device priors landed between); A100 80GB PCIe 10.1 -> 9.9 %,
V100 PCIe 5.6 -> 6.6 %, H100 12.2 -> 13.6 % (the GPUs whose matmul efficiency is measured); the
AMD GPUs (-46 -> -47 %) and the L4 (-49 -> -50 %) run their fp32 GEMMs at the datasheet peak
with no measurement (issue 20, items 3 and 5). At 198fcd3 the GPUs without a GEMM measurement
(V100, L4, AMD) run at the GPU class prior, 0.770 of the peak (hardware_specs.loader.MATMUL_PRIORS,
the median of ten bf16 tensor-core MAMF/MSMF figures): all 29.2 -> 24.0 %, MI100/MI210/MI250
-49/-47/-47 -> -40/-36/-37 %, L4 -50 -> -43 %, V100 6.6 -> 18.4 % (+18 %: its fp32 SGEMMs on
CUDA cores reach more of their peak than tensor-core GEMMs do of theirs; an fp32 GEMM
measurement of the V100 would replace the prior). With the V100's and T4's GEMMs measured
(DeepBench, simulator.calibrate.gemm: V100 0.848, fp16) the GPU prior is 0.776: all 24.0 ->
21.7 %, V100 18.4 -> 9.5 %, L4 -43 %, AMD -36 to -38 %. A change that moves these figures should
move the bounds with it, in the same commit, saying why.
"""
from __future__ import annotations

import importlib
import math
import statistics
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    # as docs/generate.py imports it (tests/test_docs.py): one module, its predictions priced
    # once per session
    return importlib.import_module("benchmarks.neusight_labels")


@pytest.fixture(scope="module")
def table(bench):
    return bench.rows()


def test_labels_are_neusights_forward_plus_backward(bench):
    """Each label is the sum of its two published timings (``measure_e2e``), comes from a
    train label file of its GPU, and is priced on a catalogue device."""
    from hardware_specs.loader import list_devices

    rows = bench.labels()
    assert len(rows) == 37
    assert len({r["gpu"] for r in rows}) == 7
    for r in rows:
        assert math.isclose(float(r["fw_ms"]) + float(r["bw_ms"]), float(r["e2e_ms"]),
                            abs_tol=2e-4), r
        assert r["source"] == (f"scripts/asplos/label/{r['gpu']}/{r['model']}-train-"
                               f"{r['seq_len']}-{r['batch']}.json")
        assert r["catalogue"] in list_devices()


def test_median_error_regression(bench, table):
    """Median |error| 11.1 % when last measured (21.7 % before NeuSight's fp32 linear kernels
    gave the L4, H100, A100 PCIe, MI100 and MI210 their fp32 GEMM figures; 13.6 % before
    NeuSight's AMD elementwise, layer-norm and softmax kernels gave the MI100 and MI210 their
    streaming figures and the MI250's labels moved to one GCD of it, ``mi250-die``: 11.9 %;
    then the H100's fp32 GEMMs their own kernel's tile and fixed cost, fitted on its small
    fp32 calls (tests/test_fp32_tile.py): H100 7.4 -> 8.4 %, its worst row, BERT-large at
    batch 2, -21.2 -> +9.2 %: 11.1 %; then the models as Hugging Face's eager modules run them,
    the attention's scale and mask and GPT-2's gelu_new as their own kernels
    (``TransformerConfig.hf_eager``, tests/test_hf_eager.py): 10.3 %, bias -10.5 -> -5.2 %):
    at most 12 %; every prediction positive."""
    assert all(r.predicted_ms > 0 and math.isfinite(r.predicted_ms) for r in table)
    assert bench.median_abs_error(table) <= 0.12


@pytest.mark.parametrize("gpu, bound", [("NVIDIA_A100_80GB_PCIe", 0.19),
                                        ("Tesla_V100-PCIE-32GB", 0.11),
                                        ("NVIDIA_H100_80GB_HBM3", 0.10),
                                        ("NVIDIA_L4", 0.12)])
def test_measured_gpus_within_bound(bench, table, gpu, bound):
    """The GPUs with a measured fp32 GEMM efficiency: A100 PCIe 14.4 % (NeuSight's linear
    kernels, 0.929; 10.1 % at its bf16 MSMF 0.827: the measured GEMMs expose a shortfall
    elsewhere), H100 7.9 % (12.2 % at its bf16 0.803; 8.4 % with its fp32 tile,
    tests/test_fp32_tile.py), L4 5.9 % (42.7 % at the GPU prior 0.776), V100 (its DeepBench
    fp32 figure, 8.8 %; 18.4 % on the GPU class prior, 6.6 % at its datasheet peak). With the
    Hugging Face eager kernels (hf_eager): A100 9.7 %, V100 8.1 %, H100 3.3 %, L4 7.4 -> 21.8 %
    (+14 to +50 %, slow: NeuSight's L4 linear calls of 1e10-1e11 FLOPs, the labels' GEMM
    sizes, are priced 6-12 % slow by its fp32 figure 0.299, fitted on GEMMs of 2e11 and more
    that run long on the 72 W card; the extra kernels had hidden that). With cuBLAS's narrower
    fp32 tiles (tests/test_fp32_tiles.py) the A100 80GB PCIe goes 9.7 -> 17.3 % (7 of its 8
    labels priced fast); with their load cost fitted at the T4's and V100's shipped
    efficiencies (8 -> 6), A100 80GB PCIe 17.3 -> 18.6 %, L4 12.0 -> 11.6 %, V100 5.6 -> 5.0 %. On its own bert-large batch 2 trace (NeuSight's per-op latencies) a
    layer's six linears' forward goes from +18.2 to -5.6 % and their backward from +28.5 to
    +5.0 %, while the whole step against the trace's sum goes +5.3 -> -11.2 %: the linears are
    priced closer and had hidden a shortfall in the rest of the step (its attention products
    run slower than their 128 x 128 tiles: QK^T's forward 0.125 ms against hwsim's 0.066; the
    labels are also 1.37-1.61x their traces on 5 of 8, tests/test_neusight_traces.py). With
    the L4's fp32 split-k (tests/test_fp32_split_k.py, 2026-12-05) the L4 12.7 -> 10.5 %
    (BERT-large batch 2 +23.1 -> +16.3 %): at most 12 %, where it was 25 %."""
    mine = [r for r in table if r.gpu == gpu]
    assert mine and bench.median_abs_error(mine) <= bound


def test_amd_gpus_are_optimistic(table):
    """The AMD GPUs, with their fp32 GEMMs measured (NeuSight: MI100 0.653, MI210 0.628; the
    MI250's labels priced on one GCD, ``mi250-die``, which carries the MI210's figures), are
    still predicted fast, never slow (medians -23.5 to -30.0 %, from -35.5 to -38.0 % at the
    GPU prior; -18.3 to -26.2 % with their measured streaming rates, norms and softmax at 0.36
    and 0.44 of the bandwidth): something else than the kernels NeuSight timed is missing
    there. The two worst (the MI210's and MI250's gpt2-large batch-4 and gpt3-xl rows, -48 and
    -26 to -28 %; -40 and -20 to -22 % with hf_eager, where the MI100's and the others' medians
    are -15.2 and -10.1 to -10.4 %) have forwards as long as or longer than their backwards
    (1.12 s against 0.73 s for gpt2-large), where every other label's forward is about half
    its backward; the per-op trace NeuSight published beside the gpt2-large label (its .csv:
    one layer and the head) adds up to about 0.43 s of forward over 36 layers."""
    for gpu in ("AMD_Instinct_MI100", "AMD_Instinct_MI210", "AMD_Instinct_MI250"):
        assert statistics.median(r.error for r in table if r.gpu == gpu) < 0


@pytest.fixture(scope="module")
def inference(bench):
    return bench.inference_rows()


def test_inference_labels_are_neusights_forward_timings(bench):
    """76 inference labels (every non-fusion ``-inf-`` label of the five models with a config)
    on 10 GPUs, each from its GPU's label file, priced on a catalogue device."""
    from hardware_specs.loader import list_devices

    rows = bench.labels(bench.INFERENCE_LABELS)
    assert len(rows) == 76
    assert len({r["gpu"] for r in rows}) == 10
    for r in rows:
        assert r["source"] == (f"scripts/asplos/label/{r['gpu']}/{r['model']}-inf-"
                               f"{r['seq_len']}-{r['batch']}.json")
        assert r["catalogue"] in list_devices() and float(r["fw_ms"]) > 0


def test_inference_is_the_forward_without_loss_dropout_or_mlm_head(bench):
    """The priced inference is the training graph's forward up to its head, without dropout:
    for BERT-large (a sequence classifier under eval) it ends before the training forward's
    masked-LM head starts, and is shorter than the same forward with dropout on; for GPT-2
    large (a causal LM) it includes the LM head, ending after the training forward's last
    layer, before its loss; and it is under half the training label's forward + backward."""
    import dataclasses

    import numpy as np

    from simulator.api import simulate
    from simulator.graph.op import Phase

    def forward_ends(model, dropout):
        work = dataclasses.replace(bench.workload(model), dropout=dropout,
                                   attention_dropout=dropout)
        r = simulate(work, "h100-sxm5-80gb", micro_batch=4, seq_len=512, precision="fp32",
                     attention="materialized", optimizer="sgd")
        names, end = r.lowered.names, r.times["end_s"]
        fwd = np.flatnonzero(r.lowered.phase == Phase.FORWARD)
        return {names[i]: end[i] * 1e3 for i in fwd}

    bert = bench.predict_inference_ms("bert_large", "h100-sxm5-80gb", 512, 4)
    trained = forward_ends("bert_large", False)
    assert bert < trained["lm_head"] and bert <= trained["mlm_dense"]
    with_dropout = forward_ends("bert_large", True)
    assert bert < max(t for n, t in with_dropout.items() if n.startswith("L23."))
    gpt = bench.predict_inference_ms("gpt2_large", "h100-sxm5-80gb", 512, 4)
    decoder = forward_ends("gpt2_large", False)
    assert max(t for n, t in decoder.items() if n.startswith("L35.")) < gpt
    assert gpt == pytest.approx(max(t for n, t in decoder.items() if not n.startswith("loss")))
    assert gpt < bench.predict_ms("gpt2_large", "h100-sxm5-80gb", 512, 4) / 2


def test_inference_median_error_regression(inference, bench):
    """Median |error| 4.9 % over the 76 inference labels on 10 GPUs when first measured
    (2026-12-04, e548c36 + this change; bias +1.5 %): at most 6 %."""
    assert all(r.predicted_ms > 0 and math.isfinite(r.predicted_ms) for r in inference)
    assert bench.median_abs_error(inference) <= 0.06


def test_labels_cover_nine_gpus_at_ten_percent(bench, table, inference, distributed):
    """Issue 20's first target, its median part: NeuSight's labels on at least 9 GPUs with a
    median |error| of at most 10 %: 11 GPUs, 5.6 % over 113 labels when first measured;
    8 GPUs have their own median within 10 % (the T4 10.6 %, the L4 14.5 %, the P4 30.4 %).
    Since cuBLAS's narrower fp32 tiles (tests/test_fp32_tiles.py) 7: the A100 80GB PCIe's
    linears are priced closer on its own traces and its median goes 9.7 -> 17.3 % (see
    test_measured_gpus_within_bound); the L4 13.1 %, all 113 labels 5.6 %. Since the T4's and
    V100's batched GEMMs run cuBLAS's narrower tiles too (tests/test_fp32_batched_tiles.py) 8:
    the T4 10.6 -> 5.2 %, the V100 6.2 -> 2.6 %, all 113 labels 5.0 % (2026-12-04). With the
    11 multi-GPU training labels (2026-12-06) the A100 SXM4 40GB, which has no single-GPU
    label, is a twelfth GPU and the ninth within 10 % (its three labels 2.0 %), and 124 labels
    are 4.9 %."""
    every = table + inference + distributed
    assert len({r.gpu for r in every}) >= 9
    assert bench.median_abs_error(every) <= 0.10
    within = [g for g in {r.gpu for r in every}
              if bench.median_abs_error([r for r in every if r.gpu == g]) <= 0.10]
    assert len(within) >= 9 and "NVIDIA_A100-SXM4-40GB" in within


@pytest.mark.xfail(strict=True, reason="issue 20: none worse than 25 % is not met: "
                   "the MI210's and MI250's gpt2-large/gpt3-xl training "
                   "labels (-40 %) and the P4's inference labels (-30 to -41 %); diagnosed "
                   "on NeuSight's per-op traces, no cited mechanism (docstring)")
def test_no_label_worse_than_25_percent(table, inference):
    """Diagnosis on NeuSight's per-op trace of each label (``tests/test_neusight_traces.py``).
    MI210/MI250 gpt2-large batch 4 and gpt3-xl: the label's forward is 2.7x and 1.7x the sum
    of its own ops (backward 1.06-1.13x, inference forwards 0.92-1.06x), and hwsim is within
    7 % of the ops' sums: time outside the kernels. ``measure_e2e`` empties the allocator's
    cache before each timed iteration, but a cost per byte allocated cold does not explain it
    (the other training forwards allocate 4-18 GB the same way and sit at their ops' sums;
    the two outliers fill 0.81-0.91 of the 64 GiB); no cited mechanism, so not priced. P4: the
    labels equal their ops' sums (1.00-1.02x); its GEMMs ran at 0.29-0.68 of the fp32 peak
    there, 0.8-0.88 for the same sizes in NeuSight's kernel table and 0.16-0.47 in its
    training-set table, and in the kernel table the rate falls with the call's length (0.80
    under 0.1 s, 0.43 over 1 s): a clock held at about half the rested rate after 0.3 s of
    continuous load, which the P100's table shows too while its labels run at its rested rate,
    so not a figure for a run (``tests/test_p4_clock.py``, ``tests/test_neusight_traces.py``).
    L4 (gpt3-xl inference +22.8 %, +25.0 % before the L4's fp32 split-k; the T4's BERT batch
    8, +24.3 % since its batched GEMMs run narrower tiles, is the worst NVIDIA label): the
    label's own trace
    (``NVIDIA_L4/gpt3_xl-inf-2048-2.csv``)
    ran its GEMMs at 12.6-16.0 TFLOP/s (fc1 4096 x 12288 x 3072 in 23.7 ms, the output
    projection 4096 x 3072 x 3072 in 4.8 ms: 0.42-0.53 of the 30.3 TFLOP/s fp32 peak),
    where none of the L4's 1,040 fp32 Linear calls of NeuSight's kernel table exceeds 12.4
    (median 8.9 over its 755 calls of 5e10 FLOPs and more, which the spec's 0.298 is fitted
    on): the label was measured in a faster state of the 72 W card than the kernel table,
    and no kernel-level figure reaches it."""
    assert max(abs(r.error) for r in table + inference) <= 0.25


def test_markdown_has_a_line_per_label_and_per_gpu(bench, table, inference, distributed):
    lines = bench.markdown_lines(table, inference, distributed)
    train = 2 + len(table) + 1 + 2 + 7 + 1
    infer = 2 + len(inference) + 1 + 2 + 10 + 1
    multi = 2 + len(distributed) + 1 + 2 + 2 + 1
    assert len(lines) == 2 + train + 3 + infer + 3 + multi + 3 + 2 + 12 + 1
    assert lines[-1].startswith("| all | 124 |")
    assert any(line.startswith("| NVIDIA A100-SXM4-40GB | 3 |") for line in lines[-14:])


# ---------------------------------------------------------------- multi-GPU training labels

@pytest.fixture(scope="module")
def distributed(bench):
    return bench.distributed_rows()


def test_distributed_labels_are_neusights_four_gpu_runs(bench):
    """The 11 labels of NeuSight's ``summary/distributed.csv`` (its A100x4 and H100x4 measured
    latencies and its own predictions, 452.3 / 510.5 ms the A100's dp4), each from its
    label file, on four GPUs, one kind of parallelism each as its name says."""
    from hardware_specs.loader import list_devices

    rows = bench.labels(bench.DISTRIBUTED_LABELS)
    assert len(rows) == 11
    assert {r["gpu"] for r in rows} == {"NVIDIA_A100-SXM4-40GB", "NVIDIA_H100_80GB_HBM3"}
    for r in rows:
        dp, tp, pp, m = (int(r[k]) for k in ("dp", "tp", "pp", "micro_batches"))
        assert dp * tp * pp == 4 and m == 1
        assert r["plan"] == ("dp4" if dp == 4 else "tp4" if tp == 4 else "pp4_1")
        assert r["source"] == (f"scripts/asplos/label/{r['gpu']}/{r['model']}-train-"
                               f"{r['seq_len']}-{r['global_batch']}-{r['plan']}.json")
        assert r["catalogue"] in list_devices()
    a100 = {r["plan"]: (float(r["e2e_ms"]), float(r["neusight_ms"]))
            for r in rows if r["gpu"] == "NVIDIA_A100-SXM4-40GB"}
    assert {k: (round(x, 1), round(y, 1)) for k, (x, y) in a100.items()} == {
        "dp4": (452.3, 510.5), "tp4": (484.9, 525.6), "pp4_1": (1597.6, 1761.6)}


def test_distributed_median_error_regression(bench, distributed):
    """Validation, never fitted on. When first priced (2026-12-06, the pipeline bubble of
    unlike stages and the fp32 mask kernel in): median |error| 5.5 % over the 11 labels,
    bias -3.5 % (NeuSight's own 8.4 %); the A100 SXM4 40GB 2.0 % over its three (dp4 +17.0 %,
    pp4_1 +2.0 %, tp4 -1.5 %), the H100 6.5 % (tp4 -7.5 to -11.0 %, pp4_1 -3.5 to -5.5 %, dp4
    -1.5 and +9.4 %), none worse than 17.0 %: bounds just above those."""
    assert all(r.predicted_ms > 0 and math.isfinite(r.predicted_ms) for r in distributed)
    assert bench.median_abs_error(distributed) <= 0.065
    a100 = [r for r in distributed if r.gpu == "NVIDIA_A100-SXM4-40GB"]
    assert len(a100) == 3 and bench.median_abs_error(a100) <= 0.03
    assert max(abs(r.error) for r in distributed) <= 0.18


def test_one_micro_batch_pipeline_is_one_gpus_step(bench):
    """pp4_1 in closed form: with one micro-batch the four stages run one after another
    (every forward, then every backward), so the step is one GPU's forward + backward of the
    whole model (``micro_batch_s`` of the same plan on one device) plus the pipeline's sends
    and the last stage's update: within 1 % of it and above it, before the wait for the
    slowest of the four devices (``rank_variability``'s factor). The form it replaced, four
    times the slowest stage (the head's), was 21 % above."""
    from simulator.api import simulate

    kw = dict(seq_len=1024, micro_batch=4, global_batch=4, precision="fp32",
              attention="materialized", optimizer="adamw", optimizer_impl="fused",
              grad_clip=True, overlap_grad_reduce=False, sharding="megatron")
    work = bench.megatron_workload("gpt2_large", 1)
    one = simulate(work, "h100-sxm5-80gb", **kw).parallel["micro_batch_s"]
    piped = simulate(work, "h100-sxm5-80gb", num_devices=4, pp=4, **kw)
    step = piped.step_time_s / piped.parallel["rank_variability"]["step_factor"]
    assert one < step < 1.01 * one
    assert 4 * piped.parallel["micro_batch_s"] > 1.15 * step


def test_megatron_model_pads_the_vocabulary_and_runs_the_mask_alone(bench):
    """Megatron-LM's GPT from the config: 50,257 words padded to 50,304 (128) at tp 1 and
    50,688 (512) at tp 4; the mask its own kernel over the scores (fp32 has no fused
    scale-mask-softmax), the scale not (it is in the score GEMM), GELU one kernel."""
    one, four = bench.megatron_workload("gpt2_large", 1), bench.megatron_workload("gpt2_large", 4)
    assert (one.vocab, four.vocab) == (50304, 50688)
    names = [n.split(".")[-1] for n in one.forward_graph(1).names()]
    assert names.count("attn_mask") == one.layers and "attn_scale" not in names
    assert not any(n.startswith("gelu_") for n in names)


def test_launched_training_runs_fit_where_they_ran(bench, table):
    """Memory, validated: of the training runs NeuSight's label scripts launched on the seven
    GPUs with a training label (``LAUNCHED_TRAIN``; a run without a label ran out of memory),
    hwsim puts the peak (weights, gradients, live tensors; no optimizer, as the harness runs
    none) under the GPU's memory for each of the 37 that ran and over it for each of the 33
    that did not. Measured 2026-12-06: those that ran at most 0.957 of it (H100 and A100 80GB,
    gpt3_27 batch 1), those that did not at least 1.087 (MI210 and MI250, opt_13 batch 2).
    Before the eager modules' memory was counted as PyTorch's (tests/test_hf_eager_memory.py)
    the four OPT runs without a label on the MI100, V100, MI210 and MI250 came out at 0.70-0.86."""
    fits = bench.launched_fits()
    assert len(fits) == 70 and sum(fit.labelled for fit in fits) == 37
    for fit in fits:
        assert (fit.fraction < 1) == fit.labelled, fit
    assert max(fit.fraction for fit in fits if fit.labelled) < 0.96
    assert min(fit.fraction for fit in fits if not fit.labelled) > 1.08
