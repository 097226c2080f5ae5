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
            # BERT-large: SMC's H100 node 0.09516 s and 6,848 W; Lenovo's B200 node 0.06325 s
            # and 9,790 W (the training time between evaluations over its steps)
            "bert-h100": (0.095159, 6847.7), "bert-b200": (0.063253, 9790.3),
            # ResNet-50 on 8 SMC nodes: 0.010675 s and 5,809 W per node
            "resnet-8node": (0.010675, 5808.5),
            # Llama 2 70B LoRA: one node 3.834 s and 7,179 W; eight nodes 0.6501 s and 5,899 W
            "lora-1node": (3.8338, 7178.6), "lora-8node": (0.65006, 5899.0)}


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


def test_gpt3_node_energy_bracketed():
    """GPT-3 175B on 512 H100 (the row whose configuration hwsim expresses fully): the metered
    node energy per step lies between hwsim's GPUs alone (-35 %) and its GPUs plus the
    dgx-h100 preset's node overhead: +1.4 % at this commit, with the overhead from an 8 x
    H100 node's measured maximum (8.4 kW, Latif et al. 2025, less 8 x 700 W: 2.8 kW); +8.3 %
    before the run's TP communication overlap and overlapped pipeline messages were priced
    (ParallelPlan.tp_comm_overlap, overlap_p2p_comm: its step then 10.83 s, now 9.51 s);
    +24.7 % with the datasheet's rating (10.2 kW: 4.6 kW), the overhead before (+34.8 % at the
    10.83 s step)."""
    row = next(r for r in ev.rows() if r["benchmark"] == "gpt3")
    assert row["predicted_gpus_j"] < row["measured_j"] < row["predicted_j"]
    assert row["predicted_j"] / row["measured_j"] - 1 == pytest.approx(0.014, abs=0.05)


def test_gpt3_step_within_10_percent():
    """-5.9 % (10.01 s against 10.64 s) with the slowest of the 512 devices setting the pace
    (simulator.schedule.variability); -10.6 % before it, since the run's TP communication
    overlap and overlapped pipeline messages are priced (+1.8 % before those: a compensating
    error)."""
    row = next(r for r in ev.rows() if r["benchmark"] == "gpt3")
    assert row["predicted_step_s"] == pytest.approx(row["measured_step_s"], rel=0.10)


@pytest.mark.parametrize("bench", ["lora-1node", "lora-8node"])
def test_llama2_70b_lora_step_within_15_percent_and_energy_bracketed(bench):
    """Llama 2 70B LoRA on 1 and 8 SMC nodes (tp 4, sequence parallel, fp8; cp 2 on eight),
    expressed from the submission's configs (benchmarks/energy_validation.RUNS): step +11.0 %
    and -6.9 % at this commit; the metered node energy between hwsim's GPUs alone (-22 %,
    -24 %) and its GPUs plus the dgx-h100 node overhead (+21 %, +20 %: SMC's immersion-cooled
    node draws less besides its GPUs, at most 1,693 W at its floor, profile())."""
    row = next(r for r in ev.rows() if r["benchmark"] == bench)
    assert row["predicted_step_s"] == pytest.approx(row["measured_step_s"], rel=0.15)
    assert row["predicted_gpus_j"] < row["measured_j"] < row["predicted_j"]


@pytest.mark.parametrize("bench, step_error", [("bert-h100", 0.178), ("bert-b200", 0.141)])
def test_bert_energy_bracketed_and_step_error_pinned(bench, step_error):
    """BERT-large (MLPerf phase 2, 8 GPUs data parallel, fp8 encoder, CUDA graphs), as NVIDIA's
    MLPerf code configured it (benchmarks/energy_validation.RUNS): the metered node energy lies
    between hwsim's GPUs alone (-10.2 % H100, -14.2 % B200 at 1,000 W) and its GPUs plus the
    node preset's overhead (+37.9 %, +59.2 %: dgx-h100's measured 2.8 kW, dgx-b200's rated
    6.3 kW). The step is slow, +17.8 % and +14.1 % at this commit (+26.9 % and +22.0 % before
    the MLM head ran on the masked 15 % alone, TransformerConfig.mlm_share), pinned within 5
    points: the run's block-diagonal attention over packed samples and its fp8 attention are
    not expressed (docs/accuracy.md, 'Metered energy')."""
    row = next(r for r in ev.rows() if r["benchmark"] == bench)
    assert row["predicted_gpus_j"] < row["measured_j"] < row["predicted_j"]
    assert row["predicted_step_s"] / row["measured_step_s"] - 1 == pytest.approx(step_error,
                                                                                abs=0.05)


def test_resnet_8node_step_error_pinned():
    """ResNet-50 on 8 SMC nodes (50 images per GPU, NHWC, batch norm fused with its ReLU and
    residual add, CUDA graphs; no NormConvolution, the submission's resnet-v1b-fl network): the
    step is +27.3 % at this commit, pinned within 5 points, and even hwsim's GPUs alone draw
    more energy per step than the metered node (+8.7 %; with the dgx-h100 overhead +70 %): the
    node's other parts cannot be placed under the GPUs' share while the step is that slow."""
    row = next(r for r in ev.rows() if r["benchmark"] == "resnet-8node")
    assert row["predicted_step_s"] / row["measured_step_s"] - 1 == pytest.approx(0.273, abs=0.05)
    assert row["measured_j"] < row["predicted_gpus_j"] < row["predicted_j"]


@pytest.mark.xfail(strict=True, reason="issue 25's target is not met: node energy per step "
                   "+4.1 % (GPT-3), +21 % and +20 % (Llama 2 70B LoRA, 1 and 8 nodes) but "
                   "+45 % and +70 % (ResNet-50 on 1 and 8 nodes: hwsim's steps 1.25x and 1.27x "
                   "the MLPerf MXNet runs'), +38 % and +59 % (BERT-large on the H100 and B200 "
                   "nodes: steps 1.18x and 1.14x, node overheads 2.8 and 6.3 kW); median 38 %")
def test_metered_energy_within_15_percent_median():
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
