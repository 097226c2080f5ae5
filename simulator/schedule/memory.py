"""Memory per device: model states under ZeRO, and the tensors live over a stage's schedule."""
from __future__ import annotations

import numpy as np

from simulator.errors import PlanError
from simulator.graph.op import DType, Phase, Role, Task
from simulator.plan.parallel import ParallelPlan, Sharding, positive
from simulator.plan.step import Plan
from simulator.schedule.step import in_flight
from simulator.training.finetune import frozen_weight_bytes
from simulator.training.fp8 import fp8_param_elements
from simulator.training.saved import activation_bytes


def zero_state_bytes(params: float, stage: int, dp: int, k: float = 12,
                     weight_bytes: float = 2, grad_bytes: float = 2) -> dict[str, float]:
    """Per-device model state under ZeRO (Rajbhandari et al. 2020, Fig. 1 and sec. 5).

    With Psi = params, N_d = dp and K optimizer bytes per parameter (12 for mixed-precision
    Adam: fp32 master, momentum, variance): stage 0 (2 + 2 + K) Psi; 1 (P_os) 2 Psi + 2 Psi +
    K Psi / N_d; 2 (P_os+g) 2 Psi + (2 + K) Psi / N_d; 3 (P_os+g+p) (2 + 2 + K) Psi / N_d.
    """
    if stage not in (0, 1, 2, 3):
        raise PlanError(f"zero = {stage!r} must be a ZeRO stage 0, 1, 2 or 3")
    positive(dp, "dp")
    return {"weights": weight_bytes * params / (dp if stage >= 3 else 1),
            "gradients": grad_bytes * params / (dp if stage >= 2 else 1),
            "optimizer_states": k * params / (dp if stage >= 1 else 1)}


def stage_memory(run, plan: Plan, parallel: ParallelPlan, m: int) -> dict[str, float]:
    """Per-device states under ZeRO plus the tensors live at the peak of the stage's step.

    States: ``parallel.zero_state_bytes`` of the parameters on this device (its stage's, on
    its tensor-parallel rank) over the dp replicas; frozen parameters (fine-tuning) hold
    their weights only, as stored (``simulator.training.finetune``); fp8 primary weights
    (``Plan.fp8_params``) 1 byte each. Activations: tensor
    liveness over the schedule of one micro-batch (``kernels.liveness``): an op's output lives
    from its start until the last op reading it ends, the backward ops that read saved tensors
    included, so recomputation shortens lifetimes the way it does in a framework. At the peak
    instant, tensors of forward and recomputed ops are ``activations``; tensors of backward ops
    (activation gradients, transient) are ``workspace``. Weight-gradient ops, the optimizer
    and the collectives write the persistent buffers already counted in the states. A
    pipeline stage holding k micro-batches in flight (``parallel.in_flight_micro_batches``)
    adds k - 1 micro-batches' saved activations (each as kept at the end of its forward; an
    approximation: they are freed as their backward runs). ZeRO-3 adds the weights it holds
    gathered (``zero3_gathered_params``) to the workspace.
    """
    lowered, forward = run.lowered, run.forward
    per = plan.state_bytes_per_param()
    sizes = dict(k=per["optimizer_states"], weight_bytes=per["weights"],
                 grad_bytes=per["gradients"])
    # a mixture of experts' experts (this rank's experts / ep of them) are sharded over the
    # dp x cp / ep ranks that hold them, Megatron-Core's expert-data-parallel group
    # (simulator.parallel.expert); the other parameters over the replicas
    experts = sum(op.params for op in forward.ops() if not op.frozen
                  and op.role in (Role.EXPERT_COLUMN, Role.EXPERT_ROW))
    out = zero_state_bytes(forward.trainable_params() - experts, parallel.zero,
                           parallel.shards, **sizes)
    if experts:
        held = zero_state_bytes(experts, parallel.zero, max(parallel.shards // parallel.ep, 1),
                                **sizes)
        out = {key: out[key] + held[key] for key in out}
    # fp8 primary weights (Plan.fp8_params, simulator.training.fp8): 1 byte each, not the
    # weight format's (ZeRO 1-2 only: each rank holds them whole)
    out["weights"] -= (sum(fp8_param_elements(forward, plan).values())
                       * (per["weights"] - DType.FP8.bytes))
    frozen = frozen_weight_bytes(forward, plan)   # fine-tuning: weights alone, maybe quantised
    if frozen:
        out["weights"] += frozen / (parallel.shards if parallel.zero == 3 else 1)
    counted, at, out_free, keep_free = live_tensors(lowered, run.start, run.end)
    gradients = 0.0
    if (parallel.zero == 3 and parallel.shards > 1 and parallel.sharding is Sharding.FSDP
            and parallel.fsdp_whole_model):
        gradients, at = whole_model_gradients(lowered, run.start, run.end, counted, out_free,
                                              keep_free)
    began = counted & (run.start <= at)
    live = (np.where(began & (at < out_free), lowered.out_bytes, 0)
            + np.where(began & (at < keep_free), lowered.keep_bytes, 0))
    forward_like = (lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.RECOMPUTE)
    out["activations"] = float(live[forward_like].sum())
    out["workspace"] = float(live[~forward_like].sum()) + gradients
    held = in_flight(parallel, m, run.stage)
    if held > 1:
        out["activations"] += (held - 1) * float(activation_bytes(forward, plan))
    if parallel.zero == 3 and parallel.shards > 1:
        # FSDP SHARD_GRAD_OP (reshard_after_forward False) keeps every unit gathered from
        # its forward to its backward
        # (or, one top-level unit, fsdp_whole_model, gathers the whole model at once)
        keeps = parallel.sharding is Sharding.FSDP and (not parallel.fsdp_reshard_after_forward
                                                        or parallel.fsdp_whole_model)
        held = forward.params() if keeps else zero3_gathered_params(forward)
        out["workspace"] += held * per["weights"]
    return out


def held_to_forward_end(lowered, start: np.ndarray, end: np.ndarray, counted: np.ndarray,
                        out_free: np.ndarray, keep_free: np.ndarray):
    """``(out_free, peak_time)`` with the outputs of the ops marked ``kv_cache`` freed no
    earlier than the end of the forward (the loss included): Hugging Face's GPT-2 returns
    each layer's key and value as views of its q, k, v projection's output, which the
    model's output holds until the caller drops it before the backward
    (``TransformerConfig.kv_cache_views``). The peak is found again as
    ``kernels.liveness`` finds it: frees before allocations at one instant, the earliest
    instant of the peak."""
    forward = lowered.phase == Phase.FORWARD
    release = float(end[forward].max()) if forward.any() else 0.0
    held = lowered.kv_cache.astype(bool) & forward   # (its backward ops carry the fact too)
    out_free = np.where(held, np.maximum(out_free, release), out_free)
    out, keep = lowered.out_bytes, lowered.keep_bytes
    return out_free, _peak_time(frees=((out_free, out, counted), (keep_free, keep, counted)),
                                allocations=((start, out, counted), (start, keep, counted)))


def whole_model_gradients(lowered, start: np.ndarray, end: np.ndarray, counted: np.ndarray,
                          out_free: np.ndarray, keep_free: np.ndarray) -> tuple[float, float]:
    """``(gradient_bytes, peak_time)`` under FSDP with the whole model one unit
    (``ParallelPlan.fsdp_whole_model``): its post-backward hook reduce-scatters every
    gradient at once when the backward is done, so each unsharded gradient a weight-gradient
    op writes lives from that op's start to the backward's end. The peak is found again over
    the step's tensors and these (frees before allocations at one instant, the earliest instant
    of the peak, as ``kernels.liveness``); the gradients live then are returned. Not counted:
    a cast of the gradients to another reduce dtype before the reduce-scatter."""
    grads = lowered.task == Task.WEIGHT_GRAD
    backward = lowered.phase == Phase.BACKWARD
    release = float(end[backward].max()) if backward.any() else 0.0
    out, keep = lowered.out_bytes, lowered.keep_bytes
    at = _peak_time(frees=((out_free, out, counted), (keep_free, keep, counted),
                           (np.full(len(out), release), out, grads)),
                    allocations=((start, out, counted), (start, keep, counted),
                                 (start, out, grads)))
    held = grads & (start <= at) & (at < release)
    return float(out[held].sum()), at


def _peak_time(frees, allocations) -> float:
    """The earliest instant at which the live bytes peak, each of ``frees`` and
    ``allocations`` a ``(times, bytes, chosen)`` of the ops: frees before allocations at one
    instant, as ``kernels.liveness`` orders them; 0.0 where nothing is ever live."""
    events = (*((t, -b, c) for t, b, c in frees), *allocations)
    times = np.concatenate([t[c] for t, _, c in events])
    delta = np.concatenate([b[c] for _, b, c in events])
    order = np.argsort(times, kind="stable")
    live = np.cumsum(delta[order])
    if not len(live) or live.max() <= 0:
        return 0.0
    return float(times[order][int(np.argmax(live))])


def zero3_gathered_params(forward) -> float:
    """Parameters ZeRO-3 holds gathered at once on a device: those outside the layers
    (embeddings, final norm, head: FSDP's root unit, gathered once for the forward and kept
    through the backward -- "do not free the root's parameters in the post-forward",
    torch.distributed.fsdp._runtime_utils; ``simulator.parallel.data`` gathers them so, as
    one unit) plus the largest layer twice (the one in use and the next, prefetched).

    Stage 3 shards the weights, saving (1 - 1/dp) of them, and adds these: where they exceed
    the saving -- few layers, a large vocabulary, dp 2 -- stage 3 needs more memory per
    device than stage 2 (tests/test_fuzz.py checks that only then)."""
    layers: dict[int, int] = {}
    for op in forward.ops():
        layers[op.layer] = layers.get(op.layer, 0) + op.params
    root = layers.pop(-1, 0)
    return float(root + 2 * max(layers.values(), default=0))


def live_tensors(lowered, start: np.ndarray, end: np.ndarray):
    """``(counted, peak_time, out_free, keep_free)`` of one schedule (``kernels.liveness``):
    which ops hold memory of their own (not weight-gradient ops, the optimizer, whose bytes
    are the persistent states) and when their outputs and kept bytes are freed; the outputs
    a returned key/value cache holds, to the forward's end (``held_to_forward_end``)."""
    from simulator.engine.dispatch import engine

    counted = (lowered.phase != Phase.OPTIMIZER) & (lowered.task != Task.WEIGHT_GRAD)
    _, at, out_free, keep_free = engine(len(lowered)).liveness(
        lowered.indptr, lowered.indices, lowered.edge_output, start, end,
        lowered.out_bytes, lowered.keep_bytes, counted)
    if lowered.kv_cache is not None and lowered.kv_cache.any():
        out_free, at = held_to_forward_end(lowered, start, end, counted, out_free, keep_free)
    return counted, at, out_free, keep_free


__all__ = ["held_to_forward_end", "live_tensors", "stage_memory", "whole_model_gradients",
           "zero3_gathered_params", "zero_state_bytes"]
