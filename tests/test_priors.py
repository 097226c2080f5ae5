"""Devices with no measurement run on documented class priors, never at the datasheet peak
(issue 20, item 3): hardware_specs.loader.MATMUL_PRIORS, simulator.cost.status."""
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hardware_specs.loader import (CROSS_CLASS_PRIORS, GPU_PRIORS, MATMUL_PRIORS,
                                   MEASURED_CLASSES, SHARED_LANE_VECTOR_PRIOR, VECTOR_PRIORS,
                                   class_priors, list_devices, load_device)
from hardware_specs.spec import DeviceClass
from hardware_specs.writer import device_toml
from simulator import simulate
from simulator.cost.status import (CROSS_CLASS, UNMEASURED_CLASS, calibration_status,
                                   priors_note, stream_note)

DEVICES = Path(__file__).resolve().parents[1] / "hardware_specs" / "devices"


def _cited(field: str = "matmul_efficiency") -> dict[str, list[float]]:
    """``field`` of every catalogue file that cites one, by class."""
    out: dict[str, list[float]] = {}
    for path in sorted(DEVICES.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        if field in doc["compute"]:
            out.setdefault(doc["class"], []).append(doc["compute"][field])
    return out


def test_the_gemm_priors_are_the_class_medians_of_the_cited_measurements():
    cited = _cited()
    for device_class, prior in MATMUL_PRIORS.items():
        assert prior == pytest.approx(statistics.median(cited[device_class.value]),
                                      abs=5e-4), device_class
    assert set(MATMUL_PRIORS) == {DeviceClass(c) for c in cited}   # measured classes only


@pytest.mark.parametrize("field", sorted(CROSS_CLASS_PRIORS))
def test_the_cross_class_priors_are_the_medians_over_every_measured_device(field):
    """A class with no measured member takes, per op class, the median over every catalogue
    file that cites a measurement of it, whatever its class (issue 20, item 3)."""
    everything = [e for values in _cited(field).values() for e in values]
    assert len(everything) >= 3
    assert CROSS_CLASS_PRIORS[field] == pytest.approx(statistics.median(everything), abs=5e-4)
    assert CROSS_CLASS_PRIORS[field] < 1.0


@pytest.mark.parametrize("name", sorted(list_devices()))
def test_no_device_runs_gemms_at_its_peak_without_a_measurement(name):
    spec = load_device(name)
    status = calibration_status(spec)
    assert spec.matmul_efficiency < 1.0
    if "matmul_efficiency" not in spec.priors:
        assert status["gemm"] == "measured"
        return
    assert status["gemm"] == ("prior" if spec.device_class in MATMUL_PRIORS else CROSS_CLASS)
    if status["gemm"] == "prior":
        assert spec.matmul_efficiency == MATMUL_PRIORS[spec.device_class]
    else:
        assert spec.matmul_efficiency == CROSS_CLASS_PRIORS["matmul_efficiency"]
    written = [line.split(" =")[0] for line in device_toml(spec).splitlines()]
    assert "matmul_efficiency" not in written   # a prior is not a fact to write (a
    #                                             measured fp32_matmul_efficiency is)


def test_the_status_of_each_op_class():
    assert calibration_status(load_device("a100-sxm4-80gb")) == {
        "gemm": "measured", "conv": "measured", "attention": "kernel fit",
        "stream": "measured", "norm": "measured", "batch-norm": "measured",
        "compiled-norm": "as norm",
        "vector": "measured"}
    assert calibration_status(load_device("v100-sxm2-32gb"))["conv"] == "measured"
    assert calibration_status(load_device("h100-sxm5-80gb"))["conv"] == "as gemm"
    l4 = calibration_status(load_device("l4"))
    assert (l4["gemm"], l4["attention"], l4["stream"]) == ("prior", "as gemm", "measured")
    h100 = calibration_status(load_device("h100-pcie-80gb"))
    assert (h100["gemm"], h100["attention"], h100["stream"], h100["norm"]) == (
        "prior", "kernel fit", "prior", "prior")
    assert calibration_status(load_device("xeon-8380"))["gemm"] == CROSS_CLASS


def test_predictions_say_which_priors_they_ran_on():
    result = simulate("gpt2-small", "h100-pcie-80gb", micro_batch=1)
    note = next(n for n in result.notes if n.endswith("(priors)"))
    assert note == priors_note(load_device("h100-pcie-80gb"), batch_norms=False)
    assert "GEMMs run at 78.7% of its peak, the median measured on other GPUs" in note
    assert "memory-bound kernels stream at the medians measured on other GPUs" in note
    tpu = simulate("gpt2-small", "tpu-v5p", micro_batch=1)
    assert any("none of its class is measured" in n for n in tpu.notes)
    assert not any("(priors)" in n for n in simulate("gpt2-small", "a100", micro_batch=1).notes)
    assert GPU_PRIORS["memory_efficiency"] < 1


def test_hwsim_devices_shows_each_class():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "devices"], capture_output=True,
                         text=True, check=True).stdout
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "gemm:measured" in rows["a100-sxm4-80gb"]
    assert "attention:kernel-fit" in rows["h100-sxm5-80gb"]
    assert "gemm:prior" in rows["l4"] and "gemm:prior/cross-class" in rows["xeon-8380"]
    assert "gemm:measured" in rows["t4"]   # DeepBench's GEMMs (simulator.calibrate.gemm)


def test_compare_names_the_devices_on_priors():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "compare", "gpt2-small",
                          "--devices", "a100,l4,h100-pcie-80gb"], capture_output=True,
                         text=True, check=True).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("note: on class priors or datasheet rates")
    assert "l4 (gemm); h100-pcie-80gb (gemm, stream, norm)" in last and "a100" not in last


def test_a_figure_set_by_the_user_is_no_longer_a_prior():
    """--set matmul_efficiency on a device running on the GEMM prior: the note, the status
    and a written spec keep the user's figure, not the prior's."""
    from hardware_specs.override import override

    device = load_device("l4")
    assert "matmul_efficiency" in device.priors
    given = override(device, {"matmul_efficiency": 0.9})
    assert "matmul_efficiency" not in given.priors and given.matmul_efficiency == 0.9
    assert "matmul_efficiency = 0.9" in device_toml(given)
    assert "matmul_efficiency" not in (priors_note(given) or "")


BATCH_NORMS = ("batch_norm_memory_efficiency", "batch_norm_backward_memory_efficiency")


def test_the_batch_norm_priors_are_the_median_over_the_measured_dies():
    """The NHWC batch-norm priors: the median over the GPU dies whose cuDNN NHWC batch norm is
    measured and accepted, each die once (the A100-SXM4-40GB's fit, carried to the four GA100
    parts: one die). The V100's table is not accepted (its own spec refuses its fit: held-out
    error over 20 % forward), so it does not enter."""
    import csv

    from simulator.calibrate.streaming import fit_batch_norm

    with open(Path(__file__).parent / "data" / "batchnorm_nhwc.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    accepted = {"A100-SXM4-40GB": 1555e9}        # datasheet 1,555 GB/s, 40 MB L2
    for field, direction in zip(BATCH_NORMS, ("forward", "backward")):
        fits = [fit_batch_norm(table, device, direction, bandwidth, 40 * 2**20).efficiency
                for device, bandwidth in accepted.items()]
        assert GPU_PRIORS[field] == pytest.approx(statistics.median(fits), abs=5e-4)
    v100 = fit_batch_norm(table, "Tesla V100-SXM2-32GB", "forward", 900e9, 6 * 2**20)
    assert v100.held_out_median_error > 0.2           # why it is not accepted
    measured = {tuple(getattr(load_device(name), f) for f in BATCH_NORMS)
                for name in list_devices()
                if not set(BATCH_NORMS) & set(load_device(name).priors)
                and load_device(name).batch_norm_memory_efficiency is not None}
    assert measured == {(GPU_PRIORS[BATCH_NORMS[0]], GPU_PRIORS[BATCH_NORMS[1]])}   # one die


@pytest.mark.parametrize("name", ["h100-sxm5-80gb", "mi300x", "v100-sxm2-32gb"])
def test_an_unmeasured_gpu_prices_nhwc_batch_norms_at_the_prior(name):
    """No NHWC batch norm measured on the part: its channels_last batch norms (64 channels and
    up) stream at the prior, forward and backward, it says so in its priors and status, and
    a prediction that prices one names them; one that prices none does not."""
    from simulator.cost.roofline import price
    from simulator.graph.lower import lower
    from simulator.graph.op import DType, OpKind, Phase
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph
    from workloads.cnn import RESNET50

    spec = load_device(name)
    assert set(BATCH_NORMS) <= set(spec.priors)
    assert calibration_status(spec)["batch-norm"] == "prior"
    plan = Plan(micro_batch=8, precision="fp16", channels_last=True)
    low = lower(training_graph(RESNET50.forward_graph(8, DType.FP16), plan))
    bn = (low.kind == OpKind.NORM) & (low.fn == "batchnorm")
    back = low.phase == Phase.BACKWARD
    streaming = price(low, spec, plan)[1]
    hbm = spec.memory[-1].bandwidth_bytes_per_s
    big = low.nbytes > 8 * sum(level.capacity_bytes for level in spec.memory[:-1])
    assert (bn & big & ~back).any() and (bn & big & back).any()
    np.testing.assert_allclose(streaming[bn & big & ~back], 0.791 * hbm)
    np.testing.assert_allclose(streaming[bn & big & back], 0.842 * hbm)
    note = next(n for n in simulate("resnet-50", name, micro_batch=8, precision="fp16",
                                    channels_last=True).notes if n.endswith("(priors)"))
    assert "batch_norm_memory_efficiency" in note
    assert "NHWC batch norms stream at 79.1% forward and 84.2% backward" in note
    plain = simulate("gpt2-small", name, micro_batch=1).notes
    assert not any("batch_norm" in n for n in plain)
    written = [line.split(" =")[0] for line in device_toml(spec).splitlines()]
    assert not set(BATCH_NORMS) & set(written)


@pytest.mark.parametrize("name", ["a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-40gb",
                                  "a100-pcie-80gb"])
def test_a_measured_ga100_keeps_its_figure(name):
    spec = load_device(name)
    assert not set(BATCH_NORMS) & set(spec.priors)
    assert calibration_status(spec)["batch-norm"] == "measured"
    assert (spec.batch_norm_memory_efficiency, spec.batch_norm_backward_memory_efficiency) \
        == (0.791, 0.842)
    assert not any("batch_norm" in n for n in simulate(
        "resnet-50", name, micro_batch=8, precision="fp16", channels_last=True).notes)


def test_other_classes_stream_batch_norms_as_norms():
    for name in ("tpu-v5p", "xeon-8380", "gaudi3"):
        spec = load_device(name)
        assert spec.batch_norm_memory_efficiency is None and not set(BATCH_NORMS) & set(
            spec.priors)
        assert calibration_status(spec)["batch-norm"] == "as norm"


@pytest.mark.parametrize("name", ["tpu-v5p", "gaudi3", "epyc-9654", "trainium2"])
def test_a_class_with_no_measured_member_streams_at_the_cross_class_prior(name):
    """No device of its class has a measured streaming rate: its memory-bound kernels stream
    at the median over the measured devices (0.815 of its own bandwidth: 13 GPUs and the Alveo
    U280), and the prediction says so, with the figure, instead of the datasheet-bandwidth
    note."""
    result = simulate("gpt2-small", name, micro_batch=1)
    spec = load_device(name)
    assert spec.memory_efficiency == CROSS_CLASS_PRIORS["memory_efficiency"]
    assert calibration_status(spec)["stream"] == CROSS_CLASS
    assert not any("stream at the datasheet bandwidth" in n for n in result.notes)
    note = next(n for n in result.notes if n.endswith("(priors)"))
    assert ("memory-bound kernels stream at 81.5% of its bandwidth, the median measured on "
            "FPGAs and GPUs (none of its class is measured)") in note
    assert ("runs at 97.9% of its vector peak, the median measured on GPUs (none of its class "
            "is measured)") in note


def test_only_a_device_built_without_the_loader_streams_at_the_datasheet_bandwidth():
    """The datasheet-bandwidth note is left for a DeviceSpec made in code without a prior (no
    catalogue or spec-file device is: the loader gives every class one)."""
    import dataclasses

    bare = dataclasses.replace(load_device("tpu-v5p"), memory_efficiency=1.0, priors=())
    assert calibration_status(bare)["stream"] == UNMEASURED_CLASS
    assert stream_note(bare).startswith("tpu-v5p has no measured memory efficiency")
    assert "(2,765 GB/s)" in stream_note(bare)
    assert stream_note(load_device("tpu-v5p")) is None
    assert stream_note(load_device("cpu-host")) is None   # its bandwidth is measured here


def test_the_measured_classes_are_those_of_the_catalogue_files_that_cite_a_measurement():
    """MEASURED_CLASSES: a class is in a field's set exactly when a catalogue file of that class
    cites the field (streams and vector units: the GPUs; GEMMs: GPUs and accelerators)."""
    for field, classes in MEASURED_CLASSES.items():
        cited = {tomllib.loads(path.read_text())["class"] for path in DEVICES.glob("*.toml")
                 if field in tomllib.loads(path.read_text())["compute"]}
        assert {c.value for c in classes} == cited, field
    assert DeviceClass.GPU in MEASURED_CLASSES["memory_efficiency"]


@pytest.mark.parametrize("name", sorted(list_devices()))
def test_no_device_streams_or_computes_at_its_datasheet_rate_unless_measured_at_it(name):
    """Issue 20's 'no device at its datasheet peak without a measurement', for streams, vector
    arithmetic and GEMMs: an efficiency of 1.0 is a measurement of the device (cpu-host's
    bandwidth, timed here); every other figure is the device's own measurement or a prior,
    its class's where the class has a measured member, else the cross-class one, and says
    which."""
    spec = load_device(name)
    status = calibration_status(spec)
    given = tomllib.loads((DEVICES / f"{name}.toml").read_text())["compute"] \
        if name != "cpu-host" else {}
    for cls, field in (("stream", "memory_efficiency"), ("vector", "vector_efficiency"),
                       ("gemm", "matmul_efficiency")):
        value = getattr(spec, field)
        if field in spec.priors:
            measured_class = spec.device_class in MEASURED_CLASSES[field]
            assert status[cls] == ("prior" if measured_class else CROSS_CLASS), cls
            assert value == class_priors(spec.device_class, (),
                                         spec.architecture)[field] < 1.0, cls
        else:
            assert status[cls] in ("measured", "calibrated"), cls
            assert field in given or (name, cls) == ("cpu-host", "stream"), cls
            assert value < 1.0 or status[cls] == "measured", cls
        assert status[cls] not in ("datasheet", UNMEASURED_CLASS), cls


def test_hwsim_devices_says_which_classes_have_no_measured_device():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "devices"], capture_output=True,
                         text=True, check=True).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in ("tpu-v4", "gaudi2", "alveo-u280", "xeon-8380"):
        assert "vector:prior/cross-class" in rows[name], name
    for name in ("tpu-v4", "gaudi2", "xeon-8380"):
        assert "stream:prior/cross-class" in rows[name], name
    assert "stream:prior" in rows["h100-pcie-80gb"] and "stream:measured" in rows["a100-sxm4-80gb"]
    assert "vector:measured" in rows["a100-sxm4-80gb"] and "vector:prior" in rows["l4"]
    assert "gemm:prior/cross-class" in rows["xeon-8380"] and "gemm:measured" in rows["gaudi2"]
    # tests/data/nongpu_kernel_rates.csv: the TPU v5e's and Trainium's GEMMs, the U280's HBM
    assert "gemm:measured" in rows["tpu-v5e"] and "gemm:prior " in rows["tpu-v4"]
    assert "gemm:measured" in rows["trainium1"]
    assert "stream:measured" in rows["alveo-u280"] and "stream:prior " in rows["alveo-u250"]
    assert "gemm:prior/cross-class" in rows["alveo-u280"]
    assert "stream:measured" in rows["cpu-host"]    # its bandwidth is timed on this machine


def _vector_table() -> list[dict]:
    import csv

    with open(Path(__file__).parent / "data" / "vector_fma_throughput.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_vector_prior_is_the_median_of_the_measured_gpus():
    """VECTOR_PRIORS: the median, over the accepted GPU rows of the committed GPUInspector.jl
    table whose SM has FP32 lanes of its own, of measured over theoretical FP32 FMA throughput
    (A100 0.979, V100 0.987); SHARED_LANE_VECTOR_PRIOR the same over the rows whose SM shares
    FP32 lanes with INT32 (the A40's GA102, 0.623); the cross-class prior the median over all
    (0.979, as over the catalogue files). Each catalogue spec citing a vector_efficiency gives
    its own die's row (the A100-SXM4-80GB the 40GB part's)."""
    rows = [r for r in _vector_table() if r["accepted"] == "yes"]
    ratio = {r["device"]: float(r["measured_tflops"]) / float(r["theoretical_tflops"])
             for r in rows}
    assert len(ratio) == 3 and all(0 < value <= 1 for value in ratio.values())
    own = [ratio[r["device"]] for r in rows if r["fp32_lanes_shared_with_int32"] == "0"]
    shared = [ratio[r["device"]] for r in rows if r["fp32_lanes_shared_with_int32"] != "0"]
    assert len(own) == 2 and len(shared) == 1
    assert VECTOR_PRIORS == {DeviceClass.GPU: pytest.approx(statistics.median(own), abs=5e-4)}
    assert SHARED_LANE_VECTOR_PRIOR == pytest.approx(statistics.median(shared), abs=5e-4)
    assert CROSS_CLASS_PRIORS["vector_efficiency"] == pytest.approx(
        statistics.median(ratio.values()), abs=5e-4)
    for r in rows:
        if r["catalogue"]:
            assert load_device(r["catalogue"]).vector_efficiency == pytest.approx(
                ratio[r["device"]], abs=5e-4)
            assert float(r["theoretical_tflops"]) == load_device(r["catalogue"]).vector_flops_per_s / 1e12
    assert load_device("a100-sxm4-80gb").vector_efficiency == load_device(
        "a100-sxm4-40gb").vector_efficiency
    rejected = [r for r in _vector_table() if r["accepted"] != "yes"]
    assert all(float(r["measured_tflops"]) > float(r["theoretical_tflops"]) for r in rejected)


@pytest.mark.parametrize("name", sorted(list_devices()))
def test_no_device_runs_its_vector_units_at_the_datasheet_rate(name):
    spec = load_device(name)
    status = calibration_status(spec)["vector"]
    if spec.device_class is DeviceClass.GPU:
        assert spec.vector_efficiency < 1.0
        assert status == ("prior" if "vector_efficiency" in spec.priors else "measured")
        if status == "prior":
            assert spec.vector_efficiency == (
                SHARED_LANE_VECTOR_PRIOR if spec.architecture.fp32_lanes_shared_with_int32
                else VECTOR_PRIORS[DeviceClass.GPU])
            written = [line.split(" =")[0] for line in device_toml(spec).splitlines()]
            assert "vector_efficiency" not in written
    else:
        assert status == CROSS_CLASS
        assert spec.vector_efficiency == CROSS_CLASS_PRIORS["vector_efficiency"]


def test_a_prediction_on_the_vector_prior_says_so():
    note = next(n for n in simulate("gpt2-small", "h100-pcie-80gb", micro_batch=1).notes
                if n.endswith("(priors)"))
    assert "vector_efficiency" in note
    assert "vector-unit arithmetic (norms, activations, softmax) runs at 98.3% of its vector peak" \
        in note


@pytest.mark.parametrize("name", ["l4", "l40s", "rtx-4090"])
def test_an_sm_sharing_fp32_lanes_with_int32_takes_the_a40s_vector_figure(name):
    """GA10x / AD10x SMs (64 of 128 FP32 lanes shared with INT32, the spec's
    fp32_lanes_shared_with_int32): the vector prior measured on such an SM (the A40's 0.623),
    one rule on the spec field, not a device list; a spec without the field, or one of another
    class, keeps its class's prior; the prediction names the figure and why."""
    import dataclasses

    from simulator.cost.roofline import price
    from simulator.graph.lower import lower
    from simulator.graph.op import DType, OpKind
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph
    from workloads.cnn import RESNET50

    spec = load_device(name)
    assert spec.architecture.fp32_lanes_shared_with_int32 == 64
    assert spec.vector_efficiency == SHARED_LANE_VECTOR_PRIOR == 0.623
    assert class_priors(DeviceClass.GPU, (), dataclasses.replace(
        spec.architecture, fp32_lanes_shared_with_int32=None))["vector_efficiency"] == 0.983
    assert class_priors(DeviceClass.TPU, (), spec.architecture)["vector_efficiency"] == 0.979
    for other in ("p4", "p100-pcie-16gb", "rtx-5090"):   # lanes run INT32, figure not carried
        assert load_device(other).vector_efficiency == 0.983, other
    written = device_toml(spec)
    assert "fp32_lanes_shared_with_int32 = 64" in written and "vector_efficiency" not in written
    note = next(n for n in simulate("gpt2-small", name, micro_batch=1).notes
                if n.endswith("(priors)"))
    assert ("runs at 62.3% of its vector peak, the A40's (GA102), the measured GPU whose SM "
            "shares FP32 lanes with INT32 as this one's does") in note
    # the vector units' rate is the prior's: elementwise arithmetic at 0.623 of the peak
    plan = Plan(micro_batch=8, precision="fp16")
    low = lower(training_graph(RESNET50.forward_graph(8, DType.FP16), plan))
    rate = price(low, spec, plan)[0]
    vector = low.kind == OpKind.ELEMENTWISE
    assert vector.any()
    np.testing.assert_allclose(rate[vector], 0.623 * spec.vector_flops_per_s)


def test_a_what_if_on_the_fp32_lanes_moves_the_vector_prior_not_a_measurement():
    """``--set architecture.fp32_lanes_shared_with_int32`` derives the vector prior again, as a
    spec file with that architecture would load (``hardware_specs.override``): the A100 PCIe
    80GB (no measurement) 0.983 -> 0.623, the L4 set to 0 (lanes of their own) 0.623 -> 0.983,
    and the prediction's note follows; the A100 SXM4's measured 0.979 and a figure the user
    sets are kept; a TPU keeps the cross-class 0.979; its other priors do not move."""
    from hardware_specs.override import override

    key = "architecture.fp32_lanes_shared_with_int32"
    pcie = load_device("a100-pcie-80gb")
    shared = override(pcie, {key: "64"})
    assert (pcie.vector_efficiency, shared.vector_efficiency) == (0.983, 0.623)
    assert shared.priors == pcie.priors == ("vector_efficiency",)
    note = next(n for n in simulate("gpt2-small", shared, micro_batch=1).notes
                if n.endswith("(priors)"))
    assert "runs at 62.3% of its vector peak, the A40's (GA102)" in note
    l4 = load_device("l4")
    own = override(l4, {key: 0})
    assert (l4.vector_efficiency, own.vector_efficiency) == (0.623, 0.983)
    assert own.architecture.fp32_lanes_shared_with_int32 is None
    assert {f: getattr(own, f) for f in own.priors if f != "vector_efficiency"} == {
        f: getattr(l4, f) for f in l4.priors if f != "vector_efficiency"}
    assert override(load_device("a100-sxm4-40gb"), {key: 64}).vector_efficiency == 0.979
    set_too = override(l4, {key: 0, "vector_efficiency": 0.5})
    assert set_too.vector_efficiency == 0.5 and "vector_efficiency" not in set_too.priors
    assert override(load_device("tpu-v4"), {key: 64}).vector_efficiency == 0.979
