"""Context parallelism's attention as it runs: a ring of ``cp`` chunked attention calls per
layer, each beside the exchange of the next chunk of keys and values (``ParallelPlan.cp_comm``
p2p or torch-ring; the ops carry ``Lowered.ring``, ``simulator.parallel.context``).

The graph holds one attention op per layer over the rank's ``m = seq_len / cp`` queries and all
``cp m`` keys, and the all-gathers of the keys and values before it. A ring runs it as ``cp``
kernel calls on chunks instead, both in TransformerEngine's p2p ring (Megatron-LM's default
``--cp-comm-type p2p``: transformer_engine/pytorch/attention.py, ``AttnFuncWithCPAndKVP2P``)
and in PyTorch's ``context_parallel`` (torch/distributed/tensor/experimental/_attention.py,
``_templated_ring_attention`` and its backward, PyTorch 2.6-2.9). With a causal mask both
balance the load the same way: each rank holds chunks r and 2 cp - 1 - r of 2 cp (each
``c = m / 2`` tokens), and

- step 0 attends the local queries to the local keys under the causal mask (an m x m call);
- each of the cp - 1 later steps is a call without a mask on half of the block: the local
  queries against the first chunk of the arriving keys (steps i <= r), or the second local
  chunk of queries against all of them (steps i > r), m x c or c x m scores: the PyTorch
  source's "Note [Context parallelism load balance algorithm for causal masking]".

So a rank computes m^2/2 + (cp - 1) m^2/2 = cp m^2/2 scores, 1/cp of the causal whole, as
``simulator.cost.efficiency.executed_fraction`` counts the single op up to its block rounding.
Without a mask every step is a full m x m call. ``kernel_ratio`` prices each call with the
attention kernel fit (``simulator.cost.attention.pass_time_s``: its fixed cost per query block
and its waves over the SMs, at the call's shape) against the single op's price; devices with no
kernel fit keep the op's time (ratio 1: the same executed FLOPs at a flat efficiency). The
m x c steps are priced as such (the last rank's, which runs only those).

The exchange beside the calls (``exposed_s``), C the gathers' time and A the attention's:

- p2p: each step sends its chunk to the next rank while it computes, so step i + 1 waits for
  max(A / cp, C / (cp - 1)): T = max(A, A / cp + C), the userbuffers ring's form
  (``simulator.cost.overlap.pipelined_s`` with first = 1 / cp). Backward, the ring sends the
  keys and values again and the accumulated dK, dV after each step (2 C); the last step's
  dK, dV leave after it: T = max(A + 2 C / cp, A / cp + 2 C).
- torch-ring: PyTorch's default rotater (``_RotateMethod.ALL_GATHER``) gathers all the keys
  and values once, issued before step 0 and waited for at step 1, with the remaining cp - 1
  steps after the gather: T = max(A, (cp - 1) A / cp + C), i.e. first = (cp - 1) / cp. Backward it
  gathers them again the same way and, at each of the cp steps, sends the accumulated dK, dV of
  one chunk on in fp32 (the ``dkv_rotater``, ``_RotateMethod.ALL_TO_ALL``, ``accum_dtype``
  float32: twice a chunk's 16-bit bytes), the last waited for after the loop: 2 cp chunks
  against the gather's cp - 1, an exchange of C (1 + 2 cp / (cp - 1)) (``backward_exchange``),
  first = (cp - 1) / cp, last = 1 / cp of it.
- torch-ring inside a compiled block (``TORCH_RING_TRACED``, ``Plan.fusion`` compiled:
  torchtitan compiles each TransformerBlock with ``fullgraph=True``, pytorch/torchtitan 9dec370
  torchtitan/parallelisms/parallelize_llama.py line 303): torch.compile traces the ring into the
  block's graph, and a functional collective traced so is waited for where it is issued
  (torch/distributed/_functional_collectives.py ``_maybe_wrap_tensor``: "if _are_we_tracing():
  return wait_tensor(self)"; eager it returns an ``AsyncCollectiveTensor`` waited for at first
  use); inductor moves waits only with ``reorder_for_compute_comm_overlap``, False by default
  (torch/_inductor/config.py). So nothing of the exchange is hidden: T = A + C forward, A + C
  (1 + 2 cp / (cp - 1)) backward. Inductor fuses each merge step's pointwise ops into one
  kernel (``MERGE_STEP_TRACED``) and drops the send copies of steps 1 .. cp - 2, whose result
  the all-gather rotater never reads (dead code); the backward's accumulations, priced at one
  pass each below, stay.
- torch-ring's keys and values are gathered at the query heads (``simulator.parallel.context.
  expanded_heads``: torchtitan's ``repeat_kv`` before SDPA), so a grouped-query model's exchange,
  send copies and dK, dV accumulations move heads / kv_heads times its key/value bytes.
- torch-ring also merges each step's output into an fp32 running output with the
  log-sum-exps (``_SDPAMerger`` with ``convert_to_f32``, its default), as eager PyTorch ops
  on the whole output: per later step ``block_out.to(float32)`` (read 2, write 4 bytes per
  element), ``out - block_out`` (4 + 4, 4), the product with the sigmoid of the log-sum-exp
  difference (4, 4) and ``out - ...`` (4 + 4, 4): 38 bytes, 19 x the bf16 output
  (``MERGE_STEP``; the log-sum-exps' own ops, 1 / head_dim of that, are left out); the first
  step's conversion and the final cast back (``results``) 6 bytes, 3 x, each. Each step but
  the last copies the keys and values it sends into one buffer (``torch.cat``: read and
  write, 2 x their bytes). The backward accumulates dQ, dK and dV in fp32 (``accum_dtype =
  torch.float32``, ``grad_query += grad_query_``, ...): at least the accumulator read and
  written and the step's bf16 gradient read, 5 x one step's gradients' bytes (the rank's own
  dQ and its chunk's dK, dV, not the single op's dK, dV for all cp ranks' keys) for each of
  cp steps
  (a lower bound: the code's chunk-and-concatenate partial updates and the send buffers'
  copies are left out). These stream at the device's ``memory_bandwidth_bytes_per_s x
  memory_efficiency``, added to the attention op's time. The last rank's steps are counted
  (every later step of it a whole, not partial, merge: i <= rank).

TransformerEngine's forward corrects the output after the ring with one fused kernel per
step (``TE_CORRECTION``, ``TE_INIT``); its backward accumulates dQ into one buffer and dK, dV
into the received ones with eager ``add_`` / ``copy_`` in bf16 at every step (``TE_COPY``,
``TE_ADD``; the last rank's, whose later steps add the whole dQ), streamed the same way.

Not modelled: each call's own launch on the host (the ring's cp calls and PyTorch's eager
merge kernels are issued as one op; traced, the block's graph issues them), ``repeat_kv``'s own
copy of the keys and values, TransformerEngine's fp8 paths (per-step buffers, then
one combine), the ring's exchange contending with the calls for SMs or HBM
(``simulator.cost.interference`` sees the collectives' exposed time only), and ranks whose
steps mix m x c and c x m calls.
"""
from __future__ import annotations

import numpy as np

from simulator.graph.collective import Axis
from simulator.graph.op import DType, OpKind, Phase, Task
from simulator.parallel.context import RING_CODES, TORCH_RING_TRACED

#: ``Lowered.ring`` codes (``simulator.parallel.context.RING_CODES``); TORCH_RING_TRACED:
#: PyTorch's ring inside a block under torch.compile (``Plan.fusion`` compiled).
P2P, TORCH_RING = RING_CODES["p2p"], RING_CODES["torch-ring"]
TORCH_RINGS = (TORCH_RING, TORCH_RING_TRACED)
#: Bytes a torch-ring merge step moves per output element, in units of the bf16 output's
#: bytes: to(float32) 2 + 4, out - block_out 4 + 4 + 4, times the sigmoid 4 + 4, out - that
#: 4 + 4 + 4: 38 = 19 x 2; the first step's conversion and the final cast back 2 + 4 (3 x 2)
#: each (``_SDPAMerger.step`` / ``_merge_one`` / ``results``, torch/distributed/tensor/
#: experimental/_attention.py, pytorch/pytorch 0123248a).
MERGE_STEP, MERGE_ENDS = 19, 3
#: A traced merge step: inductor fuses ``_SDPAMerger.step``'s pointwise chain into one kernel
#: between two SDPA calls, reading the fp32 running output (4 bytes) and the step's bf16
#: output (2), writing the fp32 output (4): 10 = 5 x 2 bytes per output element.
MERGE_STEP_TRACED = 5
#: The send buffer of each step but the last: ``torch.cat([key.flatten(), value.flatten()])``
#: reads and writes the keys and values (2 x their bytes).
SEND_COPY = 2
#: The backward's fp32 accumulation of dQ, dK, dV per step: read and write the fp32
#: accumulator, read the step's bf16 gradient (``grad_query += grad_query_``, ...): 5 x.
ACCUMULATE_STEP = 5
#: TransformerEngine's forward output correction (transformer_engine/pytorch/attention/
#: dot_product_attention/context_parallel.py at NVIDIA/TransformerEngine d0067d0da,
#: ``flash_attn_fwd_out_correction``, one jit-fused kernel: ``out.add_(out_per_step * exp(...))``
#: reads the running output and the step's and writes the output, all in the output's dtype:
#: 3 x its bytes per later step; ``flash_attn_fwd_out_correction_init`` reads and writes it
#: once, 2 x).
TE_CORRECTION, TE_INIT = 3, 2
#: TransformerEngine's backward accumulation of dQ, dK, dV (same file and commit,
#: ``AttnFuncWithCPAndKVP2P.backward``, bf16, lines 2653-2698 and 2756-2812), each
#: an eager in-place op in the gradients' dtype: ``dq.add_(dq_)`` reads both and writes one
#: (3 x the bytes it covers), ``dq.copy_(dq_)`` reads one and writes one (2 x). On the last
#: rank (``rank == cp_size - 1``) dQ is copied at step 0 and added at every later step:
#: 2 + 3 (cp - 1) x the rank's dQ. dK, dV (into the received ``dkv`` buffer) are half a
#: chunk at each step before the last (the local queries against the first half of the
#: arriving keys): step 0 copies half (``dk[0, ...].copy_(dk_)``, 1 x), steps 1 .. cp - 2 add
#: half (``dk[0, ...].add_(dk_)``, 1.5 x); the last step (the diagonal block) adds all
#: (``dk.add_(dk_)``, 3 x): 1.5 cp + 1 x the rank's dK, dV. Without a mask every step covers
#: the whole: 2 + 3 (cp - 1) x both.
TE_COPY, TE_ADD = 2, 3


def step_shapes(m: int, cp: int, causal: bool) -> list[tuple[int, int, bool, int]]:
    """The ring's kernel calls on one rank of ``m`` local queries: (queries, keys, causal,
    how many such calls)."""
    if cp <= 1:
        return [(m, m, causal, 1)]
    if not causal:
        return [(m, m, False, cp)]
    return [(m, m, True, 1), (m, max(m // 2, 1), False, cp - 1)]


def merge_bytes(out_bytes: float, kv_bytes: float, cp: int, ring: int,
                backward: bool, causal: bool = True) -> float:
    """Bytes the torch-ring merges and send copies (forward: ``out_bytes`` the output's,
    ``kv_bytes`` the rank's own keys and values) or accumulations (backward: ``out_bytes`` the
    rank's own dQ, ``kv_bytes`` its own dK, dV: one step's gradients) move; p2p:
    TransformerEngine's output corrections forward, its gradients' accumulation backward
    (``causal``: the last rank's half-chunk dK, dV steps). Traced (``TORCH_RING_TRACED``),
    each merge is one fused kernel and only the first send copy is live."""
    if cp <= 1:
        return 0.0
    if ring == P2P:
        if not backward:
            return out_bytes * (TE_CORRECTION * (cp - 1) + TE_INIT)
        whole = TE_COPY + TE_ADD * (cp - 1)
        halves = (TE_COPY / 2 + TE_ADD / 2 * (cp - 2) + TE_ADD) if causal else whole
        return out_bytes * whole + kv_bytes * halves
    if backward:
        return ACCUMULATE_STEP * cp * (out_bytes + kv_bytes)
    if ring == TORCH_RING_TRACED:
        return out_bytes * MERGE_STEP_TRACED * (cp - 1) + SEND_COPY * kv_bytes
    return out_bytes * (MERGE_STEP * (cp - 1) + 2 * MERGE_ENDS) + SEND_COPY * (cp - 1) * kv_bytes


def backward_exchange(cp: int) -> float:
    """PyTorch's ring's backward exchange in units of its forward all-gather: the keys and
    values gathered again (1) and, at each of the cp steps, the accumulated dK, dV of one
    rank's chunk sent on in fp32 (``dkv_rotater``, all-to-all, ``accum_dtype`` float32:
    twice a chunk's 16-bit bytes): 2 cp chunks against the gather's cp - 1 received."""
    return 1.0 + 2.0 * cp / (cp - 1.0)


def exposed_s(attention_s: float, comm_s: float, cp: int, ring: int, backward: bool) -> float:
    """Seconds of the exchange (``comm_s``: the gathers', or backward the reduce-scatters' of
    dK, dV) not hidden behind the ring's ``attention_s``."""
    from simulator.cost.overlap import pipelined_s

    if cp <= 1:
        return comm_s
    if ring in TORCH_RINGS and backward:
        comm_s *= backward_exchange(cp)
    if ring == TORCH_RING_TRACED:
        return comm_s   # each collective waited for where it is issued: nothing hidden
    if ring == P2P:
        first = 1.0 / cp
        comm_s *= 2.0 if backward else 1.0
    else:
        first = (cp - 1.0) / cp
    return pipelined_s(attention_s, comm_s, first, 1.0 / cp if backward else 0.0) \
        - attention_s


def kernel_ratio(lowered, device, ops: np.ndarray) -> np.ndarray:
    """Each ring attention op's time as the ring's calls over its time as one call, both
    under the device's attention kernel fit (1 where it has none)."""
    from simulator.cost.attention import fit_for, padded_head, pass_time_s, resolve

    ratio = np.ones(len(ops))
    kernel = getattr(device, "attention_kernel", None)
    fits = fit_for(device, kernel)
    if fits is None:
        return ratio
    units = device.architecture.compute_units
    for out, j in enumerate(ops):
        if DType(int(lowered.dtype[j])) in (DType.FP32, DType.TF32):
            continue   # no fused kernel's fit (simulator.cost.attention.fitted_rates)
        backward = lowered.task[j] == Task.DATA_GRAD or (
            lowered.task[j] == Task.RECOMPUTE and lowered.out_bytes[j] == 0)
        params = fits[1] if backward else fits[0]
        k = float(padded_head(resolve(device, kernel), np.array([max(int(lowered.k[j]), 1)]))[0])
        m, n, batch = int(lowered.m[j]), int(lowered.n[j]), int(lowered.batch[j])
        causal = bool(lowered.causal[j])
        cp = int(lowered.ring_steps[j])

        def seconds(q, kv, mask):
            return float(pass_time_s(q, kv, k, batch, int(mask), backward, 1.0, params, units))

        whole = seconds(m, n, causal)
        steps = sum(count * seconds(q, kv, mask)
                    for q, kv, mask, count in step_shapes(m, cp, causal))
        ratio[out] = steps / whole if whole > 0 else 1.0
    return ratio


def ring_times(lowered, device, compute_s: np.ndarray, memory_s: np.ndarray,
               time_s: np.ndarray) -> np.ndarray:
    """Each op's seconds with the ring attention ops priced as their chunked calls (and
    merges) and the key/value collectives as the part of them the ring leaves exposed:
    ``ring_kernels`` then ``ring_exposure``."""
    return ring_exposure(lowered, ring_kernels(lowered, device, compute_s, memory_s, time_s)[1])


def ring_kernels(lowered, device, compute_s: np.ndarray, memory_s: np.ndarray,
                 time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute_s, time_s) with each ring attention op priced as its chunked calls: its
    compute times ``kernel_ratio``, its merges' traffic added to its time. The compute is
    returned too, so that the power model's busy share (``simulator.cost.power``,
    ``simulator.cost.energy``) is the calls' own: before, a ratio under 1 (a causal ring's
    calls skip more masked blocks than one call) shortened the op's time but not its compute,
    and a phase clocked on the times before it drew above the limit (gpt2-small on 2 A100s,
    cp 2, at a 184 W limit: the recompute phase 191 W)."""
    compute_s, time_s = compute_s.copy(), time_s.copy()
    ring = lowered.ring
    attention = np.flatnonzero((lowered.kind == OpKind.ATTENTION) & (ring > 0))
    if not len(attention):
        return compute_s, time_s
    stream = float(device.memory_bandwidth_bytes_per_s * device.memory_efficiency)
    for j, ratio in zip(attention, kernel_ratio(lowered, device, attention)):
        backward = lowered.task[j] == Task.DATA_GRAD
        cp = int(lowered.ring_steps[j])
        # the op reads its queries (the output's bytes) and all cp ranks' keys and values
        kv = max(float(lowered.bytes_read[j] - lowered.out_bytes[j]), 0.0) / cp
        out = float(lowered.out_bytes[j])
        if backward:   # it writes dQ for its m queries and dK, dV for all cp ranks' keys
            out = float(lowered.batch[j] * lowered.m[j] * lowered.k[j]
                        * DType(int(lowered.dtype[j])).bytes)
            kv = max(float(lowered.bytes_written[j]) - out, 0.0) / cp
        extra = merge_bytes(out, kv, cp, int(ring[j]), backward,
                            bool(lowered.causal[j])) / stream
        before = max(float(compute_s[j]), float(memory_s[j]))
        compute_s[j] *= ratio
        time_s[j] += max(float(compute_s[j]), float(memory_s[j])) - before + extra
    return compute_s, time_s


def ring_exposure(lowered, time_s: np.ndarray) -> np.ndarray:
    """Each op's seconds with the key/value collectives of the ring attention ops as the part
    of them the ring leaves exposed under the attention's time (``exposed_s``)."""
    time_s = time_s.copy()
    ring = lowered.ring
    attention = np.flatnonzero((lowered.kind == OpKind.ATTENTION) & (ring > 0))
    if not len(attention):
        return time_s
    comm = (lowered.kind == OpKind.COLLECTIVE) & (lowered.axis == int(Axis.CONTEXT)) & (
        ring > 0)
    readers = np.repeat(np.arange(len(lowered)), np.diff(lowered.indptr))
    attention_set = set(attention.tolist())
    priced = np.zeros(len(lowered), dtype=bool)   # a gather a recomputed attention reads too
    for j in attention:
        backward = lowered.task[j] == Task.DATA_GRAD
        if backward:   # the dK, dV reduce-scatters reading its gradients
            ops = readers[np.isin(lowered.indices, [j])]
            ops = ops[comm[ops] & (lowered.phase[ops] == Phase.BACKWARD)]
            # FlashAttention's recompute of S and P inside the backward runs in the ring too
            partners = [p for p in lowered.preds(j) if p in attention_set]
            attention_s = float(time_s[j] + time_s[partners].sum())
        elif lowered.task[j] == Task.RECOMPUTE and lowered.out_bytes[j] == 0:
            continue   # priced with its gradient kernel
        else:          # the gathers it reads
            ops = lowered.preds(j)
            ops = ops[comm[ops]]
            attention_s = float(time_s[j])
        ops = np.unique(ops)
        ops = ops[~priced[ops]]
        if not len(ops):
            continue
        comm_s = float(time_s[ops].sum())
        if comm_s <= 0:
            continue
        hidden = exposed_s(attention_s, comm_s, int(lowered.ring_steps[j]), int(ring[j]),
                           bool(backward))
        time_s[ops] *= hidden / comm_s
        priced[ops] = True
    return time_s


__all__ = ["ACCUMULATE_STEP", "MERGE_ENDS", "MERGE_STEP", "MERGE_STEP_TRACED", "P2P", "SEND_COPY",
           "TE_ADD", "TE_COPY", "TE_CORRECTION", "TE_INIT", "TORCH_RING", "TORCH_RINGS",
           "TORCH_RING_TRACED", "backward_exchange", "exposed_s",
           "kernel_ratio", "merge_bytes", "ring_exposure", "ring_kernels", "ring_times",
           "step_shapes"]
