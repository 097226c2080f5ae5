"""The host that issues a device's kernels: eager PyTorch, torch.compile, CUDA graphs.

Eager PyTorch issues every kernel from Python: a CPU cost per op (Python, the dispatcher,
autograd's bookkeeping in the forward, the autograd engine in the backward, the launch call),
``host_per_op`` (``device.host_overhead_s``, else ``op_overhead_s``). A GPU (any device that
is not the CPU itself) runs its kernels asynchronously: the host is its own stream, issuing
the step's kernels in program order (the lowered order), and a kernel starts no earlier than
it was issued (``release``), after its predecessors and when its stream is free
(``simulator.engine.kernels.schedule_issued``). When kernels are shorter than the host's cost
per op, the device waits for the host: the step is host-bound and scales with the op count,
not the FLOPs. On the device each kernel keeps its fixed cost ``op_overhead_s`` besides its
roofline time: the kernel-level fits (OpenXLA's H100 GEMM table, NeuSight's kernel tables)
were made with it, and refitting the H100's tile cost without it fits worse (median 7.2 %
instead of 3.1 %). On a CPU the host *is* the device: the per-op cost is serial with the
kernels, added to each op's time, as before.

- ``fusion = compiled`` (torch.compile / XLA): the fused kernels are launched from generated
  wrapper code, with no Python module call and no autograd node per op:
  ``COMPILED_HOST_FRACTION`` of the eager cost per kernel.
- ``graphs`` (CUDA graphs, ``torch.cuda.graph`` over the whole step): the step's kernels are
  replayed, one host call per micro-batch (one eager op's cost) and no host cost per kernel;
  on the device a kernel's fixed cost shrinks by ``GRAPH_SAVES_S``.
- The optimizer (``optimizer_impl``) launches per PyTorch's implementations
  (``optimizer_launches``): for-loop ``single`` (a kernel per tensor per line of the update),
  ``foreach`` (one call per line for all tensors, ``multi_tensor_apply`` launching a kernel
  per ``TENSORS_PER_LAUNCH`` tensors or ``ELEMENTS_PER_LAUNCH`` elements, whichever needs
  more) and ``fused`` (one call, one kernel per chunk list, the same limits).

Host synchronisations (``syncs``): before some ops the host calls ``torch.cuda.synchronize()``
and waits until the device has run everything issued before (every stream), so its issue
time of what follows is exposed (``simulator.engine.kernels.schedule_synced``); the call
itself costs one eager op. ``Plan.sync_each_layer`` (DeepSpeed activation checkpointing's
``synchronize_checkpoint_boundary``, GPT-NeoX's ``synchronize-each-layer``:
``deepspeed/runtime/activation_checkpointing/checkpointing.py`` v0.8.0,
``CheckpointFunction.forward`` synchronises before and after the checkpointed block's forward,
``.backward`` before its recomputation and after its backward) and ``Plan.sync_each_pass``
(``deepspeed/utils/timer.py`` v0.3.13-v0.6.3: ``SynchronizedWallClockTimer.Timer.start`` and
``stop`` call ``torch.cuda.synchronize()``, and the engine's ``wall_clock_breakdown`` timers
start and stop around each micro-batch's forward, backward and step; its ``ThroughputTimer``
synchronises as each micro-batch's forward starts, every version): a micro-batch then starts
with the device idle, the host issuing its first op while the device waits.
A dropless mixture of experts under expert parallelism synchronises before each MoE layer's
dispatch all-to-all in the forward (Megatron-Core's all-to-all dispatcher reads the split
sizes on the host: ``simulator.parallel.expert``, the op's ``sync`` fact).

One autograd call, two ops: a convolution's backward is one ``aten::convolution_backward``
call (PyTorch ``tools/autograd/derivatives.yaml``, ``convolution``'s entry: ``input, weight,
bias: convolution_backward_symint(..., grad_input_mask)``, one formula for all three
gradients), which hwsim prices as two ops, the data gradient and the weight gradient. On a CPU,
where the host's cost is the call's, a weight gradient whose data gradient is also in the graph
(``shared_call``) pays no per-call cost of its own: the data gradient pays it, once. Profiled
on the development machine (torch 2.13 CPU, one thread, 2026-12-05, Q1's
``benchmarks/profile_step_cpu.py``): the ResNet-style test model's step runs 9
``convolution_backward`` calls for its 9 convolutions, which hwsim priced as 17 ops. A first
convolution, whose input needs no gradient, runs the call for its weight alone (one op, one
cost). On a GPU the call launches a kernel per gradient, each keeping its fixed cost; the
host's cost of the one call is still counted twice there (not modelled).

Launch blocking (``Plan.launch_blocking``, ``blocking``): with ``CUDA_LAUNCH_BLOCKING=1`` CUDA
makes every kernel launch synchronous ("Programmers can globally disable asynchronicity of
kernel launches ... by setting the CUDA_LAUNCH_BLOCKING environment variable to 1", CUDA C++
Programming Guide, "Concurrent Execution between Host and Device"; PyTorch's "CUDA semantics",
"Asynchronous execution": "you can force synchronous computation by setting environment
variable CUDA_LAUNCH_BLOCKING=1"). NCCL's kernels are launched the same way and block too
(NVIDIA/nccl PR #774, J. Bachan, 2023-01-20: "CUDA_LAUNCH_BLOCKING=1 causes that kernel launch
to block until the kernel completes"; sjeaugey in NVIDIA/nccl issue #141, 2018-11-05: NCCL
works with it from CUDA 9). So the host issues an op only once the kernel before it, on any
stream, has ended: every op is a synchronisation (``syncs``) that costs no call of its own
(the wait is inside the launch), and no op is issued ahead of the micro-batch (``release``).
An op's time on the step is then its host cost plus its device time, nothing of the host
hidden behind the device and no two kernels (a collective beside a GEMM) running at once.
The host's cost per op is the same ``host_per_op`` as without it (the device spec's, e.g.
the A100's 3.3 us of PyTorch's operator_benchmark, early 2020) and each kernel keeps its fixed
cost on the device; what the wait itself adds (the driver noticing the kernel's end before the
launch returns) has no kernel-level measurement here and is not modelled (0). Refused where
CUDA does not run (not an NVIDIA GPU) and with ``graphs`` (a graph replays its kernels in one
launch: not modelled).

Not modelled: the loss's ``.item()`` and other synchronisations at the step's end (a step
starts with host and device both idle, ``simulator.schedule.step``: the same thing); the CUDA
launch queue's depth (the host never stalls on a full queue); host threads of
several GPUs contending for one CPU; backward hooks' Python cost (DDP, FSDP).
"""
from __future__ import annotations

import numpy as np

from hardware_specs.spec import DeviceClass, DeviceSpec
from simulator.errors import PlanError
from simulator.graph.lower import Lowered, members
from simulator.graph.op import OpKind, Phase, Task
from simulator.parallel.data import NCCL_COPY_IN, NCCL_COPY_OUT
from simulator.plan.step import OPTIMIZER_IMPLS, Fusion, Optimizer, OptimizerImpl, Plan
from simulator.training.backward import WGRAD
from simulator.training.projections import SLICE as SLICE_FN

# What a CUDA graph saves on the device per kernel: NVIDIA, "Getting Started with CUDA Graphs"
# (A. Gray, 2019, https://developer.nvidia.com/blog/cuda-graphs/): a 2.9 us kernel on a V100
# took 3.8 us per kernel launched back to back in a stream (host launches overlapped, no
# synchronisation) and 3.4 us in a graph: 0.4 us less per kernel (never below zero).
GRAPH_SAVES_S = 3.8e-6 - 3.4e-6
# Host cost of a kernel launched from torch.compile's generated wrapper code, as a fraction of
# eager's per-op cost: measured on the development machine (torch 2.13 CPU, one thread, best
# of 3 x 20,000 calls): an op with no autograd (x + x of 8 elements under no_grad) 0.99 us;
# a chain of 50 multiplies, forward and backward, 6.76 us per forward op, i.e. 3.38 us per
# kernel (forward and backward each one): 0.99 / 3.38 = 0.29. The wrapper's call per kernel is
# a dispatch without the module call and the autograd node (AOTAutograd compiles the backward
# too). hwsim calibrate measures both figures on a host (the bare dispatch_s and
# op_overhead_s it fits).
COMPILED_HOST_FRACTION = 0.29
# Host cost per rank of the Python loops that build DeepSpeed v0.3.13's list collectives
# (``list_views``), as a fraction of an eager op's: measured on the development machine with
# benchmarks/host_list_views.py (torch 2.13 CPU, one thread, best of 7, 1,536 ranks; three
# runs on 2026-12-06 under a load of 5 on 2 cores: the eager kernel 10.7 / 11.9 / 12.0 us, the
# gather loop 0.60 / 0.55 / 0.54 of it, the reduce-scatter loop 0.65 / 0.58 / 0.55; medians
# used). The eager kernel is COMPILED_HOST_FRACTION's reference (a 50-multiply chain, forward
# and backward, per kernel). Four runs on the quiet machine later that day (02:20 UTC, load
# 0.3-0.6): the eager kernel 4.55-9.16 us, the gather loop 1.00 / 0.54 / 0.61 / 0.61 of it, the
# reduce-scatter loop 1.20 / 0.33 / 0.69 / 0.68: the ratio is noisy run to run (best of 7 of
# microsecond loops), the seven runs' medians 0.60 and 0.65, within that spread of the figures
# used; not refitted.
GATHER_VIEW_FRACTION = 0.55
SCATTER_VIEW_FRACTION = 0.58
# multi_tensor_apply (aten/src/ATen/native/cuda/MultiTensorApply.cuh, depth_to_max_tensors):
# a launch takes at most 110, 64, 48, 36 tensors for 1, 2, 3, 4 tensor lists; AdamW's foreach
# lines take 1 to 3 lists (48 used), the fused kernel 4 (params, grads, exp_avg, exp_avg_sq).
TENSORS_PER_LAUNCH = {OptimizerImpl.FOREACH: 48, OptimizerImpl.FUSED: 36}
# ... and at most depth_to_max_blocks = 320 blocks of kChunkSize = 65,536 elements each (the
# same file; apex's multi_tensor_apply.cuh has the same limits): a launch covers at most
# 20,971,520 elements, so a large layer's update takes several.
ELEMENTS_PER_LAUNCH = 320 * 65536
# The update's lines, counted in PyTorch's torch/optim/adamw.py (commit 002d2f0) without
# amsgrad, capturable or maximize, and torch/optim/sgd.py with momentum and weight decay:
# (device kernels per tensor or list, host-only calls besides).
# _single_tensor_adamw per tensor: step_t += 1 (a CPU tensor: host only); param.mul_,
# exp_avg.lerp_, exp_avg_sq.mul_, .addcmul_, exp_avg_sq.sqrt(), / bias_correction2_sqrt,
# .add_(eps), param.addcdiv_: 8 kernels. _multi_tensor_adamw: the same 8 lines as _foreach_
# calls over every tensor, and the step increment. _fused_adamw: _foreach_add_ of the
# (device) steps and _fused_adamw_: 2 calls. SGD (_single_tensor_sgd): grad.add(param),
# buf.mul_().add_(), param.add_(): 4 kernels; _fused_sgd_: 1.
# SGD without momentum (its default weight decay 0): param.add_, 1 kernel; _fused_sgd_: 1.
# Adafactor (torch/optim/_adafactor.py, PyTorch 2.13.0, weight decay 0), per tensor: the
# parameter's norm, the gradient's row norm then square_, div_ and row_var.lerp_, the same for
# the columns, the outer product, row_var.mean, clamp_, div_, clamp_, rsqrt_, mul_(grad), the
# update's norm, param.add_: 18 kernels; step_t += 1 and step_t.item() on the CPU step tensor:
# 2 host-only (its two .item() of device norms are synchronisations, ``UPDATE_SYNCS``). Its
# foreach form (``_multi_tensor_adafactor``): 13 _foreach_ calls over the list (mul_, div_,
# lerp_ for the rows and for the columns, clamp_min_ and div_ of the estimate, clamp_min_,
# rsqrt_, mul_ by the gradients, mul_ by the step sizes, add_ to the parameters) and the CPU
# steps' _foreach_add_, host only; per tensor (``FOREACH_PER_TENSOR``) the calls it leaves in
# list comprehensions: the parameter's norm, the row and column norms, the outer product,
# row_var.mean and the update's norm (6 kernels) and three .item() of the CPU step (host).
# bitsandbytes' AdamW8bit (``Optimizer8bit.step``, ``Optimizer2State.update_step`` at 95f9af3),
# per tensor: one kernel, after p.data.contiguous() and p.grad.contiguous() (host only).
UPDATE_LINES = {Optimizer.ADAMW: (8, 1), Optimizer.ADAM: (8, 1), Optimizer.SGD: (4, 0),
                Optimizer.SGD_NOMOMENTUM: (1, 0), Optimizer.ADAFACTOR: (18, 2),
                Optimizer.ADAMW_8BIT: (1, 2), Optimizer.NONE: (0, 0)}
FUSED_LINES = {Optimizer.ADAMW: 2, Optimizer.ADAM: 2, Optimizer.SGD: 1,
               Optimizer.SGD_NOMOMENTUM: 1}
FOREACH_LINES = {Optimizer.ADAFACTOR: (13, 1)}     # a foreach form's own calls, where they differ
FOREACH_PER_TENSOR = {Optimizer.ADAFACTOR: (6, 3)}  # (kernels, host only) per tensor in foreach
# Adafactor's 1-D tensors (biases, norms' weights: the update op's ``vectors``) skip the factors:
# per tensor param.norm, grad * grad, variance.lerp_, clone, clamp_, rsqrt_, mul_(grad), the
# update's norm, param.add_: 9 kernels, and the step's 2 host-only calls. Its foreach form
# groups them apart (``_group_tensors_by_device_dtype_and_is_multidim``): 7 _foreach_ calls
# (mul, lerp_, clamp_min_, rsqrt_, mul_ by the gradients, mul_ by the step sizes, add_) and the
# steps' _foreach_add_, and per tensor the parameter's norm, the clone and the update's norm
# (3 kernels) and three .item() of the CPU step. Counted as tests/test_optimizers.py counts
# the aten ops PyTorch 2.13.0 dispatches.
VECTOR_LINES = {Optimizer.ADAFACTOR: (9, 2)}
FOREACH_VECTOR_LINES = {Optimizer.ADAFACTOR: (7, 1)}
FOREACH_VECTOR_PER_TENSOR = {Optimizer.ADAFACTOR: (3, 3)}


def blocking(plan: Plan | None, device: DeviceSpec) -> bool:
    """Whether every kernel launch waits for its kernel to end (``Plan.launch_blocking``,
    CUDA_LAUNCH_BLOCKING=1); a PlanError where ``device`` is no NVIDIA GPU, where CUDA's
    switch does not exist."""
    if plan is None or not plan.launch_blocking:
        return False
    if device.device_class is not DeviceClass.GPU or device.vendor != "NVIDIA":
        raise PlanError(f"launch_blocking = true is CUDA's CUDA_LAUNCH_BLOCKING=1: "
                        f"{device.name} ({device.vendor}, {device.device_class.value}) is not "
                        "an NVIDIA GPU; drop --launch-blocking")
    return True


def serial(device: DeviceSpec) -> bool:
    """Whether ``device``'s host is the device itself (a CPU): its per-op costs are paid in
    line with its kernels, not on a stream of their own."""
    return device.device_class is DeviceClass.CPU


#: The GPUs bitsandbytes' 8-bit optimizer kernel runs on (bitsandbytes-foundation/bitsandbytes
#: 95f9af3: ``kOptimizerStatic8bit2StateBlockwise`` in csrc/kernels.cu, built for CUDA and,
#: through csrc/compat.cuh, HIP (ROCm); bitsandbytes/backends/*/ops.py register
#: ``optimizer_update_8bit_blockwise`` for cuda, xpu and cpu only, the cpu one a chain of
#: PyTorch ops).
BNB_KERNEL_VENDORS = ("NVIDIA", "AMD")


def check_optimizer_device(plan: Plan, device: DeviceSpec) -> None:
    """PlanError where ``plan``'s optimizer does not run as counted on ``device``:
    bitsandbytes' AdamW8bit is one CUDA/HIP kernel a tensor (``BNB_KERNEL_VENDORS``'s GPUs);
    its CPU path dequantises, updates and quantises with PyTorch ops (backends/cpu/ops.py,
    ``_optimizer_update_8bit_blockwise_cpu``), not counted, and TPUs, Gaudi, Trainium, IPUs,
    FPGAs and Apple GPUs have no kernel of it."""
    if plan.optimizer is Optimizer.ADAMW_8BIT and (
            device.device_class is not DeviceClass.GPU or device.vendor not in BNB_KERNEL_VENDORS):
        raise PlanError(f"optimizer = adamw8bit: bitsandbytes' 8-bit kernel runs on NVIDIA and "
                        f"AMD GPUs, not on {device.name} ({device.vendor} "
                        f"{device.device_class.value}); pick another optimizer")


def implementation(plan: Plan | None, device: DeviceSpec) -> OptimizerImpl:
    """The optimizer implementation a step runs: the plan's, else PyTorch's default
    (``torch/optim/optimizer.py`` ``_default_to_fused_or_foreach``: foreach when every
    parameter is on a CUDA-like device, the for-loop on a CPU; fused only when asked)."""
    if plan is not None and plan.optimizer_impl is not None:
        return plan.optimizer_impl
    own = OPTIMIZER_IMPLS.get(plan.optimizer) if plan is not None else None
    if own:   # PyTorch's Adafactor and bitsandbytes: a for-loop unless asked (step.py)
        return own[0]
    return OptimizerImpl.SINGLE if serial(device) else OptimizerImpl.FOREACH


def optimizer_launches(lowered: Lowered, ops: np.ndarray, optimizer: Optimizer,
                       impl: OptimizerImpl) -> tuple[np.ndarray, np.ndarray]:
    """(host calls, device kernels) of the update ops ``ops`` (a mask): each hwsim update op
    holds one layer's ``tensors``; a foreach or fused call covers every tensor of the step, so
    its calls are shared out over the layers by their tensors. Adafactor's 1-D tensors (the
    ops' ``vectors``) run their own lines (``VECTOR_LINES``), in a foreach group of their own."""
    tensors = lowered.tensors[ops].astype(np.float64)
    elements = lowered.params[ops].astype(np.float64)   # the rank's share under ZeRO
    vectors = getattr(lowered, "vectors", None)
    vectors = (np.minimum(vectors[ops].astype(np.float64), tensors)
               if vectors is not None and optimizer in VECTOR_LINES else np.zeros_like(tensors))
    groups = [(tensors - vectors, elements, UPDATE_LINES[optimizer],
               FOREACH_LINES.get(optimizer), FOREACH_PER_TENSOR.get(optimizer, (0, 0)))]
    if vectors.any():   # their elements are a few per mille: the launches go by tensors
        groups.append((vectors, np.zeros_like(elements), VECTOR_LINES[optimizer],
                       FOREACH_VECTOR_LINES[optimizer], FOREACH_VECTOR_PER_TENSOR[optimizer]))
    calls, launches = np.zeros_like(tensors), np.zeros_like(tensors)
    for count, size, (kernels, host_only), listed, (own, own_host) in groups:
        if impl is OptimizerImpl.SINGLE:
            calls += (kernels + host_only) * count
            launches += kernels * count
            continue
        share = count / max(count.sum(), 1.0)
        if impl is OptimizerImpl.FOREACH:
            kernels, host_only = listed or (kernels, host_only)
            lines = kernels + host_only
        else:
            lines, own, own_host = FUSED_LINES[optimizer], 0, 0
        calls += lines * share + (own + own_host) * count
        launches += (kernels if impl is OptimizerImpl.FOREACH else 1) * np.maximum(np.maximum(
            count / TENSORS_PER_LAUNCH[impl], size / ELEMENTS_PER_LAUNCH), share) + own * count
    return calls, launches


def costs(lowered: Lowered, device: DeviceSpec,
          plan: Plan | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-op float64 ``(overhead_s, issue_s)``: what each op costs on the device besides its
    roofline time, and what issuing it costs the host. On a CPU (``serial``) the host's cost
    is the device's: ``overhead_s`` holds it and ``issue_s`` is zero."""
    n = len(lowered)
    graphs = plan is not None and plan.graphs
    if graphs and serial(device):
        raise PlanError(f"graphs = true needs a GPU (CUDA graphs): {device.name} is a CPU; "
                        "drop --graphs")
    blocking(plan, device)   # refused where CUDA does not run
    compiled = plan is not None and plan.fusion is Fusion.COMPILED
    per_op = host_per_op(device) * (COMPILED_HOST_FRACTION if compiled else 1.0)
    kernel = ~(lowered.mask("kind", OpKind.COLLECTIVE) & (lowered.nbytes == 0))  # f's identity
    # a fused projection's slice views (simulator.training.projections): no kernel
    kernel &= ~(lowered.mask("kind", OpKind.COPY) & lowered.among("fn", (SLICE_FN,)))
    host = np.where(kernel, per_op, 0.0)
    launches = kernel.astype(np.float64)
    updates = lowered.mask("kind", OpKind.OPTIMIZER)  # the optimizer runs eagerly, compiled or not
    if updates.any():
        optimizer = plan.optimizer if plan is not None else Optimizer.ADAMW
        impl = implementation(plan, device)
        calls, kernels = optimizer_launches(lowered, updates, optimizer, impl)
        # the measured per-tensor cost (calibration, 0 otherwise) is that of the
        # implementation it was measured under, the device's default: another is its counted
        # calls alone
        measured = impl is implementation(None, device) and device.optimizer_overhead_s > 0
        per_tensor = lowered.tensors[updates] * device.optimizer_overhead_s
        if measured and impl is OptimizerImpl.SINGLE:
            calls_s = host_per_op(device) + per_tensor    # the measurement holds the calls
        elif measured:
            calls_s = calls * host_per_op(device) + per_tensor
        else:
            calls_s = calls * host_per_op(device)
        host[updates] = calls_s
        launches[updates] = kernels
        host[np.argmax(updates)] += device.step_overhead_s  # the step's fixed framework cost
    # the copies out of a list all-gather (``simulator.parallel.data.nccl_copy_out``) and
    # into a list reduce-scatter (``nccl_copy_in``): ``tensors`` kernels launched from C++
    # (ProcessGroupNCCL), one per tensor, each a dispatch without the module call and the
    # autograd node
    copies = lowered.among("fn", (NCCL_COPY_OUT, NCCL_COPY_IN))
    if copies.any():
        launches[copies] = lowered.tensors[copies]
        host[copies] = lowered.tensors[copies] * COMPILED_HOST_FRACTION * host_per_op(device)
    fixed = np.full(n, float(device.op_overhead_s))   # each kernel's fixed cost on the device
    for fn, own in device.function_overhead_s.items():  # a function's own per-call cost
        calls = lowered.among("fn", (fn,))
        host[calls] = own
        fixed[calls] = own
    if serial(device):
        host[shared_call(lowered)] = 0.0   # the data gradient's call computes it too
        return host, np.zeros(n)
    host += sync_calls(lowered, device, plan) * host_per_op(device)   # the synchronize() calls
    host += list_views(lowered) * host_per_op(device)   # DeepSpeed 2021's lists of views
    if graphs:
        fixed = np.maximum(fixed - GRAPH_SAVES_S, 0.0)
    return fixed * launches, host


#: Functions whose backward is one call computing every gradient it is asked for:
#: ``aten::convolution_backward`` (``tools/autograd/derivatives.yaml``, ``convolution``).
ONE_CALL_BACKWARD = frozenset({"conv1d", "conv2d", "conv3d", "conv_transpose1d",
                               "conv_transpose2d", "conv_transpose3d"})


def list_views(lowered: Lowered) -> np.ndarray:
    """Float64 per op: the eager ops' worth of host time DeepSpeed v0.3.13 spends in Python
    building the list of one view per rank that each list collective takes, before issuing it
    (microsoft/DeepSpeed v0.3.13, deepspeed/runtime/zero/partition_parameters.py).

    - A list all-gather (``_allgather_param``): after the buffer's ``torch.zeros`` and
      ``torch.cuda.synchronize()``, ``partitions.append(flat_tensor.narrow(...))`` and a
      ``torch.distributed.get_rank`` per rank: ``GATHER_VIEW_FRACTION`` of an eager op per
      rank, on the gather the copies out read (whose synchronisation precedes it, so the
      device waits for the loop).
    - A list reduce-scatter (``_reduce_scatter_gradient``): ``param.grad.view(-1).narrow(...)``
      per rank, ``SCATTER_VIEW_FRACTION`` of an eager op per rank and parameter tensor, on
      the copies in (``nccl_copy_in``, issued before the reduce-scatters).

    The copies themselves, issued from C++ (ProcessGroupNCCL), are priced apart
    (``COMPILED_HOST_FRACTION`` each)."""
    out = np.zeros(len(lowered), dtype=np.float64)
    if lowered.fn is None:
        return out
    for i in np.flatnonzero(lowered.fn == NCCL_COPY_OUT):
        out[lowered.indices[lowered.indptr[i]]] += lowered.tensors[i] * GATHER_VIEW_FRACTION
    scatter = lowered.fn == NCCL_COPY_IN
    out[scatter] += lowered.tensors[scatter] * SCATTER_VIEW_FRACTION
    return out


def shared_call(lowered: Lowered) -> np.ndarray:
    """Bool per op: a weight gradient of a ``ONE_CALL_BACKWARD`` function whose data gradient
    (of the same forward op) is in the graph too, so that one call computes both. The ops are
    told by their names (``simulator.training.backward``: ``wgrad:<op>`` and ``dgrad:<op>``).
    Read-only, computed once per graph (a CPU calibration's fit prices each of its graphs tens
    of thousands of times, and the names' test was a tenth of its time)."""
    found = lowered.__dict__.get("_shared_call")   # frozen: the instance dict itself
    if found is None:
        found = _shared_call(lowered)
        found.setflags(write=False)
        lowered.__dict__["_shared_call"] = found
    return found


def _shared_call(lowered: Lowered) -> np.ndarray:
    out = np.zeros(len(lowered), dtype=bool)
    if lowered.fn is None:
        return out
    wgrad = (lowered.mask("task", Task.WEIGHT_GRAD) & lowered.mask("kind", OpKind.CONV)
             & members(lowered.fn, ONE_CALL_BACKWARD))
    if not wgrad.any():
        return out
    names = set(lowered.names)
    for i in np.flatnonzero(wgrad):
        prefix, _, forward = lowered.names[i].partition(":")
        out[i] = prefix == WGRAD and f"dgrad:{forward}" in names
    return out


def syncs(lowered: Lowered, device: DeviceSpec, plan: Plan | None = None) -> np.ndarray:
    """Bool per op: the host waits until the device has run everything issued before it (all
    False on a CPU, whose host is the device, and without the plan's sync fields):
    ``sync_calls`` > 0, and every op under launch blocking (``blocking``: the launch before it
    returned only when its kernel had ended, a wait with no call of its own)."""
    out = sync_calls(lowered, device, plan) > 0
    if blocking(plan, device):
        out[:] = True
    return out


def sync_calls(lowered: Lowered, device: DeviceSpec, plan: Plan | None = None) -> np.ndarray:
    """Float64 per op: the ``torch.cuda.synchronize()`` calls the host makes before issuing
    it, each costing the host one eager op (all 0 on a CPU and without the plan's sync fields).

    ``sync_each_layer``: at each boundary of a checkpointed layer's work on the compute stream,
    in issue order: its forward's first op and the op after its forward, its backward's first
    op (the recomputation) and the op after its backward (a layer's recomputation and backward
    are one block). Where one block ends and the next begins the host calls it twice
    (``CheckpointFunction`` synchronises as each block starts and as it ends: 2 calls per block
    and pass). ``sync_each_pass``: before the first op of the forward, of the backward
    (recomputation included) and of the optimizer step."""
    n = len(lowered)
    out = np.zeros(n, dtype=np.float64)
    if serial(device):
        return out
    # DeepSpeed 2021's list all-gathers: torch.cuda.synchronize() before each
    # (partition_parameters._allgather_param, v0.3.13), the gather each copy-out reads first
    for i in np.flatnonzero(lowered.fn == NCCL_COPY_OUT):
        out[lowered.indices[lowered.indptr[i]]] += 1
    # a dropless mixture of experts' dispatch all-to-all: the host reads the split sizes
    # first (simulator.parallel.expert), in the forward and its recomputation; flash-attn's
    # unpad_input, its nonzero and .item() before each gather (simulator.training.qkv);
    # DeepSpeed 2021's stage 1 optimizer, a wait per parameter tensor in its overflow and norm
    # walks (simulator.parallel.checks): the op's ``sync`` calls (not its backward copies')
    if lowered.sync is not None and lowered.sync.any():
        forward = members(lowered.phase, (int(Phase.FORWARD), int(Phase.RECOMPUTE),
                                          int(Phase.OPTIMIZER)))
        marked = (lowered.sync > 0) & forward
        out[marked] += lowered.sync[marked]
    if plan is None or not (plan.sync_each_layer or plan.sync_each_pass):
        return out
    compute = np.flatnonzero(~(lowered.mask("kind", OpKind.COLLECTIVE) & (lowered.nbytes > 0)))
    if not len(compute):
        return out
    phase = lowered.phase[compute]
    backward = members(phase, (int(Phase.BACKWARD), int(Phase.RECOMPUTE)))
    if plan.sync_each_pass:
        for mask in (phase == int(Phase.FORWARD), backward, phase == int(Phase.OPTIMIZER)):
            if mask.any():
                out[compute[np.argmax(mask)]] += 1
    if plan.sync_each_layer:
        layer = lowered.layer[compute]
        checkpointed = np.isin(layer, np.unique(lowered.layer[lowered.phase ==
                                                              int(Phase.RECOMPUTE)]))
        block = np.where(phase == int(Phase.FORWARD), 0, np.where(backward, 1, 2))
        checkpointed &= (layer >= 0) & (block < 2)   # the update is no checkpointed block
        change = np.r_[True, (layer[1:] != layer[:-1]) | (block[1:] != block[:-1])]
        ended = np.r_[False, checkpointed[:-1]]   # the op before closes a checkpointed block
        out[compute[change & checkpointed]] += 1   # a block starts
        out[compute[change & ended]] += 1          # a block ends
    return out


def host_per_op(device: DeviceSpec) -> float:
    """The host's cost of issuing one eager op on ``device``."""
    return float(device.op_overhead_s if device.host_overhead_s is None
                 else device.host_overhead_s)


def release(issue_s: np.ndarray, device: DeviceSpec, plan: Plan | None = None) -> np.ndarray:
    """When the host has issued each op, in float64 seconds from the micro-batch's start: the
    running sum of the issue costs in program order, from the first op's issue (the host
    issues it while the device still runs the micro-batch before: micro-batches run back to
    back, so a step that is not host-bound waits on the host only as it starts, for one op).
    Under ``graphs`` one replay call, issued ahead as well, releases every kernel at once;
    under launch blocking (``blocking``) nothing is issued ahead: the host issues the
    micro-batch's first op after the last kernel before it has ended."""
    if plan is not None and plan.graphs or not len(issue_s):
        return np.zeros(len(issue_s))
    issued = np.cumsum(issue_s)
    if plan is not None and plan.sync_each_pass or blocking(plan, device):
        return issued   # the micro-batch starts with a synchronisation: no op issued ahead
    return issued - issued[0]


def note(lowered: Lowered, time_s: np.ndarray, per_micro: np.ndarray, device: DeviceSpec,
         plan: Plan | None = None) -> str | None:
    """A line for the result when the host sets the pace: its issue time of one micro-batch
    exceeds the device's kernel time of it (None otherwise, and on a CPU)."""
    if serial(device):
        return None
    issue = costs(lowered, device, plan)[1]
    if plan is not None and plan.graphs:
        return None   # one replay call per micro-batch
    host_s, device_s = float(issue[per_micro].sum()), float(time_s[per_micro].sum())
    if blocking(plan, device):
        return (f"CUDA_LAUNCH_BLOCKING: each launch waits for its kernel, so the host's "
                f"{host_s * 1e3:.3g} ms per micro-batch ({host_per_op(device) * 1e6:.3g} us per "
                f"eager op) adds to its {device_s * 1e3:.3g} ms of kernels, and no collective "
                "overlaps compute (simulator/cost/host.py)")
    if host_s <= device_s:
        return None
    return (f"the host issuing kernels sets the pace: {host_s * 1e3:.3g} ms of host time per "
            f"micro-batch ({host_per_op(device) * 1e6:.3g} us per eager op) against "
            f"{device_s * 1e3:.3g} ms of kernels; --graphs (CUDA graphs) or --fusion compiled "
            "cut it (simulator/cost/host.py)")


__all__ = ["COMPILED_HOST_FRACTION", "ELEMENTS_PER_LAUNCH", "GATHER_VIEW_FRACTION", "GRAPH_SAVES_S",
           "SCATTER_VIEW_FRACTION", "blocking", "costs", "host_per_op", "implementation",
           "list_views", "note", "optimizer_launches", "release", "serial", "sync_calls", "syncs"]
