"""Energy: per-op energy between idle power and TDP, step energy and whole-run totals."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hardware_specs.loader import load_device
from hardware_specs.spec import MemoryLevel
from simulator.api import simulate
from simulator.cost.energy import counted, op_energy, step_energy
from simulator.errors import PlanError
from simulator.graph.opgraph import OpGraph
from simulator.graph.lower import lower
from simulator.graph.op import DType, Op, OpKind, Phase
from workloads.mlp import MLPConfig
from workloads.transformer import TransformerConfig

A100 = load_device("a100")
REL = 1e-9  # float rounding of sums over thousands of ops


@st.composite
def devices(draw):
    """The A100 with other rates, overhead, powers and (or not) cited dynamic energies."""
    tdp = draw(st.floats(10.0, 1500.0))
    idle = draw(st.floats(0.0, 1.0)) * tdp
    bandwidth = draw(st.floats(1e10, 1e13))
    scale = draw(st.floats(1e-3, 10.0))
    cited = draw(st.booleans())
    return dataclasses.replace(
        A100, tdp_w=tdp, idle_power_w=idle,
        peak_flops_per_s={k: v * scale for k, v in A100.peak_flops_per_s.items()},
        vector_flops_per_s=A100.vector_flops_per_s * draw(st.floats(1e-3, 10.0)),
        memory=(*A100.memory[:-1], MemoryLevel(A100.main_memory.name,
                                               A100.main_memory.capacity_bytes, bandwidth)),
        op_overhead_s=draw(st.floats(0.0, 1e-4)),
        energy_per_flop_j=draw(st.floats(1e-14, 1e-10)) if cited else None,
        energy_per_byte_j=draw(st.floats(1e-13, 1e-9)) if cited else None)


@st.composite
def workloads(draw):
    if draw(st.booleans()):
        return TransformerConfig("t", draw(st.integers(1, 3)), draw(st.sampled_from([16, 32, 64])),
                                 draw(st.sampled_from([1, 2, 4])), vocab=draw(st.integers(5, 300)),
                                 seq_len=draw(st.integers(2, 64)))
    hidden = tuple(draw(st.lists(st.integers(1, 512), min_size=1, max_size=4)))
    return MLPConfig("m", draw(st.integers(1, 1024)), hidden, draw(st.integers(2, 100)))


@settings(max_examples=60, deadline=None)
@given(device=devices(), workload=workloads(), micro_batch=st.integers(1, 4),
       micro_batches=st.integers(1, 3), precision=st.sampled_from(["fp32", "bf16"]))
def test_energy_lies_between_idle_and_tdp(device, workload, micro_batch, micro_batches,
                                          precision):
    r = simulate(workload, device, micro_batch=micro_batch,
                 global_batch=micro_batch * micro_batches, precision=precision)
    t, e = r.step_time_s, r.energy_j_per_step
    assert device.idle_power_w * t * (1 - REL) <= e <= device.tdp_w * t * (1 + REL)
    assert device.idle_power_w * (1 - REL) <= r.avg_power_w <= device.tdp_w * (1 + REL)
    ops = r.ops
    assert np.all(ops.energy_j >= device.idle_power_w * ops.time_s * (1 - REL))
    assert np.all(ops.energy_j <= device.tdp_w * ops.time_s * (1 + REL))
    update = (ops.phase == "optimizer").to_numpy()
    per_step = micro_batches * ops.energy_j[~update].sum() + ops.energy_j[update].sum()
    # besides its ops' energy, the device idles while it waits on the host (simulator.cost.host)
    assert per_step * (1 - REL) <= e <= per_step + device.idle_power_w * t * (1 + REL)


def _toy():
    g = OpGraph()
    g.add(Op("mm", OpKind.MATMUL, dtype=DType.FP32, flops=2e12, bytes_read=1e9))
    g.add(Op("add", OpKind.ELEMENTWISE, dtype=DType.FP32, flops=1e6, bytes_read=4e9,
             bytes_written=4e9), ["mm"])
    g.add(Op("update", OpKind.OPTIMIZER, phase=Phase.OPTIMIZER, bytes_read=1e6), ["add"])
    return lower(g)


def test_utilisation_power_model():
    """Fan, Weber and Barroso 2007: P = idle + (TDP - idle) x busy share of the op's time."""
    low = _toy()
    compute = np.array([1.0, 0.0, 0.0])
    memory = np.array([0.5, 3.0, 0.0])
    time = np.array([2.0, 3.0, 1.0])  # the matmul is busy half its time, the add all of it
    device = dataclasses.replace(A100, idle_power_w=100.0, tdp_w=400.0,
                                 energy_per_flop_j=None, energy_per_byte_j=None)
    assert not counted(device)
    energy = op_energy(low, device, compute, memory, time)
    np.testing.assert_allclose(energy, [250.0 * 2, 400.0 * 3, 100.0 * 1])
    assert step_energy(low, energy, 3) == 3 * (500.0 + 1200.0) + 100.0


def test_counted_energy_model_is_capped_at_tdp():
    """Idle power over the op's time plus J/FLOP and J/byte, at most TDP x time."""
    low = _toy()
    device = dataclasses.replace(A100, idle_power_w=100.0, tdp_w=400.0,
                                 energy_per_flop_j=1e-12, energy_per_byte_j=1e-10)
    assert counted(device)
    time = np.array([10.0, 1.0, 1.0])
    energy = op_energy(low, device, np.zeros(3), np.zeros(3), time)
    # mm: 1000 + 2 J (FLOPs) + 0.1 J (bytes); add: 100 + 0.8 J -> capped? no; update: 100 + 1e-4
    np.testing.assert_allclose(energy, [1000 + 2.0 + 0.1, 100 + 1e-6 + 0.8, 100 + 1e-4])
    hot = dataclasses.replace(device, energy_per_byte_j=1e-7)  # 800 J of traffic in 1 s
    assert op_energy(low, hot, np.zeros(3), np.zeros(3), time)[1] == 400.0


def test_whole_run_totals_with_pue():
    r = simulate("gpt2-small", "a100", steps=1000, pue=1.2, grid_kg_co2_per_kwh=0.1)
    t = r.totals
    assert t["energy_kwh"] == pytest.approx(1000 * r.energy_j_per_step / 3.6e6 * 1.2, rel=1e-12)
    assert t["co2_kg"] == pytest.approx(t["energy_kwh"] * 0.1, rel=1e-12)
    assert t["total_time_s"] == pytest.approx(1000 * r.step_time_s, rel=1e-12)
    assert t["pue"] == 1.2 and t["grid_kg_co2_per_kwh"] == 0.1
    plain = simulate("gpt2-small", "a100", steps=1000)
    assert plain.totals["pue"] == 1.0 and plain.totals["grid_kg_co2_per_kwh"] == 0.39
    with pytest.raises(PlanError, match="pue"):
        simulate("gpt2-small", "a100", steps=1000, pue=0.5)


def test_ops_carry_energy_and_the_critical_path():
    r = simulate("gpt2-small", "a100", micro_batch=2)
    ops = r.ops
    assert {"energy_j", "critical_path"} <= set(ops.columns)
    # the ops' energy, and the idle power while the device waits on the host besides
    idle = r.device_spec.idle_power_w * r.step_time_s
    assert ops.energy_j.sum() * (1 - REL) <= r.energy_j_per_step <= ops.energy_j.sum() + idle
    path = ops[ops.critical_path]
    assert path.time_s.sum() == pytest.approx(r.critical_path_s, rel=1e-12)
    assert 0 < r.critical_path_s <= r.step_time_s
    assert r.summary()["critical_path_s"] == r.critical_path_s
