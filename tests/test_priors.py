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
                                   MEASURED_CLASSES, VECTOR_PRIORS, class_priors, list_devices,
                                   load_device)
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
        "nchw-batch-norm": "prior", "compiled-norm": "as norm",
        "vector": "measured"}
    assert calibration_status(load_device("a100-sxm4-40gb"))["nchw-batch-norm"] == "measured"
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
    assert note == priors_note(load_device("h100-pcie-80gb"), batch_norms=())
    assert "GEMMs run at 78.7% of its peak, the median measured on other GPUs" in note
    assert "memory-bound kernels stream at the medians measured on other GPUs" in note
    tpu = next(n for n in simulate("gpt2-small", "tpu-v5p", micro_batch=1).notes
               if n.endswith("(priors)"))      # every TPU prior is now its class's own
    assert "GEMMs run at 85.8% of its peak, the median measured on other TPUs" in tpu
    assert "runs at 97.6% of its vector peak, the median measured on other TPUs" in tpu
    assert "none of its class is measured" not in tpu
    accelerator = simulate("gpt2-small", "gaudi3", micro_batch=1)
    assert any("none of its class is measured" in n for n in accelerator.notes)
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


NCHW_BATCH_NORMS = ("batch_norm_nchw_memory_efficiency",
                    "batch_norm_nchw_backward_memory_efficiency")


def test_the_nchw_batch_norm_priors_are_the_measured_die_carried_per_sm():
    """The NCHW batch-norm priors: the GPU dies whose cuDNN NCHW batch norms are measured, each
    die once: the GA100's, from a profiled ResNet-50 step on an A100 40GB
    (``EVT_NCHW_BATCH_NORMS``), the two 40GB parts' own figures; every other GPU runs on that
    rate carried per SM (``tests/test_nchw_batch_norm_carry.py``) and says so, and an NCHW
    prediction on it names it."""
    from simulator.calibrate.streaming import EVT_NCHW_BATCH_NORMS, profiled_batch_norm_efficiency

    for field, direction in zip(NCHW_BATCH_NORMS, ("forward", "backward")):
        assert GPU_PRIORS[field] == pytest.approx(
            profiled_batch_norm_efficiency(EVT_NCHW_BATCH_NORMS, direction), abs=5e-4)
    measured = {name: tuple(getattr(load_device(name), f) for f in NCHW_BATCH_NORMS)
                for name in list_devices()
                if not set(NCHW_BATCH_NORMS) & set(load_device(name).priors)
                and load_device(name).batch_norm_nchw_memory_efficiency is not None}
    assert measured == {name: (GPU_PRIORS[NCHW_BATCH_NORMS[0]], GPU_PRIORS[NCHW_BATCH_NORMS[1]])
                        for name in ("a100-pcie-40gb", "a100-sxm4-40gb")}
    h100 = load_device("h100-sxm5-80gb")
    assert set(NCHW_BATCH_NORMS) <= set(h100.priors)
    nchw = simulate("resnet-50", h100, micro_batch=8, precision="fp16").notes
    nhwc = simulate("resnet-50", h100, micro_batch=8, precision="fp16", channels_last=True).notes
    assert any("NCHW batch norms stream at 23.0% forward and 26.1% backward of its bandwidth, "
               "the measured die's rate per SM times its SMs" in n for n in nchw)
    assert not any("NHWC batch norms" in n for n in nchw)
    assert not any("NCHW batch norms" in n for n in nhwc)
    assert any("NHWC batch norms" in n for n in nhwc)


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


@pytest.mark.parametrize("name", ["gaudi3", "epyc-9654", "trainium2"])
def test_a_class_with_no_measured_member_streams_at_the_cross_class_prior(name):
    """No device of its class has a measured streaming rate: its memory-bound kernels stream
    at the median over the measured devices (0.803 of its own bandwidth: 13 GPUs, the Alveo
    U280 and the TPU v5e), and the prediction says so, with the figure, instead of the
    datasheet-bandwidth note."""
    result = simulate("gpt2-small", name, micro_batch=1)
    spec = load_device(name)
    assert spec.memory_efficiency == CROSS_CLASS_PRIORS["memory_efficiency"]
    assert calibration_status(spec)["stream"] == CROSS_CLASS
    assert not any("stream at the datasheet bandwidth" in n for n in result.notes)
    note = next(n for n in result.notes if n.endswith("(priors)"))
    assert ("memory-bound kernels stream at 80.3% of its bandwidth, the median measured on "
            "FPGAs, GPUs and TPUs (none of its class is measured)") in note
    assert ("runs at 97.8% of its vector peak, the median measured on GPUs and TPUs (none of "
            "its class is measured)") in note


def test_only_a_device_built_without_the_loader_streams_at_the_datasheet_bandwidth():
    """The datasheet-bandwidth note is left for a DeviceSpec made in code without a prior (no
    catalogue or spec-file device is: the loader gives every class one)."""
    import dataclasses

    bare = dataclasses.replace(load_device("gaudi3"), memory_efficiency=1.0, priors=())
    assert calibration_status(bare)["stream"] == UNMEASURED_CLASS
    assert stream_note(bare).startswith("gaudi3 has no measured memory efficiency")
    assert "(3,670 GB/s)" in stream_note(bare)
    assert stream_note(load_device("gaudi3")) is None
    assert stream_note(load_device("tpu-v5p")) is None    # a TPU: its class's measured prior
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
            assert value == class_priors(spec.device_class, ())[field] < 1.0, cls
        else:
            assert status[cls] in ("measured", "calibrated"), cls
            assert field in given or (name, cls) == ("cpu-host", "stream"), cls
            assert value < 1.0 or status[cls] == "measured", cls
        assert status[cls] not in ("datasheet", UNMEASURED_CLASS), cls


def test_hwsim_devices_says_which_classes_have_no_measured_device():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "devices"], capture_output=True,
                         text=True, check=True).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in ("gaudi2", "alveo-u280", "xeon-8380"):
        assert "vector:prior/cross-class" in rows[name], name
    assert "vector:prior" in rows["tpu-v4"] and "vector:measured" in rows["tpu-v5e"]
    assert "vector:prior/cross-class" not in rows["tpu-v4"]
    for name in ("gaudi2", "xeon-8380"):
        assert "stream:prior/cross-class" in rows[name], name
    assert "stream:prior " in rows["tpu-v4"] and "stream:measured" in rows["tpu-v5e"]
    assert "stream:prior" in rows["h100-pcie-80gb"] and "stream:measured" in rows["a100-sxm4-80gb"]
    assert "vector:measured" in rows["a100-sxm4-80gb"] and "vector:prior" in rows["l4"]
    assert "gemm:prior/cross-class" in rows["xeon-8380"] and "gemm:measured" in rows["gaudi2"]
    # tests/data/nongpu_kernel_rates.csv: the TPU v5e's, v6e's and Trainium's GEMMs, the U280's
    assert "gemm:measured" in rows["tpu-v5e"] and "gemm:prior " in rows["tpu-v4"]     # HBM
    assert "gemm:measured" in rows["tpu-v6e"] and "gemm:prior " in rows["tpu-v5p"]
    assert "gemm:measured" in rows["trainium1"]
    assert "stream:measured" in rows["alveo-u280"] and "stream:prior " in rows["alveo-u250"]
    assert "gemm:prior/cross-class" in rows["alveo-u280"]
    assert "stream:measured" in rows["cpu-host"]    # its bandwidth is timed on this machine


def _vector_table() -> list[dict]:
    import csv

    with open(Path(__file__).parent / "data" / "vector_fma_throughput.csv", newline="") as f:
        return list(csv.DictReader(f))


def _ratio(row: dict) -> float:
    return float(row["measured_tflops"]) / float(row["theoretical_tflops"])


def test_the_vector_prior_is_the_median_of_the_measured_boards():
    """VECTOR_PRIORS: the median, over the accepted rows of the committed FMA-kernel table (an
    FMA chain at the clocks the card chose itself), of measured over rated FP32 throughput:
    A40 0.623, L40S 0.867, A100 PCIe 40GB 0.971, A100-SXM4-40GB 0.979, V100-SXM2 0.987, RTX
    A4000 1.017 -> 0.975, one figure for every GPU (no split by SM); the cross-class prior the
    median over the catalogue specs citing a measurement (the five GPU specs and the TPU v5e's
    0.976, tests/data/nongpu_kernel_rates.csv -> 0.9775), the TPU prior the v5e's. Each catalogue spec citing a
    vector_efficiency gives its own part's row (the A100-SXM4-80GB the 40GB part's). Rows not
    accepted are above the rated peak (another kernel, an unnamed board) or at a clock the
    benchmark locked."""
    table = _vector_table()
    rows = [r for r in table if r["accepted"] == "yes"]
    ratio = {r["device"]: _ratio(r) for r in rows}
    assert len(ratio) == 6 and all(r["clocks"] == "own" for r in rows)
    assert min(ratio.values()) == pytest.approx(0.623, abs=5e-4)
    assert VECTOR_PRIORS[DeviceClass.GPU] == pytest.approx(statistics.median(ratio.values()),
                                                           abs=5e-4)
    assert VECTOR_PRIORS[DeviceClass.GPU] == 0.975
    cited = _cited("vector_efficiency")
    assert sorted(cited["gpu"]) == [0.867, 0.971, 0.979, 0.979, 0.987]
    assert cited["tpu"] == [VECTOR_PRIORS[DeviceClass.TPU]] == [0.976] and len(cited) == 2
    assert CROSS_CLASS_PRIORS["vector_efficiency"] == statistics.median(
        cited["gpu"] + cited["tpu"]) == 0.9775
    for r in rows:
        if r["catalogue"]:
            spec = load_device(r["catalogue"])
            assert spec.vector_efficiency == pytest.approx(ratio[r["device"]], abs=5e-4)
            assert float(r["theoretical_tflops"]) == spec.vector_flops_per_s / 1e12
            assert "vector_efficiency" not in spec.priors
    assert load_device("a100-sxm4-80gb").vector_efficiency == load_device(
        "a100-sxm4-40gb").vector_efficiency
    for r in table:
        if r["accepted"] != "yes":
            assert _ratio(r) > 1 or r["clocks"] == "locked", r["device"]


def test_shared_fp32_lanes_cost_an_fma_kernel_nothing_per_clock():
    """Why the prior has no split by SM: per SM per clock (measured over rated, times the rated
    clock over the SM clock NVML read during the run), cudapeak's FMA kernel reaches 0.978-0.988
    of the FP32 lanes' rate whether half of an SM's lanes also run INT32 (GA104, AD104, AD102:
    64 of 128) or none do (GA100); the shared-lane dies' median is not below the others'. What
    the A40's 0.623 of its rating measures is the clock it held (1.08 GHz for 10,752 lanes,
    below the 1,305 MHz base), not its lanes."""
    per_clock = {}
    for r in _vector_table():
        if r["sm_clock_mhz"]:
            per_clock[r["device"]] = (
                _ratio(r) * float(r["boost_clock_mhz"]) / float(r["sm_clock_mhz"]),
                r["fp32_lanes_shared_with_int32"] != "0")
    shared = [value for value, lanes in per_clock.values() if lanes]
    own = [value for value, lanes in per_clock.values() if not lanes]
    assert len(shared) == 5 and len(own) == 2
    assert all(0.97 <= value <= 1.0 for value, _ in per_clock.values()), per_clock
    assert statistics.median(shared) >= statistics.median(own)
    a40 = next(r for r in _vector_table() if r["device"] == "NVIDIA A40")
    held_ghz = float(a40["measured_tflops"]) * 1e12 / (10752 * 2) / 1e9
    assert held_ghz == pytest.approx(1.08, abs=0.01) and held_ghz < 1.305


def test_a_spec_or_what_if_naming_shared_lanes_is_refused_in_one_line(tmp_path):
    """``fp32_lanes_shared_with_int32`` (the field that chose the A40's figure until
    2026-12-06) is no longer a spec field: a file or a --set naming it is refused in one line
    that lists the fields there are."""
    from hardware_specs.override import override
    from simulator.errors import SpecError

    text = (DEVICES / "l4.toml").read_text().replace(
        "[architecture]\n", "[architecture]\nfp32_lanes_shared_with_int32 = 64\n")
    path = tmp_path / "l4-lanes.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_device(str(path))
    assert "fp32_lanes_shared_with_int32" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SpecError) as err:
        override(load_device("l4"), {"architecture.fp32_lanes_shared_with_int32": 64})
    assert "unknown architecture field" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(list_devices()))
def test_no_device_runs_its_vector_units_at_the_datasheet_rate(name):
    spec = load_device(name)
    status = calibration_status(spec)["vector"]
    if spec.device_class is DeviceClass.GPU:
        assert spec.vector_efficiency < 1.0
        assert status == ("prior" if "vector_efficiency" in spec.priors else "measured")
        if status == "prior":
            assert spec.vector_efficiency == VECTOR_PRIORS[DeviceClass.GPU]
            written = [line.split(" =")[0] for line in device_toml(spec).splitlines()]
            assert "vector_efficiency" not in written
    elif spec.device_class is DeviceClass.TPU:            # the v5e measured, the rest its prior
        assert status == ("prior" if "vector_efficiency" in spec.priors else "measured")
        assert spec.vector_efficiency == VECTOR_PRIORS[DeviceClass.TPU] == 0.976
    else:
        assert status == CROSS_CLASS
        assert spec.vector_efficiency == CROSS_CLASS_PRIORS["vector_efficiency"]


def test_a_prediction_on_the_vector_prior_says_so():
    note = next(n for n in simulate("gpt2-small", "h100-pcie-80gb", micro_batch=1).notes
                if n.endswith("(priors)"))
    assert "vector_efficiency" in note
    assert ("vector-unit arithmetic (norms, activations, softmax) runs at 97.5% of its vector "
            "peak, the median measured on other GPUs") in note


def test_ada_and_ga10x_parts_run_their_own_measurement_or_the_one_gpu_prior():
    """The L40S runs its own measured 0.867 (cudapeak, the clock it held), no prior; the L4
    and RTX 4090 (no measurement of theirs accepted) the GPU prior 0.975, as every unmeasured
    GPU does (the Pascal P4 and P100, the RTX 5090, the H100 PCIe), and the prediction names
    it; the vector units' rate is that fraction of the vector peak."""
    from simulator.cost.roofline import price
    from simulator.graph.lower import lower
    from simulator.graph.op import DType, OpKind
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph
    from workloads.cnn import RESNET50

    l40s = load_device("l40s")
    assert l40s.vector_efficiency == 0.867 and "vector_efficiency" not in l40s.priors
    assert calibration_status(l40s)["vector"] == "measured"
    for name in ("l4", "rtx-4090", "p4", "p100-pcie-16gb", "rtx-5090", "h100-pcie-80gb"):
        spec = load_device(name)
        assert spec.vector_efficiency == 0.975 and "vector_efficiency" in spec.priors, name
    note = next(n for n in simulate("gpt2-small", "l4", micro_batch=1).notes
                if n.endswith("(priors)"))
    assert "runs at 97.5% of its vector peak, the median measured on other GPUs" in note
    plan = Plan(micro_batch=8, precision="fp16")
    low = lower(training_graph(RESNET50.forward_graph(8, DType.FP16), plan))
    vector = low.kind == OpKind.ELEMENTWISE
    assert vector.any()
    for spec in (l40s, load_device("l4")):
        rate = price(low, spec, plan)[0]
        np.testing.assert_allclose(rate[vector], spec.vector_efficiency * spec.vector_flops_per_s)


def test_a_what_if_on_the_vector_efficiency_is_a_measurement_not_a_prior():
    """``--set vector_efficiency`` on a GPU running the prior makes it a measurement (it leaves
    ``priors``); the other priors stay as loaded; no architecture field moves a prior."""
    from hardware_specs.override import override

    l4 = load_device("l4")
    set_too = override(l4, {"vector_efficiency": 0.5})
    assert set_too.vector_efficiency == 0.5 and "vector_efficiency" not in set_too.priors
    assert {f: getattr(set_too, f) for f in set_too.priors} == {
        f: getattr(l4, f) for f in l4.priors if f != "vector_efficiency"}
    assert override(l4, {"architecture.compute_units": 29}).vector_efficiency == 0.975
