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
import importlib.util
from pathlib import Path

import pytest

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
    spec = importlib.util.spec_from_file_location(
        "neusight_labels", ROOT / "benchmarks" / "neusight_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    allocates every activation it saves inside the timed region, which this is consistent
    with; no cited allocation cost was found, so hwsim does not price it. Against the ops'
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
