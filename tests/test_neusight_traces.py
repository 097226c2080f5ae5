"""Where hwsim's worst NeuSight labels are lost: each label beside the sum of its own per-op trace.

NeuSight published, beside each end-to-end label, the per-op trace of the same configuration
(sitar-lab/NeuSight 6945927, MIT; ``scripts/asplos/label/<GPU>/<model>-<mode>-<seq>-<batch>.csv``:
one transformer layer plus the ops outside the layers, each op's ``fw_latency`` and
``bw_latency`` in ms). ``tests/data/neusight_trace_sums.csv`` holds, for each of hwsim's 113
labels, the label's forward and backward and the trace's: the layer's ops (from the first op of
a ``layer_0_`` / ``h_0_`` / ``layers_0_`` module to the last, with the residual adds and dropouts
right after it) times the label's ``num_layer``, plus every other op. Validation data: nothing
is fitted on it. Where the label and its own kernels agree, an error of hwsim's is in its
kernel prices; where they do not, the label holds time the kernels do not.
"""
import csv
import statistics
from pathlib import Path

import pytest

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parents[1]
SUMS = ROOT / "tests" / "data" / "neusight_trace_sums.csv"
MI2 = ("AMD_Instinct_MI210", "AMD_Instinct_MI250")


@pytest.fixture(scope="module")
def rows():
    with SUMS.open(newline="") as handle:
        out = list(csv.DictReader(handle))
    for r in out:
        r["fw_x"] = float(r["label_fw_ms"]) / float(r["trace_fw_ms"])
        r["bw_x"] = (float(r["label_bw_ms"]) / float(r["trace_bw_ms"])
                     if float(r["trace_bw_ms"]) > 0 else None)
    return out


@pytest.fixture(scope="module")
def bench():
    return load_module(ROOT / "benchmarks" / "neusight_labels.py", "neusight_labels")


def _key(r):
    return (r["gpu"], r["model"], r["seq_len"], r["batch"])


def test_one_row_per_label(rows, bench):
    """Every training and inference label, with the label's own figures."""
    train = {_key(r): r for r in bench.labels()}
    inference = {_key(r): r for r in bench.labels(bench.INFERENCE_LABELS)}
    assert len(rows) == len(train) + len(inference) == 113
    for r in rows:
        label = (train if r["mode"] == "train" else inference)[_key(r)]
        assert float(r["label_fw_ms"]) == pytest.approx(float(label["fw_ms"]))
        assert r["source"] == label["source"].replace(".json", ".csv")


def test_inference_forwards_sum_to_their_labels_on_the_amd_gpus(rows):
    """On the MI210 and MI250 each inference label is within 8 % of its own ops' sum
    (measured 0.92-1.06)."""
    ratios = [r["fw_x"] for r in rows if r["gpu"] in MI2 and r["mode"] == "inf"]
    assert len(ratios) == 20 and all(0.92 <= x <= 1.08 for x in ratios)


def test_the_amd_training_outliers_are_outside_the_kernels(rows, bench):
    """hwsim's -40 % (gpt2-large batch 4) and -22 % (gpt3-xl) on the MI210 and MI250: the
    label's forward is 2.7x (gpt2-large batch 4) and 1.7x (gpt3-xl) the sum of its own ops,
    its backward 1.06-1.13x. NeuSight's ``measure_e2e`` calls ``torch.cuda.empty_cache()``
    before each timed iteration (``neusight/Tracing/trace.py``), so a training forward
    allocates every activation it saves inside the timed region; a cost per allocated byte
    does not explain it (``test_the_amd_forward_excess_is_not_a_cost_per_allocated_byte``)
    and no cited allocation cost was found, so hwsim does not price it. Against the ops'
    sums hwsim's forward + backward is within 8 % (measured +1.6 to +6.9 %)."""
    big = [r for r in rows if r["gpu"] in MI2 and r["mode"] == "train"
           and (r["model"], r["batch"]) in {("gpt2_large", "4"), ("gpt3_xl", "1")}]
    assert len(big) == 4
    for r in big:
        assert r["fw_x"] >= (2.6 if r["model"] == "gpt2_large" else 1.6)
        assert 1.0 <= r["bw_x"] <= 1.15
        traced = float(r["trace_fw_ms"]) + float(r["trace_bw_ms"])
        predicted = bench.predict_ms(r["model"], r["catalogue"], int(r["seq_len"]),
                                     int(r["batch"]))
        assert abs(predicted / traced - 1) <= 0.08


def _footprint(bench, r):
    """(saved activations, weights + gradients + activations over the device's memory) of a
    training label's forward, from hwsim's memory model: the state of the harness's timed
    forward after its first iteration (``measure_e2e`` keeps the ``.grad`` tensors: no
    optimizer, no ``zero_grad``)."""
    from hardware_specs.loader import load_device

    result = bench.train(r["model"], r["catalogue"], int(r["seq_len"]), int(r["batch"]))
    held = result.memory_breakdown
    total = held["weights"] + held["gradients"] + held["activations"]
    return result.saved_activation_bytes, total / load_device(r["catalogue"]).memory_bytes


def test_the_amd_forward_excess_is_not_a_cost_per_allocated_byte(rows, bench):
    """The emptied cache makes every training forward allocate what it saves from the driver
    (hipMalloc), but the extra time is not a cost per byte so allocated: the two outliers'
    forwards hold 11-14 ms per GB of their saved activations (hwsim's memory model, PyTorch's
    count, tests/test_hf_eager_memory.py: 49.6 GB for gpt2-large batch 4, 39.4 GB for
    gpt3-xl) beyond their ops' sums, while the MI210's and MI250's other training forwards,
    which allocate 3.6-31.2 GB the same way (OPT-1.3B 31.2, GPT-2 large batch 1 12.4,
    BERT-large batch 8 14.5), hold at most 27 ms (OPT-1.3B) and mostly less than their ops'
    sums: at the outliers' rate OPT-1.3B's forward would be ~340 ms over. What sets the two
    apart is how full the 64 GiB are at the peak: weights, the kept gradients and the live
    activations fill 0.86 and 0.94 of it, every other label 0.61 or less (OPT-1.3B; 0.41 or
    less before its clamped scores were counted, 2026-12-06). Fullness alone is not it
    either: the H100's gpt3-2.7B forward fills 0.96 of its 80 GB and equals its ops' sum
    (0.95x). Diagnosis only; nothing priced."""
    mi2 = [r for r in rows if r["gpu"] in MI2 and r["mode"] == "train"]
    assert len(mi2) == 12
    for r in mi2:
        saved, full = _footprint(bench, r)
        excess_ms = float(r["label_fw_ms"]) - float(r["trace_fw_ms"])
        per_gb = excess_ms / (saved / 1e9)
        if (r["model"], r["batch"]) in {("gpt2_large", "4"), ("gpt3_xl", "1")}:
            assert per_gb >= 10 and full >= 0.8
        else:
            assert per_gb <= 2 and full <= 0.62
    h100 = [r for r in rows if r["gpu"] == "NVIDIA_H100_80GB_HBM3" and r["mode"] == "train"
            and r["model"] == "gpt3_27"]
    assert len(h100) == 1 and h100[0]["fw_x"] <= 1.0
    assert _footprint(bench, h100[0])[1] >= 0.9


def _rate_by_length(device: str, peak_flops: float) -> tuple[float, float]:
    """Median fraction of the fp32 peak of a device's fp32 ``torch.nn.Linear`` calls of at
    least 2e11 FLOPs in NeuSight's kernel table (``tests/data/neusight_linear_kernels.csv``,
    each call timed alone: 26 runs back to back, the fastest 5 averaged), for the calls that
    last under 0.1 s and for those that last 1 s or more."""
    with (ROOT / "tests" / "data" / "neusight_linear_kernels.csv").open(newline="") as handle:
        calls = [r for r in csv.DictReader(handle) if r["device"] == device]
    rate = []
    for r in calls:
        flops = 2 * int(r["m"]) * int(r["n"]) * int(r["k"])
        if flops >= 2e11:
            seconds = float(r["time_ms"]) / 1e3
            rate.append((seconds, flops / seconds / peak_flops))
    return (statistics.median(x for s, x in rate if s < 0.1),
            statistics.median(x for s, x in rate if s >= 1.0))


def test_a_gemm_rate_falling_with_the_load_is_not_the_labels_regime(bench):
    """The P4's clocks under load. In NeuSight's kernel table its fp32 GEMMs reach a median
    0.80 of the peak on calls under 0.1 s and 0.43 on calls of 1 s or more (0.62 at
    0.1-0.5 s). Read in collection order (``tests/test_p4_clock.py``, 2026-12-05) that is not
    a rate falling over seconds: the whole table fits a clock held at 0.41 of the peak after
    the first 0.31 s of continuous load (0.84 before), averaged over the fastest 5 of 25 runs,
    and a short call after 30 s of long ones is back at the rested rate. hwsim's power model
    has no such held state, and at the default limit a busy device draws its TDP at the
    reference clock, so it does not slow the P4 there.

    Pricing the labels at the long calls' rate is not a mechanism either: the P100's table
    falls further (0.75 -> 0.25), yet hwsim prices its five inference labels (0.45-2.6 s
    forwards, 25 back to back, as the P4's) within 7 % at its fitted 0.695; at 0.25 they
    would be +150 to +170 % (the V100's, 0.78, +13 to +21 %), while the P4's would come to
    +0.4, -14.3 and +19.7 %. The state a label was taken in is not known, so the P4's labels
    (-13 to -41 %) stay."""
    p4_short, p4_long = _rate_by_length("Tesla P4", 5.5e12)          # p4.toml: 5.5 TFLOP/s
    p100_short, p100_long = _rate_by_length("Tesla P100-PCIE-16GB", 9.3e12)   # 9.3 TFLOP/s
    assert p4_short >= 0.75 and p4_long <= 0.5
    assert p100_short >= 0.7 and p100_long <= 0.3
    p100 = [r for r in bench.labels(bench.INFERENCE_LABELS)
            if r["gpu"] == "Tesla_P100-PCIE-16GB"]
    assert len(p100) == 5
    for r in p100:
        predicted = bench.predict_inference_ms(r["model"], r["catalogue"], int(r["seq_len"]),
                                               int(r["batch"]))
        assert abs(predicted / float(r["fw_ms"]) - 1) <= 0.07


def test_the_p4_labels_are_their_kernels(rows):
    """The P4's inference labels (hwsim -30 to -41 %) equal their ops' sums within 3 %: the
    gap is in the kernels' time. NeuSight's P4 GEMMs in these runs are slower than the same
    sizes in its kernel tables (BERT's 4096 x 4096 x 1024 at 0.29 of the fp32 peak; 0.8-0.88
    in ``tests/data/neusight_linear_kernels.csv``), and the table of its training set
    (``scripts/asplos/data/dataset/train/collect/linear/p2.1.0/Tesla P4.csv``) runs 0.16-0.47:
    the passively cooled card's rate changes between sessions; no figure to model it."""
    ratios = [r["fw_x"] for r in rows if r["gpu"] == "Tesla_P4"]
    assert len(ratios) == 3 and all(0.97 <= x <= 1.03 for x in ratios)


def test_some_labels_and_traces_were_taken_in_different_states(rows):
    """Not every label agrees with its trace: the A100 PCIe 40GB's BERT batch 8/16 and
    gpt2-large batch 4 inference labels are 0.65-0.69 of their ops' sums (hwsim is within
    9 % of the labels), and five of the A100 80GB PCIe's eight training forwards are
    1.37-1.61x theirs (backwards 0.91-1.04x)."""
    a40 = [r["fw_x"] for r in rows if r["gpu"] == "NVIDIA_A100-PCIE-40GB"
           and (r["model"], r["batch"]) in {("bert_large", "8"), ("bert_large", "16"),
                                            ("gpt2_large", "4")}]
    assert len(a40) == 3 and all(x < 0.7 for x in a40)
    a80 = [r for r in rows if r["gpu"] == "NVIDIA_A100_80GB_PCIe"]
    assert sum(r["fw_x"] > 1.3 for r in a80) == 5
    assert all(0.9 <= r["bw_x"] <= 1.05 for r in a80)
