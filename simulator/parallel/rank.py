"""One rank's graph of a parallel plan: the plan checked against the workload, the forward of
one pipeline stage on one tensor-/context-parallel rank (``stage_forward``), and its training
step with the data-parallel collectives, lowered (``build_stage``, the device-independent half
that sweeps memoize). Pricing and scheduling it is ``simulator.schedule``'s.
"""
from __future__ import annotations

import math
from dataclasses import replace

from hardware_specs.cluster import ClusterSpec
from simulator.errors import PlanError
from simulator.graph.lower import Lowered, lower
from simulator.graph.opgraph import OpGraph
from simulator.parallel.context import (
    RING_CODES,
    TORCH_RING_TRACED,
    expanded_heads,
    gather_keys_values,
    widen_attention,
)
from simulator.parallel.data import (
    add_data_parallel,
    add_grad_accumulation,
    add_replicated_grad_reduce,
    add_tied_embedding_reduce,
    engine_reduces,
)
from simulator.parallel.expert import check as check_expert_parallel
from simulator.parallel.expert import local_members, reduce_expert_gradients, shard_expert_updates
from simulator.parallel.expert import shard as shard_experts
from simulator.parallel.partitioned import partition_checkpoints
from simulator.parallel.pipeline import block_on_p2p, overlap_p2p, stage_graph
from simulator.parallel.tensor import check as check_tensor_parallel
from simulator.parallel.tensor import split, use_userbuffers, wait_for_weight_gradients
from simulator.plan.parallel import (
    Dispatcher,
    ParallelPlan,
    PipelineEngine,
    Schedule,
    Sharding,
)
from simulator.plan.step import (
    Attention,
    Finetune,
    Fusion,
    LoraTarget,
    Optimizer,
    Plan,
    Projections,
    Recompute,
)
from simulator.training.backward import training_graph
from simulator.training.convnorm import fuse_conv_norm, fuse_norm_act
from simulator.training.finetune import adapt, dequantize
from simulator.training.fusion import fuse_attention, fuse_elementwise, math_attention
from simulator.training.layout import add_layout_transposes
from simulator.training.projections import fuse_projections
from simulator.training.qkv import add_qkv_kernels
from workloads.base import TransformerShape
from workloads.transformer import Style, TransformerConfig


def micro_batches(work, plan: Plan, parallel: ParallelPlan, num_devices: int) -> int:
    """Check ``parallel`` against the workload, batch and devices (PlanError naming the
    numbers); the micro-batches per step of each pipeline."""
    shape = _shape(work)
    if shape is None and (parallel.tp > 1 or parallel.pp > 1):
        raise PlanError(f"tp = {parallel.tp}, pp = {parallel.pp}: tensor and pipeline "
                        f"parallelism split transformer layers and {work.name} is not a "
                        "transformer: use dp (and zero) only")
    if parallel.cp > 1 and getattr(work, "style", None) is Style.VISION:
        raise PlanError(f"cp = {parallel.cp}: context parallelism splits a language model's "
                        f"sequences, and {work.name} is a vision transformer")
    if parallel.cp > 1 and shape is not None and not isinstance(work, TransformerConfig):
        raise PlanError(f"cp = {parallel.cp}: context parallelism builds the model for "
                        f"seq_len / cp tokens, and {work.name} was traced at its whole "
                        "sequence: use dp, tp and pp for an imported model")
    if plan.finetune is not Finetune.FULL and parallel.tp > 1 and shape is not None:
        _check_adapters(plan, parallel.tp, shape)
    if parallel.lora_a2a and plan.finetune is not Finetune.LORA:
        raise PlanError(f"lora_a2a = true moves LoRA adapters' outputs, and finetune = "
                        f"{plan.finetune.value} has none: add --finetune lora or drop "
                        "--lora-a2a")
    if plan.fp8_params and parallel.zero not in (1, 2):
        # Megatron-LM refuses --fp8-param-gather without its distributed optimizer (d98e8a64dd
        # megatron/training/arguments.py lines 1095-1097); ZeRO-3's (FSDP's) fp8 gathers are
        # not modelled (simulator.training.fp8)
        raise PlanError(f"fp8_params = true is modelled with a distributed optimizer, zero = 1 "
                        f"or 2 (Megatron-LM's --fp8-param-gather needs one), not zero = "
                        f"{parallel.zero}: add --zero 1 or drop --fp8-params")
    if parallel.sequence_parallel and parallel.tp == 1:
        raise PlanError("sequence parallelism splits the tensor-parallel ranks' tokens: it "
                        "needs tp > 1")
    if parallel.partition_activations and plan.recompute is not Recompute.FULL:
        raise PlanError("partition_activations splits checkpointed layer inputs: it needs "
                        f"recompute = full, not {plan.recompute.value} (--recompute full)")
    if (parallel.partition_activations and parallel.tp == 1
            and parallel.sharding not in (Sharding.DEEPSPEED, Sharding.DEEPSPEED_2021)):
        # the one-rank copies are DeepSpeed's (simulator.parallel.partitioned; its pipeline
        # engine already needs its sharding, ParallelPlan); Megatron-LM
        # refuses distributing saved activations at tp = 1 (megatron/training/arguments.py
        # line 1411 at d98e8a64dd: "assert args.tensor_model_parallel_size > 1")
        raise PlanError(f"partition_activations = true at tp = 1 is DeepSpeed's only (its "
                        f"one-rank group's copies), not sharding = {parallel.sharding.value}: "
                        "add --sharding deepspeed or deepspeed-2021, or use tp > 1")
    if parallel.hidden_sharded:
        _check_hidden_sharded(parallel, shape)
    _check_optimizer(plan, parallel)
    if shape is None:
        m = parallel.validate(num_devices, 1, 1, None, plan.global_batch, plan.micro_batch)
    else:
        m = parallel.validate(num_devices, shape.layers, shape.heads, shape.kv_heads,
                              plan.global_batch, plan.micro_batch, shape.sequence)
    if shape is not None and parallel.tp > 1:
        check_tensor_parallel(shape, parallel.tp)
    check_expert_parallel(work, parallel.ep)
    return m


#: The optimizers Megatron-LM builds (NVIDIA/Megatron-LM d98e8a64dd
#: megatron/core/optimizer/__init__.py lines 546-630: adam, lion, sgd with ``sgd_momentum``,
#: else "optimizer is not supported"; megatron/training/arguments.py line 2914 adds muon and
#: soap; none of them Adafactor or bitsandbytes').
MEGATRON_OPTIMIZERS = (Optimizer.ADAM, Optimizer.ADAMW, Optimizer.SGD, Optimizer.SGD_NOMOMENTUM)


def _check_optimizer(plan: Plan, parallel: ParallelPlan) -> None:
    """PlanError where ``plan``'s optimizer runs otherwise than ``simulator.plan.step``
    counts it under ``parallel``.

    - ``none``: every gradient reduction (data, context and expert parallelism's, the
      tensor-parallel replicas' and the pipeline's tied embeddings'), ZeRO's sharding and
      unfused gradient accumulation hang off a layer's update (``simulator.parallel.data``):
      one rank, fused accumulation only.
    - ``adafactor`` under ZeRO 1-3 over several ranks: DeepSpeed hands its optimizer one flat
      fp32 partition per group (microsoft/DeepSpeed 38327e07f
      deepspeed/runtime/zero/stage_1_and_2.py line 416, ``param_group['params'] =
      [self.single_partition_of_fp32_groups[i]]``; stage3.py likewise), as FSDP's flat
      parameters do, and PyTorch's Adafactor keeps a full ``variance`` for a 1-D tensor
      (torch/optim/_adafactor.py ``_init_group``), not the row and column factors counted.
    - Megatron-LM (``--sharding megatron``) builds Adam, SGD or its own (``MEGATRON_OPTIMIZERS``),
      not Adafactor or bitsandbytes'."""
    opt = plan.optimizer
    if opt is Optimizer.NONE:
        axes = [f"{name} = {value}" for name, value in (
            ("dp", parallel.dp), ("tp", parallel.tp), ("pp", parallel.pp), ("cp", parallel.cp),
            ("ep", parallel.ep), ("zero", parallel.zero)) if value > (0 if name == "zero" else 1)]
        if not parallel.fused_grad_accumulation:
            axes.append("fused_grad_accumulation = false")
        if axes:
            raise PlanError(f"optimizer = none is modelled on one rank: with {', '.join(axes)} "
                            "the gradient reductions and accumulations hang off the update it "
                            "does not run; use one device (dp = tp = pp = cp = ep = 1, zero 0) "
                            "or pick an optimizer")
    if opt is Optimizer.ADAFACTOR and parallel.zero and parallel.shards > 1:
        raise PlanError(f"optimizer = adafactor with zero = {parallel.zero}: ZeRO and FSDP hand "
                        "the optimizer flat 1-D shards, for which Adafactor keeps a full fp32 "
                        "variance instead of its row and column factors (not modelled); use "
                        "--zero 0 or another optimizer")
    if parallel.sharding is Sharding.MEGATRON and opt not in MEGATRON_OPTIMIZERS:
        raise PlanError(f"optimizer = {opt.value} with sharding = megatron: Megatron-LM builds "
                        "Adam, SGD (with or without momentum) or its own (Lion, Muon, SOAP), not "
                        f"{opt.value}; use --sharding fsdp or deepspeed, or --optimizer adamw")


def check_nodes(parallel: ParallelPlan, cluster: ClusterSpec | None) -> None:
    """PlanError when a tensor- or context-parallel group fills its nodes unevenly on a
    switched cluster (its collectives run in node-sized phases: ``simulator.cost.collectives``):
    tp ranks are contiguous, cp ranks tp apart (Megatron-LM's rank order)."""
    from hardware_specs.cluster import Topology
    if cluster is None or cluster.topology is Topology.TORUS:
        return
    per_node, tp, cp = cluster.devices_per_node, parallel.tp, parallel.cp
    if tp > per_node and tp % per_node:
        raise PlanError(f"tp = {tp} fills nodes of {per_node} devices unevenly: use a tp that "
                        f"divides {per_node} or is a multiple of it")
    local = max(min(cp, per_node // tp), 1)   # cp ranks in a node (as stage_forward places)
    if cp % local:
        raise PlanError(f"cp = {cp} with tp = {tp} fills nodes of {per_node} devices unevenly "
                        f"({local} of its ranks a node): use a cp that is a multiple of "
                        f"{local} or divides it")


def _check_adapters(plan: Plan, tp: int, shape: TransformerShape) -> None:
    """LoRA adapters split over tp ranks as NeMo's ``ParallelLinearAdapter`` splits them
    (``simulator.parallel.tensor``): beside a column-parallel linear (q, k, v; fc1, gate, up)
    A's rank r splits (Megatron-core's ``ColumnParallelLinear`` divides its output size by
    tp) and B's output features split as the base's do, which holds no replicated KV head."""
    column = {LoraTarget.QKV, LoraTarget.MLP} & plan.targets
    if column and plan.rank % tp:
        raise PlanError(f"lora_rank = {plan.rank} with tp = {tp}: the adapters beside "
                        "column-parallel linears split their rank over the tp ranks; use a "
                        f"rank that is a multiple of {tp} (--lora-rank)")
    if LoraTarget.QKV in plan.targets and shape.kv_heads < tp:
        raise PlanError(f"finetune = lora on qkv with kv_heads = {shape.kv_heads} < tp = {tp}: "
                        "the k and v adapters' outputs split over tp ranks and cannot follow "
                        "replicated KV heads; use tp <= kv_heads or --lora-targets o,mlp")


def _check_hidden_sharded(parallel: ParallelPlan, shape: TransformerShape | None) -> None:
    if parallel.sequence_parallel:
        raise PlanError("sequence_parallel and hidden_sharded split the same tensors (along "
                        "the tokens or the hidden dimension): choose one")
    if parallel.tp == 1:
        raise PlanError("hidden_sharded splits the tensor-parallel ranks' activations along "
                        "the hidden dimension: it needs tp > 1")
    if shape is not None and shape.hidden % parallel.tp:
        raise PlanError(f"hidden_sharded: tp = {parallel.tp} must divide hidden = "
                        f"{shape.hidden}")


def _shape(work) -> TransformerShape | None:
    """What splitting the workload's layers needs (a zoo or an imported transformer's)."""
    return getattr(work, "transformer", None)


def stage_forward(work, plan: Plan, parallel: ParallelPlan, stage: int,
                  cluster: ClusterSpec | None) -> tuple[OpGraph, OpGraph]:
    """(unsplit forward of a model of one stage's layers, the stage's forward on one rank)."""
    check_nodes(parallel, cluster)
    formats = plan.formats
    p = parallel.pp
    chunks = parallel.chunk_layers(work.layers)[stage] if p > 1 else []
    model = work.with_layers(sum(chunks)) if p > 1 else work
    if p > 1 and getattr(work, "moe", None) is not None:   # its dense layers: those it holds
        model = replace(model, moe=replace(work.moe, first_dense_layers=_dense_held(
            parallel, work.layers, work.moe.first_dense_layers, stage)))
    cp = parallel.cp
    if cp > 1:   # a rank's tokens (simulator.parallel.context)
        model = replace(model, seq_len=work.seq_len // cp)
    forward = adapt(model.forward_graph(plan.micro_batch, formats.activation, formats.weight),
                    plan)
    if plan.attention is Attention.FUSED:
        forward = fuse_attention(forward)
    if plan.math_attention_dropout:   # PyTorch's CPU build: SDPA's math path under dropout
        forward = math_attention(forward)
    forward = widen_attention(forward, cp)
    ranked = split(forward, parallel.tp, parallel.activations_split, _shape(work),
                   parallel.lora_a2a)
    per_node = cluster.devices_per_node if cluster else 1
    ranked = shard_experts(ranked, parallel.ep,
                           local_members(parallel.ep, parallel.tp, per_node),
                           parallel.moe_shared_expert_overlap,
                           parallel.moe_dispatcher is Dispatcher.DEEPEP,
                           getattr(work, "moe", None))
    # Megatron-LM's rank order: tp fastest, then cp, then dp, then pp
    ring = RING_CODES[parallel.cp_comm.value]
    shape = _shape(work)
    expand = 1
    if ring == RING_CODES["torch-ring"]:
        # PyTorch's ring takes the keys and values at the query heads (expanded_heads); inside
        # a compiled block it is traced into the graph (simulator.cost.ring)
        if shape is not None:
            expand = expanded_heads(shape.heads, shape.kv_heads, parallel.tp)
        if plan.fusion is Fusion.COMPILED:
            ring = TORCH_RING_TRACED
    ranked = gather_keys_values(ranked, cp, max(min(cp, per_node // parallel.tp), 1), ring,
                                expand)
    if plan.projections is Projections.FUSED:   # Megatron-Core's linear_qkv, linear_fc1
        ranked = fuse_projections(ranked)
    local = 2 if 2 * parallel.tp * parallel.cp * parallel.dp <= per_node else 1
    ranked = stage_graph(ranked, stage == 0, stage == p - 1, parallel.tp,
                         parallel.activations_split, local, chunks)
    return forward, ranked


def _dense_held(parallel: ParallelPlan, layers: int, dense: int, stage: int) -> int:
    """Of a mixture of experts' first ``dense`` (dense) layers, those pipeline device
    ``stage`` holds: its model chunks are chunks stage, stage + pp, ... of the model's."""
    sizes = [size for chunk in zip(*parallel.chunk_layers(layers)) for size in chunk]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    held = range(stage, len(sizes), parallel.pp)
    return sum(max(0, min(dense, starts[i] + sizes[i]) - starts[i]) for i in held)


def stand_ins(work, parallel: ParallelPlan) -> dict[int, int]:
    """Each middle pipeline device (1 .. pp - 2) -> the simulated device whose step stands
    for it: 0, the first device with its embedding at idle power
    (``simulator.schedule.step.pipeline_energy``), where it holds what the first holds (an
    even split); else the first middle device holding the same layers (an uneven split's
    stage 1; a mixture of experts whose dense first layers the first devices hold)."""
    if parallel.pp <= 2:
        return {}
    chunks = parallel.chunk_layers(work.layers)
    moe = getattr(work, "moe", None)
    dense = moe.first_dense_layers if moe is not None else 0

    def held(stage: int) -> tuple:
        return (tuple(chunks[stage]),
                _dense_held(parallel, work.layers, dense, stage) if dense else 0)

    seen = {} if parallel.uneven else {held(0): 0}
    return {stage: seen.setdefault(held(stage), stage) for stage in range(1, parallel.pp - 1)}


def build_stage(forward: OpGraph, plan: Plan, parallel: ParallelPlan,
                per_node: int) -> Lowered:
    """The device-independent half of a stage: its lowered training step (sweeps memoize it)."""
    step = dequantize(training_graph(forward, plan), plan)
    if plan.conv_norm_fusion:   # cuDNN's batch-norm/convolution fusion (training.convnorm)
        step = fuse_conv_norm(step)
    elif plan.norm_act_fusion:   # batch norm with its ReLU / residual add (training.convnorm)
        step = fuse_norm_act(step)
    step = add_layout_transposes(step, plan.channels_last)
    step = add_qkv_kernels(step, plan)   # eager rotary kernels, attention layout copies
    if parallel.partition_activations and not parallel.activations_split:
        # DeepSpeed's copies (simulator.parallel.partitioned); a bf16 step under DeepSpeed 2021
        # is DeeperSpeed's, which gathers the pieces in fp32
        partition_checkpoints(step, parallel.tp, parallel.sharding is Sharding.DEEPSPEED_2021)
    if not parallel.overlap_tp_comm:
        wait_for_weight_gradients(step)
    if parallel.tp_comm_overlap and parallel.tp > 1:
        use_userbuffers(step)   # TransformerEngine's userbuffers (simulator.cost.overlap)
    if plan.fusion is Fusion.COMPILED:
        step = fuse_elementwise(step)
    if not parallel.fused_grad_accumulation:
        add_grad_accumulation(step, plan)
    dp_local = math.gcd(parallel.replicas, max(per_node // parallel.tp, 1))
    # DeepSpeed's pipeline engine reduces the gradients after the step's last backward (its
    # ReduceGrads instruction; with one stage too, as GPT-NeoX runs it at pipe-parallel-size
    # 1: megatron/neox_arguments/arguments.py is_pipe_parallel = pipe_parallel_size >= 1,
    # EleutherAI/gpt-neox 53112bf) and blocks on each pipeline message; the plain engine
    # at ZeRO 0 all-reduces after the backward too (``engine_reduces``)
    deepspeed_engine = parallel.pipeline_engine is PipelineEngine.DEEPSPEED
    after = deepspeed_engine or engine_reduces(parallel, parallel.zero, plan)
    step = add_data_parallel(step, plan, parallel.replicas, parallel.zero, dp_local,
                             parallel.overlap_grad_reduce and not after, parallel)
    if deepspeed_engine and parallel.pp > 1:
        block_on_p2p(step)
    elif parallel.overlap_p2p_comm and parallel.schedule is Schedule.INTERLEAVED and \
            parallel.pp > 1:   # Megatron-LM turns it off for the other schedules
        overlap_p2p(step)
    reduce_expert_gradients(step, parallel.replicas, parallel.ep, parallel.tp * parallel.ep,
                            per_node)   # MoE parallel folding: cp folds into the experts' dp
    if parallel.zero:   # the experts' update: 1 / (shards / ep) of them, not 1 / shards
        shard_expert_updates(step, parallel.shards, parallel.ep)
    add_replicated_grad_reduce(step, plan)
    if parallel.pp > 1:   # Megatron-LM's rank order: the first and last stages are pp-1 apart
        ends_local = 2 if parallel.num_devices <= per_node else 1
        step = add_tied_embedding_reduce(step, plan, ends_local)
    return lower(step)


__all__ = ["build_stage", "micro_batches", "stage_forward", "stand_ins"]
