"""hwsim's energy against MLPerf Training's metered runs (issue 25, item 4): never fitted on.

    python benchmarks/energy_validation.py      print the comparison (writes nothing)

MLCommons' Training v4.0 round (github.com/mlcommons/training_results_v4.0, Apache-2.0, commit
6fe9543) has power submissions by Sustainable Metal Cloud (v5.0, commit 0fdc28f, one by Lenovo
on B200): each node's AC power every 2 s during
each run (``tests/data/mlperf_power.csv``, extracted by ``benchmarks/mlperf_power_extract.py``:
the mean over the training blocks, evaluation left out, and the median step time). Rows hwsim
can express, each as the submission configured it (``smc-ac-power/benchmarks/*``):

- GPT-3 175B on 64 nodes of 8 H100 SXM (NeMo 24.04, ``config_SMCH100_64x8x128x4x8.sh`` and
  ``config_common.sh``): tp 4, pp 8, 12 virtual stages (``conf/custom.yaml``'s default),
  micro-batch 2, global batch 2,048 of 2,048 tokens, sequence parallel, distributed optimizer,
  TP communication overlap, FP8 (Transformer Engine, hybrid), no recomputation;
- ResNet-50 on one node of 8 H100 SXM (MXNet, DALI): global batch 3,200 (400 per GPU), fp16,
  NHWC, batch norm fused with its ReLU and residual add, its statistics and scale-bias-ReLU
  fused into the convolutions (cuDNN's NormConvolution), CUDA graphs (``EXTRA``); and on
  8 nodes (``config_SMCH100_multi_8x8x50.sh``: 50 images per GPU, global batch 3,200,
  NETWORK="resnet-v1b-fl": batch norm fused with its ReLU and residual add but no
  NormConvolution, SHARP all-reduce not priced apart from NCCL's).
- BERT-large (MLPerf phase 2) on one node of 8 H100 SXM (SMC, v4.0) and of 8 B200 (Lenovo
  ThinkSystem SR780a V3, water cooled, v5.0), the same NVIDIA PyTorch code and the same
  training flags (the ``RUNS`` comment below): 48 packed sequences of 512 tokens per GPU,
  global batch 384 packs (768 samples), data parallel only, the encoder's GEMMs in fp8
  (Transformer Engine, hybrid, delayed scaling), fused bias/GELU/dropout-add kernels, CUDA
  graphs, Apex's DistributedFusedLAMB (optimizer state sharded over the 8 GPUs: ``zero`` 1).
  The two differ in the attention kernel: the H100 run's is Transformer Engine's fp8 cuDNN
  fused attention, the B200 run's FlashAttention-2's varlen kernel in fp16 (its config sets
  USE_FLASH_ATTENTION=1; ``attention_kernel`` flash-attn-2). Each packed row's samples
  attend within themselves (``--pad_fmha --packed_samples``, the kernels given cu_seqlens):
  ``packed_attention`` 0.7536, the mean sum(l_i^2) / 512^2 of a pack (``BERT_PACKED_ATTENTION``
  shows the arithmetic), priced as 1 / 0.7536 equal samples of 386 tokens a row. Not expressed,
  so not priced: LAMB's per-tensor trust ratios (hwsim's nearest update, AdamW, has none) and
  the H100 run's fp8 attention (hwsim prices cuDNN's 16-bit kernel). The MLM head runs on the
  masked tokens alone (``--dense_seq_output``; ``mlm_share`` 0.15, BERT's masking rate: an
  upper bound, padding is never masked).

- Llama 2 70B LoRA fine-tuning on 1 and 8 nodes of 8 H100 SXM (NeMo r2.0.0.rc0.beta, the
  ``RUNS`` comment below): tp 4, sequence parallel, TP communication overlap, FP8 (hybrid),
  cp 2 on eight nodes, rank-16 adapters on q, k, v and o as NeMo's ``ParallelLinearAdapter``
  splits them (``simulator.parallel.tensor``), no recomputation, the frozen linears in fp8
  (``fp8_params``: TE's ``fp8_model_init``, 1 byte per frozen weight and no weight cast:
  ``frozen_weights`` fp8). And on one node of 8 B200 (Lenovo, v5.0, NeMo 25.04): tp 1, the
  distributed optimizer, fp8 frozen weights, and the SwiGLU's input saved in fp8
  (``FP8_ACT=1``: ``fp8_swiglu_input``). Not expressed, so not priced: their fp8 attention
  (``FP8_DPA=1``; hwsim prices the 16-bit kernel), the adapters' dropout (0.1, before A),
  NeMo's one fused qkv adapter (hwsim adapts q, k and v apart, PEFT's way: three A matrices,
  one all-gather of their shared input). On the H100s the runs set Megatron-core's
  ``disable_parameter_transpose_cache`` (yaml line 91), so TE (090e724, the Dockerfile's
  TE_REVISION) transposes each fp8 frozen weight in every backward and keeps no transposed
  copy: ``fp8_transpose_cache`` false, a kernel reading and writing 1 byte per frozen weight
  on the rank before each data-gradient GEMM, every micro-batch (``simulator.training.
  finetune.transpose_fp8``); the B200 run keeps TE's cache (train.py line 222).

Compared per node and per step: energy (mean node power x step time) and mean node power,
hwsim's as 8 x the device's ``avg_power_w`` plus its node's other parts at that power
(``ClusterSpec.overhead_at``) on the preset of the metered machine: ``smc-h100`` (SMC's
immersion-cooled node: its measured idle, 2,230.5 W, and its measured DC/AC conversion, 0.941 at
rest and 0.9736 under load, from the same submission's DLRM-DCNv2, 3D U-Net and SSD power logs,
benchmarks not compared here: 1.60 kW besides eight idle GPUs, 1.66 kW with them at 700 W) and
``lenovo-sr780a-v3`` (Lenovo's water-cooled B200 node: its idle, 2,888 W, from its RetinaNet
logs: 1.79 kW), and beside it the GPUs alone. Before these presets (2026-12-05) the rows ran on
``dgx-h100`` (an air-cooled 8 x H100 HGX node's measured maximum, 8.4 kW, Latif et al. 2025,
less the GPUs' TDPs: 2.8 kW over the whole step) and ``dgx-b200`` (its 14.3 kW rating: 6.3 kW).
"""
from __future__ import annotations

import csv
import dataclasses
import statistics
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/energy_validation.py``
    sys.path.insert(0, str(ROOT))

from benchmarks import validation_report as vr
from simulator.api import simulate

TABLE = ROOT / "tests" / "data" / "mlperf_power.csv"
#: The metered machines' presets (hardware_specs/clusters/smc-h100.toml, lenovo-sr780a-v3.toml):
#: the same GPUs and networks as dgx-h100 and dgx-b200, their node power from their own idle.
CLUSTER = "smc-h100"
B200_CLUSTER = "lenovo-sr780a-v3"
#: MLPerf BERT's packed rows attend within each sample (``RUNS``' comment: --pad_fmha
#: --packed_samples): the mean sum(l_i^2) / 512^2 of a row is the samples a pack holds times
#: their mean l^2 / 512^2, whichever samples share a pack (sum over the rows of sum(l_i^2) =
#: sum over the samples of l^2). Samples a pack: 156,726,829 samples into 78,404,631 packs
#: ("Average sequences/sample 1.99895", the packing script's output in input_preprocessing/
#: packed_data/README.md of both submissions: training_results_v4.0 6fe9543 smc-ac-power/
#: benchmarks/bert/implementations/pytorch/, v5.0 0fdc28f Lenovo/benchmarks/bert/). Mean l^2:
#: the MLPerf Wikipedia set's length histogram at 512 that Krell et al. 2021 (arXiv
#: 2107.02027) published with their packing algorithms (graphcore/examples 2d8b565,
#: tutorials/blogs_code/packedBERT/histograms.py, ``wikipedia_histogram``: count of samples of
#: 1..512 tokens; 23.4 % of them 512): 16,279,552 samples, sum l 4,164,796,173, sum l^2
#: 1,608,843,187,973 (summed here from its 512 counts), mean 255.8 tokens, where NVIDIA's
#: output gives (156,726,829 x 512 - 4.04e10 padding) / 156,726,829 = 254.2 (0.6 % apart).
#: 1.998956 x 98,826.0 / 262,144 = 0.7536: the attention core's FLOPs 75.4 % of 512 x 512's
#: (not 0.5: the quarter of samples of 512 tokens pack alone). The packs' own padding (2.67e8
#: tokens, 0.7 %) is ignored.
BERT_SAMPLES_PER_PACK = 156_726_829 / 78_404_631
BERT_MEAN_SQUARED_LENGTH = 1_608_843_187_973 / 16_279_552
BERT_PACKED_ATTENTION = round(BERT_SAMPLES_PER_PACK * BERT_MEAN_SQUARED_LENGTH / 512 ** 2, 4)
#: BERT-large's plan as NVIDIA's MLPerf BERT ran it (``RUNS``' comment), over the GPT-3 row's.
BERT = {"model": "bert-large", "vocab": "", "seq_len": "",
        "model_options": f"mlm_share=0.15 packed_attention={BERT_PACKED_ATTENTION}",
        "device_count": "8", "dp": "8",
        "tp": "1", "pp": "1", "cp": "1", "zero": "1", "sequence_parallel": "false",
        "schedule": "1f1b", "virtual_stages": "1", "overlap_tp_comm": "false",
        "tp_comm_overlap": "false", "overlap_param_gather": "false", "overlap_p2p_comm": "false",
        "micro_batch": "48", "global_batch": "384", "precision": "fp8", "recompute": "none",
        "attention": "fused", "attention_kernel": "cudnn", "fusion": "compiled",
        "optimizer": "adamw", "optimizer_impl": "fused", "grad_clip": "true", "graphs": "true",
        "devices_per_node": "8", "fp8_params": "false"}
#: Llama 2 70B LoRA's plan on one node (``RUNS``' comment), over the Llama 3.1 70B row's; the
#: eight-node run changes the devices, dp and cp.
LORA_PLAN = {"model": "llama2-70b", "vocab": "32256", "device_count": "8", "dp": "2", "tp": "4",
             "pp": "1", "cp": "1", "zero": "0", "schedule": "1f1b", "virtual_stages": "1",
             "overlap_param_gather": "false", "overlap_p2p_comm": "false", "micro_batch": "1",
             "global_batch": "8", "cluster": CLUSTER, "devices_per_node": "8",
             "fp8_params": "false"}
#: Each metered run: (MLPerf benchmark, system), the published row its configuration starts
#: from, and what it changes. The GPT-3, BERT and LoRA runs keep their base rows' column
#: ``projections`` fused (one q, k, v GEMM: NeMo's Megatron-Core ``linear_qkv``, which the
#: LoRA runs' adapters target, and BERT's te_layers.py QKV GEMM, below).
RUNS = {
    # 12 virtual stages: mlcommons/training_results_v4.0 6fe9543 smc-ac-power/benchmarks/gpt3/
    # implementations/nemo/conf/custom.yaml line 63 (INTERLEAVED_PIPELINE, default 12), which
    # config_SMCH100_64x8x128x4x8.sh and config_common.sh leave unset; the base row ran 6
    "gpt3": (("gpt3", "64xSMC-H100-SXM-80GB"), "nemo-gpt3-175b-fp8-512",
             {"micro_batch": "2", "global_batch": "2048", "virtual_stages": "12",
              "cluster": CLUSTER, "devices_per_node": "8"}),
    "resnet": (("resnet", "1xSMC-H100-SXM-80GB"), "lambda-resnet50-A100_80GB_SXM4",
               {"device": "h100-sxm5-80gb", "device_count": "8", "dp": "8",
                "micro_batch": "400", "global_batch": "3200", "cluster": CLUSTER,
                "devices_per_node": "8", "fusion": "eager"}),
    # The same ResNet-50 on 8 nodes (config_SMCH100_multi_8x8x50.sh): BATCHSIZE 50 per GPU,
    # dp 64, global batch 3,200, NETWORK="resnet-v1b-fl" (symbols/resnet-v1b-fl.py: BatchNorm
    # with act_type relu and BatchNormAddRelu, no NormConvolution), the common config's NHWC
    # layouts, --fuse-bn-relu, --fuse-bn-add-relu and MXNET_ENABLE_CUDA_GRAPHS=1
    "resnet-8node": (("resnet", "8xSMC-H100-SXM-80GB"), "lambda-resnet50-A100_80GB_SXM4",
                     {"device": "h100-sxm5-80gb", "device_count": "64", "dp": "64",
                      "micro_batch": "50", "global_batch": "3200", "cluster": CLUSTER,
                      "devices_per_node": "8", "fusion": "eager"}),
    # BERT-large, MLPerf phase 2 (NVIDIA's PyTorch BERT: smc-ac-power/benchmarks/bert/
    # implementations/pytorch/config_SMCH100_1x8x48x1_pack.sh, run_and_time.sh in v4.0;
    # Lenovo/benchmarks/bert/config_DGXB200_1x8x48x1_pack.sh, run_and_time.sh, modeling.py,
    # run_pretraining.py in v5.0): BATCHSIZE 48 packs of at most 512 tokens per GPU,
    # PACKING_FACTOR 2 (the log's global_batch_size 768 samples = 384 packs), GRADIENT_STEPS 1,
    # 8 GPUs data parallel; --pad_fmha --packed_samples on the packed trainset (v4.0
    # config_SMCH100_1x8x48x1_pack.sh lines 3, 15, 43-44 and v5.0 config_DGXB200_1x8x48x1_
    # pack.sh lines 3, 15, 46-47: PACKING_FACTOR, EXTRA_PARAMS, DATADIR_PHASE2=${DATADIR_
    # PHASE2_PACKED}; te_layers.py hands each sample's bounds, cu_seqlens, to the fused
    # attention: v4.0 lines 63, 125, v5.0 lines 36-37, 75, 196: packed_attention,
    # BERT_PACKED_ATTENTION); --fp16 with the encoder under fp8_autocast (modeling.py: recipe
    # DelayedScaling, Format.HYBRID, fp8_dpa=True; the v4.0 log says 'using fp8 FMHA'); --fused_
    # bias_fc, --fused_bias_mha, --fused_dropout_add, --fused_gemm_gelu (fusion compiled);
    # --use_cuda_graph (graphs); --distributed_lamb (apex DistributedFusedLAMB, max_grad_norm
    # 1.0: state sharded, gradients reduce-scattered and weights all-gathered: zero 1, grad
    # clip); --dense_seq_output: the MLM head on the masked positions alone, 15 % of them at
    # most (TransformerConfig.mlm_share). Attention (te_layers.py, v5.0 lines 62, 117-216;
    # v4.0 the same): without USE_FLASH_ATTENTION (the SMC H100 config does not set it)
    # Transformer Engine's fused attention, backend FusedAttnBackend["FP8"] (cuDNN's fp8 FMHA:
    # hwsim prices its 16-bit cuDNN kernel, attention_kernel cudnn); Lenovo's
    # config_DGXB200_1x8x48x1_pack.sh line 20 sets USE_FLASH_ATTENTION=1: the QKV GEMM writes
    # fp16 and flash_attn's _flash_attn_varlen_forward (FlashAttention-2, the container's
    # flash-attn 2.x, te_layers.py lines 35-36) runs it, attention_kernel flash-attn-2 (its
    # B200 fit: cudnn-frontend's sdpa benchmark, simulator.cost.attention). Node presets:
    # smc-h100 and lenovo-sr780a-v3 (as above; dgx-h100 and dgx-b200 until 2026-12-05).
    "bert-h100": (("bert", "1xSMC-H100-SXM-80GB"), "nemo-gpt3-175b-fp8-512", BERT | {
        "device": "h100-sxm5-80gb", "cluster": CLUSTER}),
    "bert-b200": (("bert", "SR780aV3-8xB200_SXM_180GB"), "nemo-gpt3-175b-fp8-512", BERT | {
        "device": "b200", "cluster": B200_CLUSTER, "attention_kernel": "flash-attn-2"}),
    # Llama 2 70B LoRA (NeMo r2.0.0.rc0.beta, Megatron-core 0.7; smc-ac-power/benchmarks/
    # llama2-70b_lora/implementations/nemo: Dockerfile,
    # configs/config_SMCH100_1x8x4xtp4pp1cp1.sh, config_SMCH100_8x8x1xtp4pp1cp2.sh,
    # config_common.sh, conf/megatron_gpt_peft_tuning_config.yaml, conf/base/model_config.yaml):
    # tp 4, pp 1, sequence parallel, TP communication overlap,
    # FP8 (hybrid), micro-batch 1 of 8,192 packed tokens, global batch 8 (MINIBS x devices /
    # (tp pp) / cp: 4 x 8 / 4 = 8 on one node, dp 2; 1 x 64 / 4 / 2 = 8 on eight, cp 2, dp 8),
    # no recomputation (activations_checkpoint_granularity null), fused_adam (not the
    # distributed optimizer: zero 0), TE fused attention (NVTE_FUSED_ATTN=1); vocabulary
    # 32,000 padded to a multiple of 128 x tp = 512 (make_vocab_size_divisible_by 128)
    "lora-1node": (("llama2_70b_lora", "1xSMC-H100-SXM-80GB"), "nemo-llama3.1-70b-fp8-64",
                   LORA_PLAN),
    "lora-8node": (("llama2_70b_lora", "8xSMC-H100-SXM-80GB"), "nemo-llama3.1-70b-fp8-64",
                   LORA_PLAN | {"device_count": "64", "dp": "8", "cp": "2"}),
    # The same benchmark on Lenovo's B200 node (training_results_v5.0 0fdc28f, Lenovo/
    # benchmarks/llama2_70b_lora: Dockerfile (nvcr.io/nvdlfwea/pytorch:25.04-py3, NeMo
    # 25.04-alpha.rc1), config_DGXB200_1x8x1xtp1pp1cp1.sh, config_common.sh, train.py,
    # conf/megatron_gpt_peft_tuning_config.yaml): TP=1, CP=1, SP=0, MINIBS=1 (config lines
    # 8-11), so global batch 1 x 8 / 1 / 1 = 8 (the yaml's line 25), dp 8, micro-batch 1 (MBS,
    # common line 40) of 8,192 tokens (MAX_SEQLEN default, yaml line 30); FP8=True (common
    # line 20: fp8 hybrid, train.py line 284, and fp8_params, yaml line 36); the distributed
    # optimizer (yaml line 73, default True: zero 1); no TP overlap (TP_COMM_OVERLAP unset,
    # yaml line 32, and tp 1); no CUDA graphs (LAYER_CUDA_GRAPH=0, MCORE_CUDA_GRAPH=0, config
    # lines 17-18); no recomputation (train.py's Llama2Config70B sets none); vocabulary 32,000,
    # already a multiple of NeMo's make_vocab_size_divisible_by 128 x tp 1 (NVIDIA/NeMo
    # 8cfedd7 nemo/collections/llm/gpt/model/base.py line 295, which Llama2Config70B inherits).
    "lora-b200": (("llama2_70b_lora", "SR780aV3-8xB200_SXM_180GB"), "nemo-llama3.1-70b-fp8-64",
                  LORA_PLAN | {"device": "b200", "tp": "1", "dp": "8", "zero": "1",
                               "vocab": "32000", "sequence_parallel": "false",
                               "overlap_tp_comm": "false", "tp_comm_overlap": "false",
                               "cluster": B200_CLUSTER}),
}
#: Plan fields beyond validation_rows.csv's columns, as the submission set them: ResNet-50's
#: ``run_and_time.sh`` and ``config_SMCH100_common.sh``: --input-layout and --conv-layout NHWC
#: (channels last), --fuse-bn-relu and --fuse-bn-add-relu (each batch norm's ReLU, and a block's
#: last norm's residual add and ReLU, in the norm's NHWC kernel: ``norm_act_fusion``,
#: ``simulator.training.convnorm.fuse_norm_act``), MXNET_ENABLE_CUDA_GRAPHS=1; fusion "eager"
#: (``RUNS``): MXNet runs the kernels its symbols name, nothing generated, and no other
#: elementwise chain is merged (``fusion`` "compiled", which the rows set until 2026-12-05, also
#: folded the forward batch norms into the convolutions and ran norms at torch.compile's rate);
#: and ``config_SMCH100.sh``'s NETWORK="resnet-v1b-mainloop-fl" (line 18), whose bottlenecks
#: are cuDNN's fused batch-norm convolutions (``symbols/resnet-v1b-mainloop-fl.py`` lines
#: 209-294: NormConvolution with statistics out and scale-bias-ReLU in, BNStatsFinalize,
#: ScaleBiasAddRelu at each block's end): ``conv_norm_fusion`` (simulator.training.convnorm).
EXTRA = {"resnet": {"channels_last": True, "graphs": True, "conv_norm_fusion": True},
         "resnet-8node": {"channels_last": True, "graphs": True, "norm_act_fusion": True}}
#: The LoRA runs' peft block (conf/megatron_gpt_peft_tuning_config.yaml): adapter_dim 16,
#: target_modules ['attention'] (NeMo's attention_qkv and attention_dense: q, k, v and o; the
#: v5.0 run's train.py lines 201-209: dim 16, target_modules linear_proj and linear_qkv). Their
#: frozen weights in fp8: FP8=True sets fp8_params (v4.0 conf/megatron_gpt_peft_tuning_config.
#: yaml line 80, configs/config_SMCH100_*.sh line 15-16; megatron_gpt3_model.py lines 323-324
#: build the model under transformer_engine.pytorch.fp8_model_init; v5.0 as in ``RUNS``' comment
#: and custom_llama.py line 66). The B200 run also stores the SwiGLU's input in fp8: FP8_ACT=1
#: (config_DGXB200_1x8x1xtp1pp1cp1.sh line 13 -> yaml line 46 activation_func_fp8_input_store
#: -> train.py line 218); the v4.0 configs leave their FP8_ACTIVATION unset (yaml line 89: 0).
#: The v4.0 runs set disable_parameter_transpose_cache: True (conf/megatron_gpt_peft_tuning_
#: config.yaml line 91): their fp8 frozen weights are transposed in every backward
#: (``fp8_transpose_cache`` false, simulator.training.finetune.transpose_fp8: TE 090e724, the
#: Dockerfile's TE_REVISION); the v5.0 run leaves the cache on (train.py line 222).
LORA = {"finetune": "lora", "lora_rank": 16, "lora_targets": "qkv,o", "frozen_weights": "fp8"}
LORA_V40 = LORA | {"fp8_transpose_cache": False}
EXTRA.update({"lora-1node": LORA_V40, "lora-8node": LORA_V40,
              "lora-b200": LORA | {"fp8_swiglu_input": True}})
#: Parallel-plan fields beyond the columns, as the submission set them: the LoRA runs'
#: adapters move their output to the sequence shard by all-to-all (``lora_a2a``, NeMo's
#: a2a_experimental): configs/config_common.sh line 13 ``export LORA_A2A=1``, read by
#: conf/megatron_gpt_peft_tuning_config.yaml line 120 (``a2a_experimental:
#: ${oc.decode:${oc.env:LORA_A2A,0}}``), smc-ac-power/benchmarks/llama2-70b_lora/
#: implementations/nemo in training_results_v4.0 (6fe9543); both configs source the common one.
PARALLEL_EXTRA = {"lora-1node": {"lora_a2a": True}, "lora-8node": {"lora_a2a": True}}
#: Metered runs hwsim cannot express yet, and why (their rows stay in mlperf_power.csv).
NOT_EXPRESSIBLE = {
    ("retinanet", "SR780aV3-8xB200_SXM_180GB"):
        "RetinaNet (ResNeXt-50 32x4d backbone, feature pyramid, focal loss, 800 x 800 images): "
        "hwsim's zoo has no ResNeXt (grouped convolutions), feature pyramid or detection head",
    ("stable_diffusion", "SR780aV3-8xB200_SXM_180GB"):
        "Stable Diffusion v2 (a latent-diffusion UNet with cross-attention, the VAE encoder and "
        "OpenCLIP text encoder frozen): hwsim has no UNet nor diffusion step in its zoo",
}


def measured() -> dict[str, dict]:
    """Per benchmark: the medians over its runs of step time and mean node power (W)."""
    with TABLE.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    out = {}
    for bench, (key, _, _) in RUNS.items():
        rows = [r for r in table if (r["benchmark"], r["system"]) == key]
        out[bench] = {"runs": len(rows), "nodes": int(rows[0]["nodes"]),
                      "step_time_s": statistics.median(float(r["step_time_s"]) for r in rows),
                      "node_power_w": statistics.median(float(r["node_power_w"])
                                                        for r in rows)}
    return out


def run_id(bench: str) -> str:
    """The run's id: its round and submitter (v4.0 SMC; v5.0 Lenovo for the SR780a V3 node)."""
    lenovo = RUNS[bench][0][1].startswith("SR780aV3")
    return f"mlperf-v5.0-lenovo-{bench}" if lenovo else f"mlperf-v4.0-smc-{bench}"


@cache
def predicted(bench: str):
    """hwsim's Result for the benchmark's run, its node's power besides the GPUs at the
    step's average GPU power (``ClusterSpec.overhead_at``), and the GPUs per node."""
    _, base, changes = RUNS[bench]
    row = dict(next(r for r in vr.load_rows() if r["run_id"] == base))
    row.update(changes, run_id=run_id(bench))
    cluster = vr.hardware(row)
    plan = dataclasses.replace(vr.step_plan(row), **EXTRA.get(bench, {}))
    parallel = dataclasses.replace(vr.parallel_plan(row), **PARALLEL_EXTRA.get(bench, {}))
    result = simulate(vr.workload(row), cluster, plan, parallel=parallel)
    return result, cluster.overhead_at(result.avg_power_w), cluster.devices_per_node


def rows() -> list[dict]:
    """One row per benchmark: measured and predicted step time, node power and node energy
    per step (with the node overhead, and the GPUs alone)."""
    out = []
    for bench, m in measured().items():
        result, overhead_w, per_node = predicted(bench)
        gpus_w = per_node * result.avg_power_w
        node_w = gpus_w + overhead_w
        out.append({"benchmark": bench, "runs": m["runs"], "nodes": m["nodes"],
                    "measured_step_s": m["step_time_s"], "predicted_step_s": result.step_time_s,
                    "measured_node_w": m["node_power_w"], "predicted_node_w": node_w,
                    "predicted_gpus_w": gpus_w,
                    "measured_j": m["node_power_w"] * m["step_time_s"],
                    "predicted_j": node_w * result.step_time_s,
                    "predicted_gpus_j": gpus_w * result.step_time_s})
    return out


#: Each metered system's GPU, for the power-profile analysis (``profile``).
SYSTEM_DEVICES = {"64xSMC-H100-SXM-80GB": "h100-sxm5-80gb", "1xSMC-H100-SXM-80GB": "h100-sxm5-80gb",
                  "8xSMC-H100-SXM-80GB": "h100-sxm5-80gb",
                  "SR780aV3-8xB200_SXM_180GB": "b200"}


def profile() -> list[dict]:
    """What the metered power profiles say about a node's parts (analysis; hwsim uses none of
    it). Per node type (SMC's H100 nodes, one per system name sharing the machine; Lenovo's
    B200 node): ``floor_w``, the lowest reading any of its runs logged (``node_power_floor_w``:
    initialisation or evaluation, the GPUs near idle), and ``rest_w``, that less eight GPUs at
    their spec's measured idle draw: an upper bound on what the node's other parts (CPUs,
    memory, NICs, switches, power supplies) draw at idle. Per benchmark: ``plateau_w``, the
    median over its runs of the node's 90th percentile while training, ``gpu_plateau_w``, the
    per-GPU draw that leaves if the other parts still draw ``rest_w`` (``(plateau - rest) / 8``),
    ``gpu_mean_w`` the same from the mean node power, and ``rest_min_w``, the least the other
    parts can draw at the plateau with the GPUs at most at their TDP (``plateau - 8 TDP``)."""
    from hardware_specs.loader import load_device

    with TABLE.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    machines = {"smc-h100": [s for s in SYSTEM_DEVICES if "SMC-H100" in s],
                "lenovo-b200": ["SR780aV3-8xB200_SXM_180GB"]}
    out = []
    for machine, systems in machines.items():
        device = load_device(SYSTEM_DEVICES[systems[0]])
        mine = [r for r in table if r["system"] in systems]
        floor = min(float(r["node_power_floor_w"]) for r in mine)
        rest = floor - 8 * device.idle_power_w
        for key in sorted({(r["benchmark"], r["system"]) for r in mine}):
            runs = [r for r in mine if (r["benchmark"], r["system"]) == key]
            plateau = statistics.median(float(r["node_power_p90_w"]) for r in runs)
            mean = statistics.median(float(r["node_power_w"]) for r in runs)
            out.append({"machine": machine, "device": device.name, "benchmark": key[0],
                        "system": key[1], "runs": len(runs), "floor_w": floor,
                        "rest_w": rest, "tdp_w": float(device.tdp_w), "plateau_w": plateau,
                        "mean_w": mean, "gpu_plateau_w": (plateau - rest) / 8,
                        "gpu_mean_w": (mean - rest) / 8,
                        "rest_min_w": plateau - 8 * device.tdp_w})
    return out


def profile_section() -> list[str]:
    """``profile`` as a markdown table (docs/accuracy.md, hand-maintained)."""
    lines = [("| node | run | runs | floor (W) | rest at the floor (W) | plateau (W) | "
              "GPU at the plateau (W) | GPU on average (W) | rest at the plateau, at least (W) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in profile():
        lines.append(f"| {r['machine']} ({r['device']}, TDP {r['tdp_w']:,.0f} W) | "
                     f"{r['benchmark']}, {r['system']} | {r['runs']} | {r['floor_w']:,.0f} | "
                     f"{r['rest_w']:,.0f} | {r['plateau_w']:,.0f} | {r['gpu_plateau_w']:,.0f} | "
                     f"{r['gpu_mean_w']:,.0f} | {r['rest_min_w']:,.0f} |")
    return lines


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f} %"


def section() -> list[str]:
    """The comparison as a markdown table (for docs/accuracy.md)."""
    lines = [("| MLPerf Training run (v4.0 SMC H100 SXM, v5.0 Lenovo B200) | runs | "
              "step time, measured / hwsim | "
              "node power (W), measured / hwsim (GPUs alone) | node energy per step (kJ), "
              "measured / hwsim (GPUs alone) | energy error (GPUs alone) |"),
             "|---|---|---|---|---|---|"]
    for r in rows():
        lines.append(
            f"| {r['benchmark']}, {r['nodes']} x 8 GPUs | {r['runs']} | "
            f"{r['measured_step_s']:.4g} / {r['predicted_step_s']:.4g} s "
            f"({_pct(r['predicted_step_s'], r['measured_step_s'])}) | "
            f"{r['measured_node_w']:,.0f} / {r['predicted_node_w']:,.0f} "
            f"({r['predicted_gpus_w']:,.0f}) | "
            f"{r['measured_j'] / 1e3:.4g} / {r['predicted_j'] / 1e3:.4g} "
            f"({r['predicted_gpus_j'] / 1e3:.4g}) | "
            f"{_pct(r['predicted_j'], r['measured_j'])} "
            f"({_pct(r['predicted_gpus_j'], r['measured_j'])}) |")
    return lines


if __name__ == "__main__":
    print("\n".join(section()))
