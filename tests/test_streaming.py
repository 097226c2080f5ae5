"""Memory-bound kernels at their measured streaming efficiency (``simulator.calibrate.streaming``).

The catalogue's ``memory_efficiency`` and ``norm_memory_efficiency`` of the GPUs NeuSight
timed are the fits of ``tests/data/neusight_vector_kernels.csv`` (Lee et al., ASPLOS 2025:
fp32 kernels, PyTorch 2.1.0); devices of the same chip and memory carry them over, and GPUs
with no measurement get the medians (``hardware_specs.loader.GPU_PRIORS``).
"""
import dataclasses
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import GPU_PRIORS, list_devices, load_device
from hardware_specs.priors import NCHW_CAPS
from hardware_specs.spec import DeviceClass
from simulator.calibrate.streaming import CLASSES, fit_tables, kernel_bytes
from simulator.cost.roofline import op_costs
from simulator.graph.lower import lower
from simulator.graph.op import OpKind
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.zoo import get_workload

DATA = Path(__file__).parent / "data"
DEVICES, FITS = fit_tables(DATA / "neusight_vector_kernels.csv", DATA / "neusight_devices.csv")
FIELDS = {"elementwise": "memory_efficiency", "norm": "norm_memory_efficiency"}


@pytest.mark.parametrize("kind", sorted(CLASSES))
@pytest.mark.parametrize("row", [r for r in DEVICES if r["catalogue"]], ids=lambda r: r["device"])
def test_catalogue_efficiencies_are_the_fits(row, kind):
    """Each catalogue GPU the table informs carries its fit (3 decimals); an A100 SXM4 keeps its
    own cited 0.88 for elementwise streaming (NVIDIA forum measurement), which the PCIe
    part's fit agrees with within 0.03."""
    expected = FITS[row["device"], kind].efficiency
    for name in row["catalogue"].split():
        spec = load_device(name)
        value = getattr(spec, FIELDS[kind])
        if kind == "elementwise" and name.startswith("a100-sxm4"):
            assert value == pytest.approx(expected, abs=0.03)
        else:
            assert value == pytest.approx(expected, abs=5e-4)
        assert FIELDS[kind] not in spec.priors


@pytest.mark.parametrize("kind, bound", [("elementwise", 0.05), ("norm", 0.30)])
def test_held_out_error_per_class(kind, bound):
    """The fifth of each table with the longest rows, never fitted on, is predicted within the
    stated bound (median |error| per device): elementwise kernels stream at one rate; a norm's
    or softmax's rate varies with its row length (0.43-0.84 on the A100), which one number
    per device does not capture."""
    for row in DEVICES:
        result = FITS[row["device"], kind]
        assert result.held_out_rows >= 10
        assert result.held_out_median_error < bound, (row["device"], result)


def test_norms_stream_slower_than_elementwise_kernels_on_every_gpu():
    for row in DEVICES:
        assert FITS[row["device"], "norm"].efficiency < FITS[row["device"], "elementwise"].efficiency


def test_gpu_priors_are_the_medians_of_the_measured_gpus():
    for kind, field in FIELDS.items():
        measured = [FITS[row["device"], kind].efficiency for row in DEVICES]
        assert GPU_PRIORS[field] == pytest.approx(statistics.median(measured), abs=5e-4)


def test_no_gpu_streams_at_its_datasheet_rate():
    """A GPU spec either cites a measurement or runs on the priors, and says which."""
    for name in list_devices():
        spec = load_device(name)
        if spec.device_class is DeviceClass.GPU:
            assert spec.memory_efficiency < 1.0 and spec.norm_memory_efficiency < 1.0
            for field in set(spec.priors) & set(GPU_PRIORS):   # the GEMM prior: test_priors
                if field in NCHW_CAPS:   # carried per SM: test_nchw_batch_norm_carry
                    assert getattr(spec, field) < 1.0
                    continue
                assert getattr(spec, field) == GPU_PRIORS[field]


def test_kernel_bytes():
    assert kernel_bytes("add", 10, 64) == 3 * 4 * 640     # two fp32 inputs, one output
    assert kernel_bytes("relu", 10, 64) == 2 * 4 * 640
    assert kernel_bytes("ln", 10, 64) == 2 * 4 * 640


def _step(name: str = "gpt2-small"):
    return lower(training_graph(get_workload(name).forward_graph(2), Plan()))


def test_a_norm_streams_its_bytes_at_norm_memory_efficiency():
    """Closed form: a norm's memory time is its bytes / (bandwidth x norm efficiency)."""
    a100 = load_device("a100")
    low = _step()
    _, memory_s, _ = op_costs(low, a100)
    norms = np.flatnonzero(low.kind == OpKind.NORM)
    main = a100.main_memory.bandwidth_bytes_per_s
    assert len(a100.memory) == 1 and len(norms)     # no cache level listed: all from HBM
    np.testing.assert_allclose(memory_s[norms],
                               low.nbytes[norms] / (main * a100.norm_memory_efficiency))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_lower_norm_efficiency_is_never_faster(a, b):
    low, a100 = _step(), load_device("a100")
    slow, fast = sorted((a, b))
    t_slow = op_costs(low, dataclasses.replace(a100, norm_memory_efficiency=slow))[2]
    t_fast = op_costs(low, dataclasses.replace(a100, norm_memory_efficiency=fast))[2]
    assert (t_slow >= t_fast).all()
