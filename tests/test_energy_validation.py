"""hwsim's energy per step against MLPerf Training v4.0's metered node power (issue 25, item 4).

Validation only: nothing in hwsim was fitted on these runs (``benchmarks/energy_validation.py``
says what each side counts). The figures asserted are those of docs/accuracy.md, "Metered
energy (MLPerf Training)", with the tolerances stated there.
"""
from __future__ import annotations

import csv
import statistics

import pytest

from benchmarks import energy_validation as ev

#: The extracted medians (tests/data/mlperf_power.csv): GPT-3 10.636 s and 6,904 W per node,
#: ResNet-50 0.05667 s and 7,097 W.
MEASURED = {"gpt3": (10.636, 6904.0), "resnet": (0.05667, 7097.0),
            # BERT-large: SMC's H100 node 0.09516 s and 6,894 W; Lenovo's B200 node 0.06325 s
            # and 9,790 W (the training time between evaluations over its steps, the power
            # over the same gaps)
            "bert-h100": (0.095159, 6894.2), "bert-b200": (0.063253, 9789.9),
            # ResNet-50 on 8 SMC nodes: 0.010675 s and 5,809 W per node
            "resnet-8node": (0.010675, 5808.5),
            # Llama 2 70B LoRA: one node 3.834 s and 7,179 W; eight nodes 0.6501 s and 5,899 W;
            # Lenovo's B200 node 1.5247 s and 9,600 W
            "lora-1node": (3.8338, 7178.6), "lora-8node": (0.65006, 5899.0),
            "lora-b200": (1.52465, 9599.8)}


def _table():
    with ev.TABLE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_extracted_runs_agree_with_each_other():
    """The metered runs of one benchmark repeat: step times within 1 % and mean node power
    within 3 % of their median (a wrong window, say one including evaluation or idle
    initialisation, would spread them)."""
    table = _table()
    for key in [key for key, _, _ in ev.RUNS.values()] + list(ev.NOT_EXPRESSIBLE):
        rows = [r for r in table if (r["benchmark"], r["system"]) == key]
        assert len(rows) >= 3
        for column, tolerance in (("step_time_s", 0.01), ("node_power_w", 0.03)):
            values = [float(r[column]) for r in rows]
            middle = statistics.median(values)
            assert all(abs(v / middle - 1) <= tolerance for v in values), (key, column, values)


def test_measured_medians():
    got = ev.measured()
    for bench, (step_s, power_w) in MEASURED.items():
        assert got[bench]["step_time_s"] == pytest.approx(step_s, rel=1e-3)
        assert got[bench]["node_power_w"] == pytest.approx(power_w, rel=1e-3)
    # the GPT-3 run spans 64 nodes, each logged
    assert got["gpt3"]["nodes"] == 64


#: The rule asserted of every metered row: its node energy per step lies between hwsim's GPUs
#: alone and its whole node (the GPUs plus the node's other parts at the step's GPU power, the
#: metered machine's preset: smc-h100, lenovo-sr780a-v3; until 2026-12-05 the dgx-h100 and
#: dgx-b200 presets' 2.8 and 6.3 kW maxima, an upper end). Rows where it does not hold, and
#: why (strict: a row that comes back inside flips the xfail).
OUTSIDE_BRACKET = {
    "gpt3": "GPT-3 175B on 64 SMC nodes: hwsim's whole node draws 13.6 % under the meter, its "
            "step 8.2 % short (10.9 % and 4.6 % before Megatron-Core's fused projections, "
            "simulator.training.projections) and its GPUs averaging 601 W where the metered "
            "node's plateau less its other parts at idle leaves 685 W (profile())",
    "lora-1node": "Llama 2 70B LoRA on one SMC node: hwsim's whole node draws 2.0 % under the "
                  "meter since NeMo's fused projections (one linear_qkv GEMM, no input-gradient "
                  "sum: step +11.4 -> +5.4 %, energy +3.2 -> -2.0 %); as for 8 nodes, what "
                  "else the run's step spends is not known",
    "lora-8node": "Llama 2 70B LoRA on 8 SMC nodes: hwsim's whole node draws 1.9 % under the "
                  "meter since its frozen weights are fp8 as the run's (no weight cast per "
                  "step: step -7.2 -> -11.7 %, energy +1.7 -> -3.5 %; -4.5 % with the node's "
                  "rest efficiency and idle; the weights transposed in every backward as the "
                  "run's disable_parameter_transpose_cache: step -9.3 %, energy -1.9 %); "
                  "what else the run's "
                  "step spends (cp 2's attention exchange, fp8 attention's casts) is not known",
    "lora-b200": "Llama 2 70B LoRA on Lenovo's B200 node: hwsim's whole node draws 1.7 % under "
                 "the meter since its fp8 GEMMs run at the measured fp8 MAMF (referred to the "
                 "fp8 reference GEMM, simulator.cost.efficiency: step +2.7 -> -1.1 %, energy "
                 "+2.1 -> -1.7 %); the node's other parts at the step's GPU power are the "
                 "preset's (lenovo-sr780a-v3), not metered apart",
}
#: Issue 25's target, row by row: node energy per step within 15 % of the meter. Rows that
#: miss it, and by how much at this commit (strict xfails; the median is asserted below).
ENERGY_OVER_15 = {
    "resnet-8node": "+18.9 %: step +6.0 % (50 images per GPU, no NormConvolution; the "
                    "node's other parts at 8 x the GPUs' share of a short step)",
    "bert-b200": "+20 %: step +27 % (FlashAttention-2, whose B200 fit runs at 0.4-0.5x "
                 "cuDNN's rate at 512 tokens)",
    "gpt3": "-16.3 %: step -11.1 % since fp8 GEMMs run at the measured fp8 MAMF (-14.0 % and "
            "-8.8 % before); the NeMo GPT-3 175B fp8 rows on H100 are optimistic too "
            "(docs/accuracy.md, fifteenth session)",
}
#: The same 15 % asked of each row's step time; rows that miss it at this commit.
STEP_OVER_15 = {
    "bert-b200": "+27 %: the run's FlashAttention-2 (fp16), whose B200 fit (cudnn-frontend's "
                 "sdpa benchmark) runs at 0.4-0.5x cuDNN's rate at 512 tokens",
    "lora-8node": "-15.1 % since fp8 GEMMs run at the measured fp8 MAMF (-13.8 % before): "
                  "what else the run's step spends (cp 2's attention exchange, fp8 "
                  "attention's casts) is not known",
}


def _marked(known: dict) -> list:
    return [pytest.param(bench, marks=pytest.mark.xfail(strict=True, reason=known[bench]))
            if bench in known else bench for bench in ev.RUNS]


def _row(bench: str) -> dict:
    return next(r for r in ev.rows() if r["benchmark"] == bench)


@pytest.mark.parametrize("bench", _marked(OUTSIDE_BRACKET))
def test_metered_energy_between_gpus_alone_and_node(bench):
    """BERT-large on the H100 node (-15.7 % / +10.9 % at this commit; -14 % / +13.3 % before
    the fused projections), Llama 2 70B LoRA on one SMC node (-22 % / +3.2 % before them) and
    on Lenovo's B200 node (-17.1 % / +2.1 %; -16 % / +3.9 % before them; -23 % / +3.5 % and
    -25 % / +1.7 % on 1 and 8 SMC nodes before their weights were fp8), ResNet-50 on one
    node (-19.3 % / +5.4 %, its NHWC batch norms at the GPU class prior, the median over the
    measured dies: the GA100's 0.791 / 0.842, the backward fitted at the bytes its timed call
    moves; -4.6 % / +24.5 % at hwsim's 5 tensors; +3.1 % / +34.5 %, outside, at the H100's
    row-norm figure) and on 8 nodes (-11.0 % / +18.9 %; +16.9 % / +55.4 % at the row-norm
    figure); -7 % / +22 % under compiled fusion and the row-norm figure, +5.1 % / +58 %
    before its convolutions ran their tile either way round, ``conv_tiles``): the
    meter's node energy per step lies above hwsim's GPUs alone and below its whole node. GPT-3
    175B on 512 H100 (-34 % / +5 % with the dgx-h100 preset's 2.8 kW) left it when its node's
    other parts followed the load (-9.9 %; -10.9 % with their rest efficiency). BERT-large on
    the B200 node left the bracket when its norms went from the cuDNN figure to PyTorch
    eager's, and came back inside (-3.0 % / +20.2 %) with its one QKV GEMM priced as such
    (``projections`` fused), which took Llama 2 70B LoRA on one SMC node out (-26 % / -2.0 %)."""
    row = _row(bench)
    assert row["predicted_gpus_j"] < row["measured_j"] < row["predicted_j"]


@pytest.mark.parametrize("bench", _marked(ENERGY_OVER_15))
def test_metered_energy_within_15_percent(bench):
    row = _row(bench)
    assert row["predicted_j"] == pytest.approx(row["measured_j"], rel=0.15)


@pytest.mark.parametrize("bench", _marked(STEP_OVER_15))
def test_metered_step_within_15_percent(bench):
    """Llama 2 70B LoRA +9.8 % and -11.7 % (tp 4, sequence parallel, fp8, fp8 frozen weights;
    cp 2 on eight nodes; +10.5 % and -7.2 % with 16-bit frozen weights cast each step), +4.6 %
    on Lenovo's B200 node (tp 1, fp8 frozen weights and SwiGLU input),
    GPT-3 -5 % (its own 10 % test below), BERT-large on the H100 node +14 % (attention within
    each packed sample, ``packed_attention``)."""
    row = _row(bench)
    assert row["predicted_step_s"] == pytest.approx(row["measured_step_s"], rel=0.15)


def test_bert_runs_attention_kernels_and_ids_as_submitted():
    """SMC's H100 config leaves USE_FLASH_ATTENTION unset: Transformer Engine's cuDNN fused
    attention. Lenovo's v5.0 config_DGXB200_1x8x48x1_pack.sh sets it (line 20): te_layers.py
    (lines 62, 117, 171-208) then runs flash-attn's varlen FlashAttention-2 in fp16, as hwsim
    now prices it (it priced cuDNN's kernel, +14.6 % on the step; then +44.7 %, +30.5 % with its
    attention within each packed sample, ``packed_attention``, +32.0 % with its norms at
    PyTorch eager's figure). The B200 run
    is v5.0's and Lenovo's, not v4.0 SMC's."""
    kernels = {bench: ev.predicted(bench)[0].device_spec.attention_kernel
               for bench in ("bert-h100", "bert-b200")}
    assert kernels == {"bert-h100": "cudnn", "bert-b200": "flash-attn-2"}
    assert ev.run_id("bert-b200") == "mlperf-v5.0-lenovo-bert-b200"
    assert ev.run_id("bert-h100") == "mlperf-v4.0-smc-bert-h100"


@pytest.mark.xfail(strict=True, reason=(
    "-11.1 % (9.46 s against 10.64 s) since fp8 GEMMs run at the measured fp8 MAMF, referred "
    "to the fp8 reference GEMM (simulator.cost.efficiency; -8.8 % before): as the NeMo GPT-3 "
    "175B fp8 rows on H100, the run's step spends more than hwsim's (docs/accuracy.md, "
    "fifteenth session)"))
def test_gpt3_step_within_10_percent():
    """-4.6 % (10.14 s against 10.64 s) with the slowest of the 512 devices setting the pace
    (simulator.schedule.variability); -10.6 % before it, since the run's TP communication
    overlap and overlapped pipeline messages are priced (+1.8 % before those: a compensating
    error)."""
    row = _row("gpt3")
    assert row["predicted_step_s"] == pytest.approx(row["measured_step_s"], rel=0.10)


def test_metered_energy_within_15_percent_median():
    """Issue 25's target: the median |error| of the metered rows' node energy per step within
    15 %. 8.2 % at this commit (GPT-3 -10.9 %, ResNet-50 +5.4 / +18.9 % with its NHWC batch
    norms at the GPU class prior, BERT-large +13.3 / +24.3 %, Llama 2 70B LoRA +3.2 / -2.1 % on
    SMC's H100s, +3.9 % on Lenovo's B200s; 12.1 % with its batch norms at the H100's row-norm
    figure, ResNet-50 +34.5 / +55.4 %; 14.5 %
    without the B200 LoRA row, with 16-bit frozen weights) since the metered machines'
    presets give their
    nodes' measured idle and conversion loss (smc-h100, lenovo-sr780a-v3); 32.4 % with the
    dgx-h100 and dgx-b200 presets' 2.8 and 6.3 kW drawn throughout."""
    errors = [abs(r["predicted_j"] / r["measured_j"] - 1) for r in ev.rows()]
    assert statistics.median(errors) <= 0.15


def test_metered_power_profile_splits_the_node():
    """What the power logs say about a node's parts (benchmarks/energy_validation.profile;
    analysis, nothing in hwsim set from it). First, checks of the logs alone, not of hwsim: at
    the lowest reading any run on the node type logged (SMC's H100 node 2,055 W, a BERT run's;
    Lenovo's B200 node 2,719 W, a BERT run's) less eight GPUs at their measured idle, the other
    parts draw at most 1,423 / 1,623 W at idle; at the training plateau (90th percentile) less
    eight GPUs at their TDP, at least 1,609-1,719 / 1,885-2,198 W where the GPUs compute flat
    out (GPT-3, one-node LoRA; B200 LoRA, BERT, RetinaNet, Stable Diffusion). The second bound
    lies above the first: the other parts draw at least 186-296 / 262-575 W more while
    training than at that floor (397 W on the B200 node's BERT; or the GPUs exceed their TDP). With only the GPT-3, ResNet and
    LoRA runs the two bounds agreed within 5 % (floors 2,325 / 2,969 W); the BERT runs' nodes
    idle lower. Then hwsim's validation: its average GPU power, ResNet-50 within 10 % of the
    metered node's GPUs (-4.5 % at this commit; +2.5 % against the earlier 2,325 W floor),
    GPT-3 within 20 % (-12 %, -14 % before: more idle and exposed communication in hwsim's
    step), both against the GPUs' share with the other parts at their idle bound."""
    rows = {(r["machine"], r["benchmark"], r["system"]): r for r in ev.profile()}
    flat_out = [("smc-h100", "gpt3", "64xSMC-H100-SXM-80GB"),
                ("smc-h100", "llama2_70b_lora", "1xSMC-H100-SXM-80GB"),
                ("lenovo-b200", "llama2_70b_lora", "SR780aV3-8xB200_SXM_180GB"),
                ("lenovo-b200", "bert", "SR780aV3-8xB200_SXM_180GB"),
                ("lenovo-b200", "retinanet", "SR780aV3-8xB200_SXM_180GB"),
                ("lenovo-b200", "stable_diffusion", "SR780aV3-8xB200_SXM_180GB")]
    for key in flat_out:
        r = rows[key]
        assert r["rest_min_w"] > r["rest_w"] + 150, key
    smc = rows[flat_out[0]]
    assert smc["rest_w"] == pytest.approx(2055 - 8 * 79)
    assert rows[flat_out[2]]["rest_w"] == pytest.approx(2719 - 8 * 137)
    per_gpu = {r["benchmark"]: r["predicted_gpus_w"] / 8 for r in ev.rows()}
    resnet = rows[("smc-h100", "resnet", "1xSMC-H100-SXM-80GB")]
    assert per_gpu["resnet"] == pytest.approx(resnet["gpu_mean_w"], rel=0.10)
    assert per_gpu["gpt3"] == pytest.approx(smc["gpu_mean_w"], rel=0.20)


def test_lora_b200_fits_only_with_the_runs_fp8_weights_and_swiglu_input():
    """Lenovo's B200 LoRA run holds Llama 2 70B on one GPU (tp 1): its frozen linears in fp8
    (fp8_params) and its SwiGLU's input saved in fp8 (FP8_ACT) bring hwsim's peak to 166 GB
    of the 180, where the run's log reports max_memory_usage 168.827 (training_results_v5.0
    0fdc28f Lenovo/results/SR780aV3-8xB200_SXM_180GB/llama2_70b_lora/result_0.txt, unit not
    stated: -1.7 % if GB, -8.5 % if GiB); with either left at 16 bits it does not fit (203 GB
    with fp8 weights alone, 234 GB with the fp8 SwiGLU input alone, 272 GB with neither)."""
    import dataclasses

    from simulator.api import simulate

    result = ev.predicted("lora-b200")[0]
    assert result.fits
    assert result.peak_memory_bytes == pytest.approx(168.827e9, rel=0.10)
    _, base, changes = ev.RUNS["lora-b200"]
    row = dict(next(r for r in ev.vr.load_rows() if r["run_id"] == base))
    row.update(changes, run_id=ev.run_id("lora-b200"))
    for undone in ({"frozen_weights": None}, {"fp8_swiglu_input": False}):
        plan = dataclasses.replace(ev.vr.step_plan(row), **(ev.EXTRA["lora-b200"] | undone))
        parallel = dataclasses.replace(ev.vr.parallel_plan(row), **ev.PARALLEL_EXTRA.get(
            "lora-b200", {}))
        other = simulate(ev.vr.workload(row), ev.vr.hardware(row), plan, parallel=parallel)
        assert not other.fits and other.peak_memory_bytes > 180e9
