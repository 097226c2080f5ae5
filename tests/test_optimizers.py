"""The optimizers beyond Adam and SGD: counts against the code that runs them (docs/model.md,
'Which optimizer'). PyTorch 2.13.0's torch/optim/sgd.py and _adafactor.py; bitsandbytes
95f9af3's AdamW8bit (bitsandbytes/optim/optimizer.py, csrc/kernels.cu)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import simulator
from hardware_specs.loader import load_device
from simulator.cost import host
from simulator.errors import PlanError
from simulator.graph.op import Task
from simulator.plan.step import UPDATE_SYNCS, Optimizer, OptimizerImpl, Plan

A100 = load_device("a100-sxm4-80gb")


def _run(**kw):
    return simulator.simulate("gpt2", A100, micro_batch=2, **kw)


def _updates(result):
    low = result.lowered
    return low, low.task == int(Task.UPDATE)


# -- memory ---------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, fp32_states, bf16_states", [
    ("adamw", 8, 12), ("sgd", 4, 8), ("sgd-nomomentum", 0, 4), ("adafactor", 0, 4),
    # two uint8 moments and an fp32 absmax per 256-element block of each
    ("adamw8bit", 2 + 8 / 256, 6 + 8 / 256), ("none", 0, 4)])
def test_state_bytes_per_parameter(optimizer, fp32_states, bf16_states):
    """Optimizer states besides the weights and gradients; under bf16 the fp32 master (4 B)
    is counted with them, `none` included (PyTorch AMP's fp32 weights)."""
    assert Plan(precision="fp32", optimizer=optimizer).state_bytes_per_param()[
        "optimizer_states"] == fp32_states
    assert Plan(precision="bf16", optimizer=optimizer).state_bytes_per_param()[
        "optimizer_states"] == bf16_states


def test_peak_memory_orders_by_state_bytes():
    peak = {o: _run(precision="bf16", optimizer=o).memory_breakdown["optimizer_states"]
            for o in ("adamw", "adamw8bit", "adafactor", "none")}
    params = _run(precision="bf16").params
    assert peak["adamw"] - peak["adamw8bit"] == pytest.approx(params * (8 - 2 - 8 / 256),
                                                              rel=1e-6)
    assert peak["adafactor"] == pytest.approx(peak["none"])
    assert peak["adafactor"] < peak["adamw8bit"] < peak["adamw"]


# -- the update op ----------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, impl, read, written, ops", [
    # fp32: weight 4 + gradient 4 read, weight 4 written, besides the states and passes
    ("sgd-nomomentum", "single", 8, 4, 2),          # param.add_(grad): R2 W1
    ("adafactor", "single", 8 + 36, 4 + 20, 15),    # 11 reads and 6 writes of fp32 arrays
    ("adafactor", "foreach", 8 + 40, 4 + 24, 15),   # + the _foreach_mul_ of the step sizes
    ("adamw8bit", "single", 8 + 2 + 8 / 256, 4 + 2 + 8 / 256, 43)])  # one kernel's pass
def test_update_traffic_per_parameter(optimizer, impl, read, written, ops):
    low, upd = _updates(_run(precision="fp32", optimizer=optimizer, optimizer_impl=impl))
    params = low.params[upd].astype(float)
    assert low.bytes_read[upd] == pytest.approx(params * read, rel=1e-9)
    assert low.bytes_written[upd] == pytest.approx(params * written, rel=1e-9)
    assert low.flops[upd] == pytest.approx(params * ops, rel=1e-9)


def test_none_runs_no_update_and_is_the_fastest():
    low, upd = _updates(_run(optimizer="none"))
    assert not upd.any()
    steps = {o: _run(optimizer=o).step_time_s
             for o in ("none", "sgd-nomomentum", "sgd", "adamw")}
    assert steps["none"] < steps["sgd-nomomentum"] <= steps["sgd"] <= steps["adamw"]


@pytest.mark.parametrize("optimizer, per_tensor", [("adafactor", 2), ("adamw8bit", 1)])
def test_the_host_waits_inside_the_update(optimizer, per_tensor):
    """Adafactor's two .item() of norms per tensor; bitsandbytes' sync_gpu after each tensor."""
    low, upd = _updates(_run(optimizer=optimizer))
    assert list(low.sync[upd]) == list(per_tensor * low.tensors[upd])
    calls = host.sync_calls(low, A100, Plan(optimizer=optimizer))
    assert (calls[upd] == low.sync[upd]).all()
    low, upd = _updates(_run(optimizer="adamw"))
    assert not low.sync[upd].any()


def test_a_layer_of_many_tensors_waits_for_each():
    """200 norms in one layer: 400 of Adafactor's waits (the lowered ``sync`` column held at
    most 127 before, an int8)."""
    from simulator.graph.lower import lower
    from simulator.graph.op import DType, Op, OpKind
    from simulator.graph.opgraph import OpGraph
    from simulator.training.backward import training_graph

    graph = OpGraph()
    graph.add(Op(name="norms", kind=OpKind.NORM, fn="layernorm", params=200 * 64,
                 param_tensors=200, layer=0, bytes_read=64 * 4, bytes_written=64 * 4,
                 out_bytes=64 * 4, dtype=DType.FP32), [])
    low = lower(training_graph(graph, Plan(optimizer="adafactor", precision="fp32")))
    upd = low.task == int(Task.UPDATE)
    assert list(low.sync[upd]) == [400] and list(low.vectors[upd]) == [200]


def test_launches_counted_from_the_code():
    class Fake:
        tensors = np.array([10, 30])
        params = np.array([10_000, 30_000])

    mask = np.array([True, True])
    calls, kernels = host.optimizer_launches(Fake, mask, Optimizer.ADAFACTOR, OptimizerImpl.SINGLE)
    assert list(calls) == [20 * 10, 20 * 30] and list(kernels) == [18 * 10, 18 * 30]
    calls, kernels = host.optimizer_launches(Fake, mask, Optimizer.ADAFACTOR,
                                             OptimizerImpl.FOREACH)
    # 13 _foreach_ calls and the CPU steps' increment over the list; 6 kernels and 3 host
    # calls per tensor left in list comprehensions
    assert calls.sum() == pytest.approx(14 + 9 * 40)
    # each layer's share of the 13 launches (40 tensors fit one launch of 48), then its own
    assert kernels.sum() == pytest.approx(13 + 6 * 40)
    calls, kernels = host.optimizer_launches(Fake, mask, Optimizer.ADAMW_8BIT,
                                             OptimizerImpl.SINGLE)
    assert list(calls) == [30, 90] and list(kernels) == [10, 30]
    calls, kernels = host.optimizer_launches(Fake, mask, Optimizer.SGD_NOMOMENTUM,
                                             OptimizerImpl.FUSED)
    assert calls.sum() == pytest.approx(1)


def test_adafactor_knows_a_layers_vectors():
    """Hugging Face's GPT2Block holds 12 tensors: ln_1, ln_2 (weight and bias each) and four
    Conv1D linears (weight and bias): 4 matrices, 8 vectors, whose Adafactor updates are 9
    kernels each, not a matrix's 18 (host.VECTOR_LINES); its attention's c_attn is one
    projection (``projections="fused"``)."""
    low, upd = _updates(_run(optimizer="adafactor", projections="fused"))
    layers = upd & (low.layer >= 0)
    assert set(low.tensors[layers]) == {12} and set(low.vectors[layers]) == {8}
    calls, kernels = host.optimizer_launches(low, layers, Optimizer.ADAFACTOR,
                                             OptimizerImpl.SINGLE)
    assert set(kernels) == {4 * 18 + 8 * 9} and set(calls) == {4 * 20 + 8 * 11}


def test_default_implementations():
    """PyTorch's Adafactor runs its for-loop unless foreach=True (``adafactor``: foreach
    defaults to None); bitsandbytes a kernel per tensor; the rest as PyTorch's default."""
    assert host.implementation(Plan(optimizer="adafactor"), A100) is OptimizerImpl.SINGLE
    assert host.implementation(Plan(optimizer="adamw8bit"), A100) is OptimizerImpl.SINGLE
    assert host.implementation(Plan(optimizer="sgd-nomomentum"), A100) is OptimizerImpl.FOREACH


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words", [
    (dict(optimizer="adafactor", optimizer_impl="fused"), "single or foreach"),
    (dict(optimizer="adamw8bit", optimizer_impl="foreach"), "runs as single"),
    (dict(optimizer="none", optimizer_impl="single"), "runs no update"),
    (dict(optimizer="none", grad_clip=True), "drop --grad-clip")])
def test_impossible_combinations_are_one_plan_error(kw, words):
    with pytest.raises(PlanError, match=words):
        Plan(**kw)


def test_cli_refuses_in_one_line_with_exit_2():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "predict", "gpt2",
                          "--device", "a100-sxm4-80gb", "--optimizer", "adamw8bit",
                          "--optimizer-impl", "fused"], capture_output=True, text=True)
    assert out.returncode == 2 and not out.stdout
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "optimizer_impl" in out.stderr and "adamw8bit" in out.stderr


def test_none_says_what_its_memory_still_holds():
    bf16 = [n for n in _run(precision="bf16", optimizer="none").notes if "optimizer none" in n]
    fp32 = [n for n in _run(precision="fp32", optimizer="none").notes if "optimizer none" in n]
    assert len(bf16) == 1 and "fp32 master" in bf16[0]
    assert len(fp32) == 1 and "master" not in fp32[0]
    assert not [n for n in _run(optimizer="adamw").notes if "optimizer none" in n]


# -- where the counts do not hold: refused in one line ------------------------------------------
@pytest.mark.parametrize("kw, words", [
    # the gradient reductions hang off the updates none does not run (pp 2 was a KeyError,
    # dp 8 priced no reduction at all)
    (dict(optimizer="none", dp=2), "dp = 2"),
    (dict(optimizer="none", pp=2, global_batch=4), "pp = 2"),
    (dict(optimizer="none", tp=2), "tp = 2"),
    (dict(optimizer="none", fused_grad_accumulation=False), "fused_grad_accumulation"),
    # ZeRO's flat shards: Adafactor keeps a full variance for a 1-D tensor
    (dict(optimizer="adafactor", dp=2, zero=1), "flat 1-D shards"),
    (dict(optimizer="adafactor", dp=2, zero=3), "flat 1-D shards"),
    # Megatron-LM builds Adam or SGD (megatron/core/optimizer/__init__.py)
    (dict(optimizer="adamw8bit", dp=2, sharding="megatron"), "Megatron-LM builds"),
    (dict(optimizer="adafactor", dp=2, sharding="megatron"), "Megatron-LM builds")])
def test_parallel_plans_the_counts_do_not_cover_are_refused(kw, words):
    with pytest.raises(PlanError, match=words):
        simulator.simulate("gpt2", A100, micro_batch=2, **kw)


def test_the_plans_they_do_cover_still_run():
    """One rank for none; ZeRO over one rank (nothing sharded) for Adafactor; Megatron-LM's
    SGD with momentum 0 (its --sgd-momentum)."""
    assert _run(optimizer="none", zero=0).step_time_s > 0
    assert _run(optimizer="adafactor", zero=1).step_time_s > 0
    assert simulator.simulate("gpt2", A100, micro_batch=2, dp=2, sharding="megatron",
                              optimizer="sgd-nomomentum").step_time_s > 0


def test_adafactor_refuses_convolutions():
    """A [cout, cin, kh, kw] weight's row and column factors are cout*cin*kh and cout*cin*kw
    elements (tests/test_optimizers.py::test_adafactor_and_sgd_against_pytorch measures them),
    not the m + n counted."""
    with pytest.raises(PlanError, match="convolution"):
        simulator.simulate("resnet-18", A100, micro_batch=2, optimizer="adafactor")


@pytest.mark.parametrize("device", ["tpu-v5p", "gaudi2", "m4-max", "epyc-9654"])
def test_bitsandbytes_runs_on_nvidia_and_amd_gpus_only(device):
    with pytest.raises(PlanError, match="NVIDIA and AMD GPUs"):
        simulator.simulate("gpt2", device, micro_batch=2, optimizer="adamw8bit")
    assert simulator.simulate("gpt2", "mi300x", micro_batch=2,
                              optimizer="adamw8bit").step_time_s > 0


# -- the counts against PyTorch's own code (an independent anchor) ----------------------------
def _dispatched(torch, params, optimizer):
    """(kernels, host syncs, host-only calls) of ``optimizer``'s second step, as the aten ops
    PyTorch dispatches: ops on the CPU ``step`` tensors are host-only, ``.item()`` of
    anything else (``_local_scalar_dense``) a wait for the device, the rest kernels (the
    profiler's record_function markers left out)."""
    from torch.utils import _pytree as pytree
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tensors = [a for a in pytree.tree_leaves((args, kwargs))
                       if isinstance(a, torch.Tensor)]
            calls.append((str(func), [t.data_ptr() for t in tensors]))
            return func(*args, **(kwargs or {}))

    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()   # the first step makes the states
    with Count():
        optimizer.step()
    steps = {s.data_ptr() for state in optimizer.state.values() for key, s in state.items()
             if key == "step" and torch.is_tensor(s)}
    kernels = syncs = host_only = 0
    for name, ptrs in calls:
        if name.startswith("profiler.") or "lift_fresh" in name:
            continue
        if ptrs and ptrs[0] in steps:   # step_t += 1, step_t.item(), the steps' foreach add
            host_only += 1
        elif "_local_scalar_dense" in name:
            syncs += 1
        else:
            kernels += 1
    return kernels, syncs, host_only


@pytest.mark.torch
def test_adafactor_and_sgd_against_pytorch():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor is PyTorch 2.5+")
    n = 3

    def matrices():
        return [torch.nn.Parameter(torch.randn(8, 16)) for _ in range(n)]

    # the for-loop (Adafactor's default: foreach=None runs _single_tensor_adafactor)
    ps = matrices()
    kernels, host_only = host.UPDATE_LINES[Optimizer.ADAFACTOR]
    syncs = UPDATE_SYNCS[Optimizer.ADAFACTOR]
    assert _dispatched(torch, ps, torch.optim.Adafactor(ps)) == (
        kernels * n, syncs * n, host_only * n)
    # foreach: 13 list calls, 6 kernels, 2 syncs and 3 host-only .item() of the steps per
    # tensor, and the steps' _foreach_add_
    ps = matrices()
    lists, steps_add = host.FOREACH_LINES[Optimizer.ADAFACTOR]
    own, own_host = host.FOREACH_PER_TENSOR[Optimizer.ADAFACTOR]
    assert _dispatched(torch, ps, torch.optim.Adafactor(ps, foreach=True)) == (
        lists + own * n, syncs * n, steps_add + own_host * n)

    # a layer of 2 matrices and 3 vectors (a linear's weight and bias, a norm's two, and a
    # GEMM's weight without bias) as host.optimizer_launches prices its update op
    class Layer:
        tensors, vectors, params = np.array([5]), np.array([3]), np.array([2 * 128 + 3 * 16])

    for foreach in (False, True):
        ps = [torch.nn.Parameter(torch.randn(*shape))
              for shape in ((8, 16), (16,), (16,), (16,), (16, 8))]
        kernels, waits, host_only = _dispatched(torch, ps,
                                                torch.optim.Adafactor(ps, foreach=foreach))
        calls, launches = host.optimizer_launches(
            Layer, np.array([True]), Optimizer.ADAFACTOR,
            OptimizerImpl.FOREACH if foreach else OptimizerImpl.SINGLE)
        assert (launches[0], calls[0], waits) == (kernels, kernels + host_only, 2 * 5)

    # its states: a row and a column vector per matrix (m + n elements, counted as 0 a
    # parameter); a convolution's are 1/kh + 1/kw of its elements (refused above)
    def states(shape):
        p = torch.nn.Parameter(torch.randn(*shape))
        p.grad = torch.randn_like(p)
        opt = torch.optim.Adafactor([p])
        opt.step()
        return sum(s.numel() for key, s in opt.state[p].items() if key != "step")

    assert states((8, 16)) == 8 + 16
    assert states((4, 3, 3, 3)) == 2 * 4 * 3 * 3      # 1/kh + 1/kw of its 108 elements
    assert states((4, 3, 1, 1)) == 2 * 4 * 3          # twice its elements
    assert states((16,)) == 16                         # a vector's full variance
    # SGD without momentum: param.add_ a tensor, one _foreach_add_ over the list
    ps = matrices()
    assert _dispatched(torch, ps, torch.optim.SGD(ps, lr=0.1, foreach=False)) == (
        host.UPDATE_LINES[Optimizer.SGD_NOMOMENTUM][0] * n, 0, 0)
    ps = matrices()
    assert _dispatched(torch, ps, torch.optim.SGD(ps, lr=0.1, foreach=True)) == (
        host.FUSED_LINES[Optimizer.SGD_NOMOMENTUM], 0, 0)
