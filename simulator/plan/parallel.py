"""How a step is split over devices: data, tensor, sequence and pipeline parallelism, ZeRO.

The plan is data (STYLE.md rule 1): ``ParallelPlan`` and its checks against a workload, batch
and device count. The closed forms it implies live where they are used: the pipeline's bubble
and in-flight micro-batches in ``simulator.schedule.pipeline``, per-device model state under
ZeRO in ``simulator.schedule.memory``; the collectives are built in the graph
(``simulator.parallel``) and priced by ``simulator.cost.collectives``.

Sources:
- Shoeybi et al. 2019, "Megatron-LM" (arXiv:1909.08053), sec. 3, Fig. 3-4: tensor-parallel MLP
  and attention, one all-reduce in the forward and one in the backward of each.
- Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
  (arXiv:2205.05198), sec. 4.2.2: sequence parallelism turns each all-reduce into a
  reduce-scatter + all-gather of the same total bytes; sec. 4.2.3: in-flight activations of the
  interleaved schedule.
- Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
  Megatron-LM" (SC21, arXiv:2104.04473), sec. 2.2: bubble fraction (p-1)/m for GPipe and
  1F1B, (p-1)/(v m) interleaved; 1F1B keeps at most p micro-batches in flight; sec. 4.1:
  scatter/gather of pipeline messages over the tensor-parallel ranks.
- Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models" (SC20, arXiv:1910.02054), Fig. 1 and sec. 5: per-device model state of stages 1-3;
  sec. 7: their communication volume (2 x params for stages 0-2, 3 x params for stage 3).
- Zhao et al. 2023, "PyTorch FSDP" (VLDB, arXiv:2304.11277): FULL_SHARD is ZeRO-3,
  SHARD_GRAD_OP is ZeRO-2.
- Dubey et al. 2024, "The Llama 3 Herd of Models" (arXiv:2407.21783), sec. 3.3.2: context
  parallelism (``cp``, ``simulator.parallel.context``) and uneven, interleaved pipeline
  stages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from simulator.errors import PlanError, in_interval, shown


#: ZeRO's stages (Rajbhandari et al. 2020): 0 none, 1 optimizer states, 2 + gradients, 3 + weights.
ZERO_STAGES = range(4)
#: The sizes of a plan, each a positive integer (devices: dp x tp x pp x cp).
COUNTS = ("dp", "tp", "pp", "virtual_stages", "cp", "ep")
#: The most devices a plan spans (and the bound of each of its sizes): 2**20, five times the
#: largest training clusters built (about 200,000 GPUs).
MAX_DEVICES = 2**20
#: The most samples in a step (and micro-batches in one): 2**30, a thousand times the largest
#: published global batch of sequences (Llama 3 405B: 16M tokens of 8,192).
MAX_BATCH = 2**30


class Schedule(str, Enum):
    GPIPE = "gpipe"              # all forwards, then all backwards (Huang et al. 2019)
    ONE_F_ONE_B = "1f1b"         # PipeDream-Flush (Narayanan et al. 2021, sec. 2.2.1)
    INTERLEAVED = "interleaved"  # v model chunks per device (Narayanan et al. 2021, sec. 2.2.2)


class Sharding(str, Enum):
    """Who runs data parallelism and ZeRO (``simulator.parallel.data``): the buckets of a
    reduction, the unit of a gather, when it is issued."""
    # PyTorch: DDP's buckets at ZeRO 0, FSDP at 3 (one unit per wrapped transformer block);
    # ZeRO 1-2 are Megatron-LM's distributed optimizer (as ``MEGATRON``)
    FSDP = "fsdp"
    # Megatron-LM: its DDP's buckets at ZeRO 0, its distributed optimizer at 1-2; no ZeRO 3
    MEGATRON = "megatron"
    DEEPSPEED = "deepspeed"  # DeepSpeed ZeRO: one unit per module, prefetch by bucket of params
    # DeepSpeed of 2021 (v0.3.13-v0.3.16): every module's fetch synchronises the device; ZeRO 3
    # gathers and reduce-scatters one parameter at a time through list collectives (zero-fill,
    # copies out and in: simulator.parallel.data); the pipeline engine's ReduceGrads
    # all-reduces every gradient at ZeRO 1 too
    DEEPSPEED_2021 = "deepspeed-2021"


class Dispatcher(str, Enum):
    """How a mixture of experts' tokens reach their experts' ranks (simulator.parallel.expert)."""
    ALLTOALL = "alltoall"  # one all-to-all, each token copy sent to its expert's rank
    #                        (Megatron-Core --moe-token-dispatcher-type alltoall)
    DEEPEP = "deepep"      # DeepEP: over the inter-node network once per token and node, then
    #                        forwarded inside the node over NVLink (Megatron-Core flex + DeepEP)


class CpComm(str, Enum):
    """How context parallelism's ranks exchange keys and values (simulator.parallel.context,
    simulator.cost.ring)."""
    ALLGATHER = "allgather"    # one all-gather before the attention, not hidden (Llama 3,
    #                            Dubey et al. 2024 sec. 3.3.2; Megatron-LM --cp-comm-type
    #                            all_gather)
    P2P = "p2p"                # TransformerEngine's ring: cp attention steps, each chunk's
    #                            send/recv beside the previous step (Megatron-LM's default
    #                            --cp-comm-type p2p)
    TORCH_RING = "torch-ring"  # PyTorch's context_parallel (torchtitan): cp SDPA steps and
    #                            their log-sum-exp merges, keys and values (at the query
    #                            heads) all-gathered beside the first step; under compiled
    #                            fusion traced into the graph, the exchange not hidden


class PipelineEngine(str, Enum):
    """Who runs the pipeline's schedule (``simulator.parallel.pipeline``)."""
    MEGATRON = "megatron"    # Megatron-LM's schedules: p2p on their own stream
    DEEPSPEED = "deepspeed"  # DeepSpeed's PipelineEngine: blocking p2p on the compute stream


#: DeepSpeed's defaults (deepspeed/runtime/zero/config.py, DeepSpeedZeroConfig):
#: stage3_prefetch_bucket_size 5e7, stage3_max_live_parameters 1e9,
#: stage3_param_persistence_threshold 1e5 (params), reduce_bucket_size 5e8 (elements).
DEEPSPEED_PREFETCH_BUCKET = 50_000_000
DEEPSPEED_MAX_LIVE = 1_000_000_000
DEEPSPEED_PERSISTENCE = 100_000
DEEPSPEED_REDUCE_BUCKET = 500_000_000


@dataclass(frozen=True)
class ParallelPlan:
    """dp x tp x pp devices; ``micro_batches`` per step per pipeline (None: from the batch)."""

    # A field's metadata is what the command line and sweeps need of it (simulator.plan.fields).
    dp: int = field(default=1, metadata={
        "unset": True, "help": "data-parallel replicas (default: the devices over tp x pp)"})
    tp: int = field(default=1, metadata={"help": "tensor-parallel ranks (Megatron)"})
    pp: int = field(default=1, metadata={"help": "pipeline stages"})
    # Context parallelism: each of cp ranks holds seq_len / cp tokens of every sequence
    # (Megatron-LM --context-parallel-size; Llama 3 405B's long-context training, Dubey et
    # al. 2024, sec. 3.3.2). The parameters are replicated over them: gradients reduce, and
    # ZeRO shards, over dp x cp ranks.
    cp: int = field(default=1, metadata={
        "help": "context parallel: ranks sharing each sequence's tokens (Megatron-LM "
                "--context-parallel-size; needs --attention fused)"})
    # How the cp ranks exchange keys and values (CpComm; simulator.cost.ring). Default p2p,
    # Megatron-LM's (megatron/training/arguments.py line 3221 at NVIDIA/Megatron-LM
    # d98e8a64dd: --cp-comm-type default ["p2p"]), the framework whose rank order and
    # schedules hwsim models by default.
    cp_comm: CpComm = field(default=CpComm.P2P, metadata={
        "help": "context parallel's key/value exchange: p2p (TransformerEngine's ring, "
                "overlapped), torch-ring (PyTorch context_parallel: SDPA steps and merges; "
                "with --fusion compiled traced, its exchange not hidden) or "
                "allgather (gathered before the attention, not hidden)"})
    # Expert parallelism: a mixture of experts' routed experts sharded over ep ranks taken
    # from the dp x cp replicas (Megatron-Core --expert-model-parallel-size; expert tensor
    # parallelism = tp), their tokens exchanged by all-to-all (simulator.parallel.expert).
    # Adds no devices; the experts' gradients reduce over the dp x cp / ep replicas holding
    # the same experts (Megatron-Core's expert-data-parallel group: simulator.parallel.expert).
    ep: int = field(default=1, metadata={
        "help": "expert parallel: ranks sharing a mixture of experts' experts, taken from "
                "the dp x cp replicas (Megatron-Core --expert-model-parallel-size)"})
    # The shared experts run beside the all-to-alls (Megatron-Core
    # --moe-shared-expert-overlap, DeepSeek-V3); False, Megatron-Core's default: after the
    # routed experts' combine, in sequence (simulator.parallel.expert).
    moe_shared_expert_overlap: bool = field(default=False, metadata={
        "help": "run a mixture of experts' shared experts beside the expert-parallel "
                "all-to-alls (Megatron-Core --moe-shared-expert-overlap)"})
    moe_dispatcher: Dispatcher = field(default=Dispatcher.ALLTOALL, metadata={
        "help": "how tokens reach their experts across nodes: alltoall (every copy sent to "
                "its rank) or deepep (once per token and node over the inter-node network, "
                "then over NVLink: DeepEP)"})
    zero: int = field(default=0, metadata={
        "choices": ZERO_STAGES,
        "help": "ZeRO stage over the dp replicas (3 = FSDP full shard)"})
    sequence_parallel: bool = field(default=False, metadata={
        "help": "split norms and dropouts over the tp ranks (Korthikanti et al. 2022)"})
    # The same split along the hidden dimension instead of the tokens: GSPMD's "2D finalized"
    # layout (Xu et al. 2021, sec. 3.3), which PaLM 540B trained with on TPU v4 (Chowdhery et
    # al. 2022, sec. 4: 12-way model and 256-way fully sharded data parallelism "in the 2D
    # finalized" layout), 2,048 tokens not dividing by its 12 model-parallel chips. Each rank
    # holds 1/tp of every tensor outside the matmuls, an all-gather before each column-parallel
    # group and a reduce-scatter after each row-parallel one: the bytes, FLOPs and traffic of
    # sequence parallelism, needing tp | hidden instead of tp | seq_len. Not modelled: the
    # norms' per-token statistics all-reduced over the tp ranks (4 bytes per token and norm).
    hidden_sharded: bool = field(default=False, metadata={
        "help": "split norms, dropouts and the residual stream over the tp ranks along the "
                "hidden dimension (GSPMD's 2D finalized layout, PaLM's): as "
                "--sequence-parallel, needing tp to divide the hidden size, not seq_len"})
    # A row-parallel LoRA adapter's exit under sequence parallelism (simulator.parallel.tensor):
    # B's n / tp output features gathered whole (all-gather) then split to this rank's tokens
    # (no kernel; its backward all-gathers the gradient), NeMo's default; or one all-to-all to
    # the token shard (NeMo's ParallelLinearAdapter a2a_experimental, default False:
    # nemo/collections/nlp/modules/common/megatron/adapters/parallel_adapters.py at NVIDIA/NeMo
    # 579983f; MLPerf's Llama 2 70B LoRA sets it, LORA_A2A=1). Needs sequence parallelism (NeMo
    # reads it only then) and a LoRA fine-tune (simulator.parallel.rank).
    lora_a2a: bool = field(default=False, metadata={
        "help": "LoRA under sequence parallelism: the adapters beside o and down move their "
                "output to the token shard by one all-to-all (NeMo's a2a_experimental), not "
                "an all-gather then a split (needs --sequence-parallel, --finetune lora)"})
    schedule: Schedule = field(default=Schedule.ONE_F_ONE_B, metadata={
        "help": "pipeline schedule"})
    virtual_stages: int = field(default=1, metadata={
        "help": "model chunks per device for the interleaved schedule"})
    # None: from the global batch, which the command line and sweeps give instead.
    micro_batches: int | None = field(default=None, metadata={"derived": True})
    # Reduce gradients during the backward, per layer as they are ready (PyTorch DDP, FSDP,
    # DeepSpeed, Megatron-LM's --overlap-grad-reduce since 2023-09); False: after the whole
    # backward, as Megatron-LM did before (NVIDIA/Megatron-LM issue #391).
    overlap_grad_reduce: bool = field(default=True, metadata={
        "help": "reduce data-parallel gradients after the whole backward, not during it "
                "(Megatron-LM before --overlap-grad-reduce)"})
    # ZeRO 1-2 (Megatron-LM's distributed optimizer): the all-gather of the updated weights
    # issued by the next step's forward, each layer's before the layer runs, on the
    # data-parallel stream while earlier layers compute (Megatron-LM --overlap-param-gather:
    # megatron/core/distributed/param_and_grad_buffer.py, finish_param_sync waits for a
    # bucket's gather in the module's forward pre-hook and dispatches the next bucket's;
    # simulator.parallel.data). Default False as Megatron-LM's (DistributedDataParallelConfig
    # .overlap_param_gather = False, megatron/core/distributed/
    # distributed_data_parallel_config.py at d98e8a64dd); NeMo's recipes set it True
    # (nemo/collections/llm/recipes/{mixtral_8x7b,mixtral_8x22b,gpt3_175b,llama31_70b}.py at
    # NVIDIA/NeMo 8cfedd7, their DistributedDataParallelConfig). Nothing else reads it.
    overlap_param_gather: bool = field(default=False, metadata={
        "help": "ZeRO 1-2: all-gather the updated weights during the next step's forward, "
                "each layer's before it runs (Megatron-LM --overlap-param-gather)"})
    # DeepSpeed activation checkpointing's partition_activations (GPT-NeoX
    # partition-activations): each checkpointed layer's input is kept 1/tp per tensor-parallel
    # rank and all-gathered before the layer is recomputed, with copies around both (deepspeed/
    # runtime/activation_checkpointing/checkpointing.py: partition_activations in
    # CheckpointFunction.forward, get_full_inputs in its backward; simulator.parallel
    # .partitioned). At tp = 1 the copies still run (a one-rank group), and only DeepSpeed runs
    # them there: --sharding deepspeed or deepspeed-2021 (Megatron-LM refuses it). Default False, as
    # DeepSpeed's (activation_checkpointing/config.py).
    partition_activations: bool = field(default=False, metadata={
        "help": "DeepSpeed: keep each checkpointed layer input split over the tensor-parallel "
                "ranks, all-gathered before its recomputation, with DeepSpeed's copies (needs "
                "recompute = full; at tp = 1, --sharding deepspeed or deepspeed-2021)"})
    # A tensor-parallel backward collective overlaps the weight-gradient GEMMs of the linears
    # whose input gradient it reduces (Megatron-LM's asynchronous tensor-parallel all-reduce,
    # on by default; --no-async-tensor-model-parallel-allreduce turns it off). False: it waits
    # for them, as autograd ran a linear's input and weight gradients in one node before the
    # collective's backward (Megatron-LM of Narayanan et al. 2021, before that option).
    overlap_tp_comm: bool = field(default=True, metadata={
        "help": "tensor-parallel backward all-reduces wait for the weight gradients "
                "(Megatron-LM --no-async-tensor-model-parallel-allreduce)"})
    # TransformerEngine's userbuffers: each sequence-parallel all-gather and reduce-scatter
    # split into chunks and overlapped with its GEMM (simulator.cost.overlap). Default False
    # as Megatron-LM's (--tp-comm-overlap; ModelParallelConfig.tp_comm_overlap = False,
    # megatron/core/model_parallel_config.py at NVIDIA/Megatron-LM d98e8a64dd), which asserts
    # sequence parallelism with it (megatron/training/arguments.py).
    tp_comm_overlap: bool = field(default=False, metadata={
        "help": "overlap the sequence-parallel all-gathers and reduce-scatters with their "
                "GEMMs, chunk by chunk (Megatron-Core --tp-comm-overlap, TransformerEngine's "
                "userbuffers; needs --sequence-parallel)"})
    # Megatron-LM's interleaved schedule posts each micro-batch's pipeline send and receive
    # while another computes (simulator.parallel.pipeline.overlap_p2p). The dataclass default
    # is False (ModelParallelConfig.overlap_p2p_comm, megatron/core/model_parallel_config.py
    # at d98e8a64dd; Megatron-LM's command line turns it on, --no-overlap-p2p-communication,
    # megatron/training/arguments.py); only the interleaved schedule overlaps (Megatron-LM
    # turns it off for the others): nothing changes with 1f1b or gpipe.
    overlap_p2p_comm: bool = field(default=False, metadata={
        "help": "interleaved schedule: pipeline sends and receives run while the next "
                "chunk computes (Megatron-Core overlap_p2p_comm)"})
    # Weight gradients accumulate inside the GEMM (Megatron-LM --gradient-accumulation-fusion,
    # on by default). False: each micro-batch's weight gradients are then added into the
    # gradient buffer, a pass reading both and writing one (Megatron-LM's DDP hook,
    # ``param.main_grad.add_(param.grad.data)``, megatron/model/distributed.py; PyTorch's
    # AccumulateGrad does the same from the second micro-batch on).
    fused_grad_accumulation: bool = field(default=True, metadata={
        "help": "add each micro-batch's weight gradients into the gradient buffer in a pass "
                "of its own (Megatron-LM --no-gradient-accumulation-fusion; PyTorch's "
                "autograd)"})
    # Uneven pipeline stages: the layers of the first and of the last stage, the others
    # sharing the rest evenly (Megatron-LM --decoder-first-pipeline-num-layers and
    # --decoder-last-pipeline-num-layers; Llama 3 405B, 126 layers on 16 stages, ran one layer
    # fewer on the first and last, Dubey et al. 2024, sec. 3.3.2). With the interleaved
    # schedule a stage is a model chunk (Narayanan et al. 2021, sec. 2.2.2): the first is the
    # embedding's chunk on the first device, the last the head's chunk on the last device,
    # and either may hold no layer (Llama 3 405B: "the first model chunk on the first stage
    # has only the embedding, and the last model chunk on the last stage has only output
    # projection and loss calculation"). None: layers / (pp x virtual_stages) each. A
    # Result reports them as its stage_layers ("echo": False).
    first_stage_layers: int | None = field(default=None, metadata={
        "echo": False, "metavar": "N",
        "help": "uneven pipeline: layers of the first stage (interleaved: of the first model "
                "chunk), the others sharing the rest (Megatron-LM "
                "--decoder-first-pipeline-num-layers)"})
    last_stage_layers: int | None = field(default=None, metadata={
        "echo": False, "metavar": "N",
        "help": "uneven pipeline: layers of the last stage (interleaved: of the last model "
                "chunk)"})

    # Sharded data parallelism as implementations run it (simulator.parallel.data). Defaults
    # are the libraries': FSDP's BackwardPrefetch.BACKWARD_PRE (one unit ahead),
    # limit_all_gathers=True, FULL_SHARD (reshard after forward), the whole replica group
    # as the shard group (torch/distributed/fsdp/fully_sharded_data_parallel.py); DeepSpeed's
    # bucket sizes in DeepSpeedZeroConfig (deepspeed/runtime/zero/config.py).
    sharding: Sharding = field(default=Sharding.FSDP, metadata={
        "help": "the library running data parallelism and ZeRO: fsdp (PyTorch: DDP's buckets "
                "at zero 0, a gather per transformer block at 3), megatron (Megatron-LM's DDP "
                "buckets at zero 0, its distributed optimizer at 1-2), deepspeed (a gather per "
                "module, prefetched by --zero-prefetch-bucket) or deepspeed-2021 (v0.3.13-"
                "v0.3.16: each module's fetch synchronises the device, ZeRO 3's list "
                "collectives per parameter; its pipeline engine all-reduces at ZeRO 1)"})
    fsdp_prefetch: int = field(default=1, metadata={
        "metavar": "UNITS",
        "help": "FSDP: blocks whose all-gather is issued ahead of the one computing "
                "(BACKWARD_PRE: 1; 0: none, every backward gather exposed)"})
    fsdp_limit_all_gathers: bool = field(default=True, metadata={
        "help": "FSDP: no rate limiter (limit_all_gathers=False): the host issues every "
                "forward gather ahead, however many blocks"})
    # BackwardPrefetch.BACKWARD_POST: FSDP's post-backward hook of a unit reshards it, then
    # prefetches the next unit's all-gather, then reduce-scatters its gradients
    # (torch/distributed/fsdp/_runtime_utils.py: _post_backward_hook calls
    # _post_backward_reshard -> _prefetch_handle(state, handle, _PrefetchMode.BACKWARD)
    # before _reduce_grad), so each backward gather overlaps no compute of the backward.
    # Composer's default (composer/trainer/dist_strategy.py, fsdp_config 'backward_prefetch':
    # 'BACKWARD_POST', v0.12.1 to v0.17.2), so llm-foundry's unless its config says otherwise.
    fsdp_backward_post: bool = field(default=False, metadata={
        "help": "FSDP: BackwardPrefetch.BACKWARD_POST (Composer's default): a block's "
                "backward gather is issued once the block the backward has just run has its "
                "gradients, ahead of that block's reduce-scatter (exposed), instead of when "
                "that block's backward starts (BACKWARD_PRE)"})
    # FSDP2 (fully_shard) all-gathers into one buffer and copies each parameter out of it on
    # the compute stream (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py,
    # foreach_all_gather_copy_out); FSDP1's FlatParameter is gathered in place.
    fsdp_version: int = field(default=1, metadata={
        "choices": (1, 2),
        "help": "FSDP: 1 (FullyShardedDataParallel, gathered in place) or 2 (fully_shard: "
                "a copy out of each gather's buffer on the compute stream)"})
    fsdp_reshard_after_forward: bool = field(default=True, metadata={
        "help": "FSDP: keep the gathered weights from the forward to the backward "
                "(reshard_after_forward=False, SHARD_GRAD_OP): no backward gathers"})
    # FSDP's wrapping: a unit per transformer block (the usual auto_wrap_policy), or the whole
    # model one top-level FullyShardedDataParallel instance (no auto_wrap_policy: OLMo's
    # wrapping_strategy null, "the model is wrapped with a single top-level FSDP instance",
    # allenai/OLMo olmo/config.py FSDPConfig). The root unit is not resharded after the forward
    # (torch/distributed/fsdp/_runtime_utils.py: _post_forward frees the unsharded parameter
    # only for non-root handles), so one all-gather before each micro-batch's forward, kept
    # through its backward, and one reduce-scatter of all gradients once the backward is done.
    fsdp_whole_model: bool = field(default=False, metadata={
        "help": "FSDP: the whole model one unit (no auto_wrap_policy): one all-gather before "
                "each micro-batch's forward, one reduce-scatter after its backward, neither "
                "overlapped with compute (default: a unit per transformer block)"})
    shard_group: int | None = field(default=None, metadata={
        "metavar": "RANKS",
        "help": "hybrid sharding: shard over this many replicas (FSDP HYBRID_SHARD: a "
                "node's), replicate over the rest (default: all replicas)"})
    zero_prefetch_bucket: int = field(default=DEEPSPEED_PREFETCH_BUCKET, metadata={
        "metavar": "PARAMS",
        "help": "DeepSpeed: stage3_prefetch_bucket_size, parameters gathered ahead"})
    zero_max_live: int = field(default=DEEPSPEED_MAX_LIVE, metadata={
        "metavar": "PARAMS",
        "help": "DeepSpeed: stage3_max_live_parameters, gathered parameters held at once"})
    zero_reduce_bucket: int = field(default=DEEPSPEED_REDUCE_BUCKET, metadata={
        "metavar": "ELEMENTS",
        "help": "DeepSpeed: reduce_bucket_size, gradient elements per reduction"})
    # DeepSpeed v0.3.13's ZeRO-3 default is off (zero/constants.py
    # ZERO3_OPTIMIZATION_CONTIGUOUS_GRADIENTS_DEFAULT = False); only --sharding deepspeed-2021
    # at ZeRO 3 reads it (simulator.parallel.data)
    zero_contiguous_gradients: bool = field(default=False, metadata={
        "help": "DeepSpeed 2021 at ZeRO 3: contiguous_gradients on (each parameter's "
                "gradient reduce-scattered on its own as a list; off, v0.3.13's default: "
                "each bucket flattened, all-reduced and copied back)"})
    # PyTorch DDP's bucket_cap_mb (torch/nn/parallel/distributed.py: 25 MiB;
    # simulator.parallel.data): gradients all-reduced in buckets of this size (stage 0)
    ddp_bucket_mb: float = field(default=25.0, metadata={
        "metavar": "MIB",
        "help": "PyTorch DDP: bucket_cap_mb, MiB of gradients per all-reduce (the first "
                "bucket 1 MiB)"})
    pipeline_engine: PipelineEngine = field(default=PipelineEngine.MEGATRON, metadata={
        "help": "the pipeline's engine: megatron, or deepspeed (blocking p2p per "
                "micro-batch, gradients reduced after the step)"})
    # NCCL's kernels take SMs and HBM bandwidth from the compute they overlap
    # (simulator.cost.interference). False: overlapped communication is free.
    comm_interference: bool = field(default=True, metadata={
        "help": "overlapped communication costs the compute nothing (no SMs, no HBM "
                "bandwidth taken by NCCL's kernels)"})
    comm_sms: int | None = field(default=None, metadata={
        "metavar": "SMS",
        "help": "SMs each NCCL collective holds while it runs (default 16 with NVLink or "
                "Infinity Fabric, 2 over PCIe only; NCCL_MAX_NCHANNELS caps it)"})

    def __post_init__(self) -> None:
        for name, kind in (("sharding", Sharding), ("pipeline_engine", PipelineEngine),
                           ("moe_dispatcher", Dispatcher), ("cp_comm", CpComm)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                choices = ", ".join(s.value for s in kind)
                raise PlanError(f"{name} = {getattr(self, name)!r} is not known: choose one "
                                f"of {choices}") from None
        positive(self.fsdp_prefetch, "fsdp_prefetch", minimum=0)
        if self.fsdp_backward_post and self.fsdp_prefetch != 1:
            raise PlanError(f"fsdp_backward_post with fsdp_prefetch = {self.fsdp_prefetch}: "
                            "BACKWARD_POST prefetches one unit; use fsdp_prefetch 1, or "
                            "fsdp_prefetch 0 alone for no backward prefetch")
        if self.fsdp_version not in (1, 2) or isinstance(self.fsdp_version, bool):
            raise PlanError(f"fsdp_version = {self.fsdp_version!r} must be 1 or 2")
        for name in ("zero_prefetch_bucket", "zero_max_live"):
            positive(getattr(self, name), name, minimum=0, maximum=2**50)
        positive(self.zero_reduce_bucket, "zero_reduce_bucket", maximum=2**50)
        bucket = self.ddp_bucket_mb
        if isinstance(bucket, str):   # a grid's or a file's text
            try:
                bucket = float(bucket)
            except ValueError:
                pass
        if not in_interval(bucket, 0, 2**40, low_open=True, high_open=True):
            raise PlanError(f"ddp_bucket_mb = {self.ddp_bucket_mb!r} must be a positive number "
                            "of MiB (PyTorch's default 25)")
        object.__setattr__(self, "ddp_bucket_mb", float(bucket))
        if self.shard_group is not None:
            positive(self.shard_group, "shard_group")
        if self.comm_sms is not None:
            positive(self.comm_sms, "comm_sms", maximum=1024)
        try:
            object.__setattr__(self, "schedule", Schedule(self.schedule))
        except ValueError:
            choices = ", ".join(s.value for s in Schedule)
            raise PlanError(f"schedule = {self.schedule!r} is not known: choose one of "
                            f"{choices}") from None
        for name in COUNTS:
            positive(getattr(self, name), name)
        positive(self.num_devices, "dp x tp x pp x cp")
        if self.micro_batches is not None:
            positive(self.micro_batches, "micro_batches", maximum=MAX_BATCH)
        for name in ("first_stage_layers", "last_stage_layers"):
            value = getattr(self, name)
            if value is None:
                continue
            # interleaved: the first or last chunk may hold no layer
            positive(value, name, minimum=0 if self.virtual_stages > 1 else 1)
            if self.pp < 2:
                raise PlanError(f"{name} = {value} needs a pipeline: pp = {self.pp}")
        if isinstance(self.zero, bool) or not isinstance(self.zero, int) \
                or self.zero not in ZERO_STAGES:
            raise PlanError(f"zero = {self.zero!r} must be a ZeRO stage 0, 1, 2 or 3")
        if self.virtual_stages > 1 and self.schedule is not Schedule.INTERLEAVED:
            raise PlanError(f"virtual_stages = {self.virtual_stages} needs the interleaved "
                            f"schedule, not {self.schedule.value}")
        if self.overlap_param_gather and self.sharding in (Sharding.DEEPSPEED,
                                                           Sharding.DEEPSPEED_2021):
            # DeepSpeed ZeRO 1-2 gathers the updated weights in its step (stage_1_and_2.py
            # step: all_gather_dp_groups after the update); no option defers them to the forward
            raise PlanError(f"overlap_param_gather = true with sharding = {self.sharding.value}:"
                            " Megatron-LM's option, DeepSpeed has none; drop "
                            "--overlap-param-gather or use --sharding megatron")
        if self.tp_comm_overlap and self.tp > 1 and not self.activations_split:
            # megatron/training/arguments.py: "Tensor parallel communication/GEMM overlap can
            # happen only when sequence parallelism is enabled"
            raise PlanError("tp_comm_overlap = true needs sequence parallelism (its all-gathers "
                            "and reduce-scatters are what overlaps): add --sequence-parallel "
                            "or drop --tp-comm-overlap")
        if self.lora_a2a and self.tp > 1 and not self.activations_split:
            # NeMo's adapter runs the all-to-all only under sequence parallelism
            raise PlanError("lora_a2a = true moves the LoRA adapters' output to sequence "
                            "shards: it needs sequence parallelism; add --sequence-parallel "
                            "or drop --lora-a2a")
        if self.fsdp_whole_model and self.sharding is not Sharding.FSDP:
            # one top-level FullyShardedDataParallel instance: PyTorch FSDP's wrapping; neither
            # DeepSpeed nor Megatron-LM wraps units (simulator.parallel.data reads it for fsdp)
            raise PlanError(f"fsdp_whole_model = true with sharding = {self.sharding.value}: "
                            "the whole model one PyTorch FSDP unit; use --sharding fsdp "
                            "--zero 3 or drop --fsdp-whole-model")
        if self.zero == 3 and self.sharding is Sharding.MEGATRON:
            raise PlanError("zero = 3 with sharding = megatron: Megatron-LM's DDP and "
                            "distributed optimizer run ZeRO 0-2; use --sharding fsdp or "
                            "deepspeed for ZeRO 3")

    @property
    def num_devices(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def replicas(self) -> int:
        """Ranks holding the same parameters: dp x cp (the gradient-reduction and ZeRO group)."""
        return self.dp * self.cp

    @property
    def shards(self) -> int:
        """Ranks ZeRO shards the model states over: the replicas, or the ``shard_group`` of
        hybrid sharding (each state then held by replicas / shard_group copies)."""
        return min(self.shard_group or self.replicas, self.replicas)

    @property
    def activations_split(self) -> bool:
        """Tensors outside the matmuls split over the tp ranks: along the tokens (sequence
        parallel) or the hidden dimension (``hidden_sharded``), the same bytes either way."""
        return self.sequence_parallel or self.hidden_sharded

    @property
    def uneven(self) -> bool:
        return self.first_stage_layers is not None or self.last_stage_layers is not None

    def stage_layers(self, layers: int) -> list[int]:
        """Transformer layers of each pipeline device, first to last (PlanError naming the
        numbers when they do not split so): the sum of its ``chunk_layers``."""
        return [sum(chunks) for chunks in self.chunk_layers(layers)]

    def chunk_layers(self, layers: int) -> list[list[int]]:
        """Layers of the model chunks each pipeline device runs, in model order: device d runs
        chunks d, d + pp, ..., d + (v-1) pp of the pp x v (Narayanan et al. 2021, sec. 2.2.2;
        v = virtual_stages, 1 without interleaving). The first chunk has
        ``first_stage_layers``, the last ``last_stage_layers``, the others share the rest
        evenly; PlanError naming the numbers when they do not split so."""
        first, last, p = self.first_stage_layers, self.last_stage_layers, self.pp
        v = self.virtual_stages
        n = p * v
        unit = "pp" if v == 1 else "pp x virtual_stages"
        if not self.uneven:
            if layers % n:
                total = product(pp=p, virtual_stages=v)
                raise PlanError(f"{total} must divide layers = {layers} (or give the first "
                                "and last stages' layers: first_stage_layers, "
                                "last_stage_layers; --first-stage-layers, --last-stage-layers)")
            sizes = [layers // n] * n
        else:
            rest = layers - (first or 0) - (last or 0)
            middle = n - (first is not None) - (last is not None)
            given = " + ".join(f"{name} = {k}" for name, k in (("first_stage_layers", first),
                                                               ("last_stage_layers", last))
                               if k is not None)
            if middle == 0 and rest != 0:
                raise PlanError(f"{given} must add up to layers = {layers} with {unit} = {n}")
            if middle and (rest < middle or rest % middle):
                kind = "stages" if v == 1 else "model chunks"
                raise PlanError(f"{given} leaves {rest} of layers = {layers} for the other "
                                f"{middle} of {unit} = {n} {kind}: they must share them "
                                "evenly, at least one each")
            each = rest // middle if middle else 0
            sizes = [first if first is not None else each, *[each] * (n - 2),
                     last if last is not None else each]
        return [sizes[d::p] for d in range(p)]

    def validate(self, num_devices: int, layers: int, heads: int, kv_heads: int | None = None,
                 global_batch: int | None = None, micro_batch: int = 1,
                 seq_len: int | None = None) -> int:
        """Raise PlanError naming the numbers if the plan cannot run; else the micro-batches
        per step of each pipeline (gradient-accumulation steps when pp = 1)."""
        if self.num_devices != num_devices:
            sizes = product(dp=self.dp, tp=self.tp, pp=self.pp, cp=self.cp)
            raise PlanError(f"{sizes} must equal the number of devices = {num_devices}")
        if self.shard_group is not None and self.replicas % self.shard_group:
            raise PlanError(f"shard_group = {self.shard_group} must divide the replicas dp x cp "
                            f"= {self.replicas} (hybrid sharding replicates whole shard groups)")
        if self.replicas % self.ep:
            raise PlanError(f"ep = {self.ep} must divide the replicas dp x cp = {self.dp} x "
                            f"{self.cp} = {self.replicas} (expert-parallel ranks are data- or "
                            "context-parallel ranks)")
        if self.ep > 1 and (self.shard_group is not None or self.zero == 3 or (
                self.zero and self.sharding not in (Sharding.FSDP, Sharding.MEGATRON))):
            # their collectives span units mixing experts and dense weights
            # (simulator.parallel.expert splits only a whole-replica, per-layer reduction)
            raise PlanError(f"ep = {self.ep} is modelled with ZeRO 0-2 under fsdp or megatron "
                            "sharding, without shard_group: use zero <= 2 and sharding = fsdp")
        if self.pipeline_engine is PipelineEngine.DEEPSPEED and (self.zero >= 2 or (
                self.sharding not in (Sharding.DEEPSPEED, Sharding.DEEPSPEED_2021))):
            # DeepSpeed's PipelineEngine asserts "ZeRO-2 and ZeRO-3 are incompatible with
            # pipeline parallelism" (pipe/engine.py, v0.3.13 to now)
            raise PlanError(f"pipeline_engine = deepspeed runs DeepSpeed's ZeRO 0-1, not zero = "
                            f"{self.zero} with sharding = {self.sharding.value}: use zero <= 1 "
                            "and sharding = deepspeed or deepspeed-2021")
        self._check_context(seq_len)
        self._check_tensor(heads, kv_heads, seq_len)
        self._check_pipeline(layers)
        micro_batches = self._micro_batches(global_batch, micro_batch)
        if self.schedule is Schedule.INTERLEAVED and micro_batches % self.pp:
            raise PlanError(f"the interleaved schedule needs micro-batches = {micro_batches} "
                            f"to be a multiple of pp = {self.pp} (Megatron-LM)")
        return micro_batches

    def _check_tensor(self, heads: int, kv_heads: int | None, seq_len: int | None) -> None:
        if heads % self.tp:
            raise PlanError(f"tp = {self.tp} must divide heads = {heads}")
        # Fewer KV heads than ranks: each rank holds the KV head its query heads use, a head
        # replicated over tp / kv_heads ranks (simulator.parallel.tensor); else each rank holds
        # kv_heads / tp of them (Megatron-LM: "num_query_groups must be divisible by
        # tensor_model_parallel_size").
        if kv_heads is not None and kv_heads % self.tp and self.tp % kv_heads:
            raise PlanError(f"tp = {self.tp} must divide kv_heads = {kv_heads}, or be a "
                            "multiple of it (each KV head then replicated over tp / kv_heads "
                            "ranks)")
        local = seq_len // self.cp if seq_len is not None else None
        if self.sequence_parallel and local is not None and local % self.tp:
            held = f"seq_len = {seq_len}" if self.cp == 1 else \
                f"seq_len / cp = {seq_len} / {self.cp} = {local}"
            raise PlanError(f"sequence parallel: tp = {self.tp} must divide {held}")

    def _check_context(self, seq_len: int | None) -> None:
        """Megatron-LM splits each sequence into 2 cp chunks, a rank taking chunks i and
        2cp - 1 - i so that the causal mask leaves each the same work
        ("seq_length must be divisible by 2 x context_parallel_size")."""
        if self.cp == 1:
            return
        if seq_len is None:
            raise PlanError(f"cp = {self.cp}: context parallelism splits a transformer's "
                            "sequences; use dp, tp and pp for this model")
        if seq_len % (2 * self.cp):
            raise PlanError(f"context parallel: 2 x cp = {2 * self.cp} must divide seq_len = "
                            f"{seq_len} (each rank holds two of 2 x cp chunks)")

    def _check_pipeline(self, layers: int) -> None:
        if self.schedule is Schedule.INTERLEAVED:
            if self.pp < 2 or self.virtual_stages < 2:
                raise PlanError(f"the interleaved schedule needs pp >= 2 and virtual_stages "
                                f">= 2, got pp = {self.pp}, virtual_stages = "
                                f"{self.virtual_stages}")
        self.chunk_layers(layers)

    def _micro_batches(self, global_batch: int | None, micro_batch: int) -> int:
        positive(micro_batch, "micro_batch")
        per_step = micro_batch * self.dp
        if global_batch is None:
            return self.micro_batches or 1
        if global_batch % per_step:
            raise PlanError(f"global batch = {global_batch} must be divisible by micro_batch x "
                            f"dp = {micro_batch} x {self.dp} = {per_step}")
        derived = global_batch // per_step
        if self.micro_batches is not None and self.micro_batches != derived:
            raise PlanError(f"global batch = {global_batch} must equal micro_batch x "
                            f"micro_batches x dp = {micro_batch} x {self.micro_batches} x "
                            f"{self.dp} = {per_step * self.micro_batches}")
        return derived


def data_parallel_size(num_devices: int, tp: int, pp: int, cp: int = 1) -> int:
    """The dp that fills ``num_devices`` with tp x pp x cp model-parallel groups (PlanError
    naming the numbers when they do not divide it)."""
    group = tp * pp * cp
    if num_devices % group:
        sizes = product(tp=tp, pp=pp, cp=cp)
        raise PlanError(f"{sizes} must divide the number of devices = {num_devices}")
    return num_devices // group


def product(**sizes: int) -> str:
    """A product of plan sizes as errors name it: ``tp x pp = 2 x 4 = 8`` (``pp = 4``). The
    sizes most plans leave at 1 (``cp``, ``virtual_stages``) are named only when they split."""
    sizes = {k: v for k, v in sizes.items() if v != 1 or k not in ("cp", "virtual_stages")}
    if len(sizes) == 1:
        (name, value), = sizes.items()
        return f"{name} = {value}"
    return (f"{' x '.join(sizes)} = {' x '.join(map(str, sizes.values()))} = "
            f"{math.prod(sizes.values())}")


def positive(value, name: str, minimum: int = 1, maximum: int = MAX_DEVICES) -> None:
    """PlanError unless ``value`` is an int in [minimum, maximum] (by default at most
    ``MAX_DEVICES``, the bound of every size of a plan)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise PlanError(f"{name} = {shown(value)} must be {what}")
    if value > maximum:
        raise PlanError(f"{name} = {value:,} is above {maximum:,}, more than any real "
                        "cluster or batch needs")
