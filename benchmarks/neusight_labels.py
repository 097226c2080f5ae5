"""hwsim against NeuSight's end-to-end training and inference labels (validation only: nothing
is fitted on them).

    python benchmarks/neusight_labels.py      print the tables (predicted, measured, error)

NeuSight (Lee et al., ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence, commit 6945927)
timed one training iteration of Hugging Face models on single GPUs
(``scripts/asplos/label/<GPU>/<model>-train-<seq>-<batch>.json``, copied to
``tests/data/neusight_train_labels.csv``): ``model(input_ids)`` then ``loss.backward()`` in fp32,
``model.train()`` (dropout on), ``attn_implementation="eager"`` (the attention scores
materialised), no optimizer step, CUDA events around each of the two calls
(``neusight/Tracing/trace.py``, ``measure_e2e``). The label is the sum of the two.

hwsim prices the same: the models' configs (``tests/data/neusight_configs/``; BERT-large as the zoo's
``bert-large``, which is that config), as Hugging Face's eager modules run them (``workload``:
the attention's scale and mask, and GPT-2's ``gelu_new``, as their own kernels, the ops
NeuSight's per-op traces of these runs list), ``precision="fp32"``,
``attention="materialized"``, and the forward + backward of one micro-batch (``Result.parallel["micro_batch_s"]``: no optimizer,
no per-step framework cost). The loss is in hwsim's backward graph and in NeuSight's timed
backward, its forward in hwsim's only (a cross-entropy over the vocabulary: well under 1 %),
as PyTorch's own ``F.cross_entropy`` runs it on the fp32 logits (``loss_kernels="torch"``:
the log-softmax, the nll gradient and the log-softmax gradient each a tensor of its own).
Memory (``predict_peak_bytes``, ``launched_fits``): the peak of the harness's iteration, no
optimizer states; every training run its scripts launched fits in hwsim's count where it has
a label and does not where it has none (tests/test_neusight_labels.py).

Inference labels (``scripts/asplos/label/<GPU>/<model>-inf-<seq>-<batch>.json``, the ``-fusion``
variants left out; copied to ``tests/data/neusight_inference_labels.csv``): the same
``measure_e2e`` with ``is_train`` False, i.e. ``model.eval()`` (no dropout) and one forward call
under ``torch.no_grad()``, timed with CUDA events; BERT-large as Hugging Face's
``AutoModelForSequenceClassification`` (no masked-LM head; a pooler and a two-way classifier
on the first token instead), the decoders as ``AutoModelForCausalLM`` (the LM head over every
position, no loss). They cover four GPUs that have no training label (Tesla T4, P100, P4 and
the A100 PCIe 40GB). hwsim prices them as the forward phase of the same eager fp32 graph with
both dropouts off (``predict_inference_ms``): the time at which its last forward op ends,
the loss left out, and for BERT the masked-LM head (``mlm_dense`` on) left out; the pooler
and classifier (a 1024 x 1024 GEMM on one token per sample, then 1024 x 2) are not priced
(microseconds). ``no_grad`` changes what is kept for a backward, not the kernels run; it also skips autograd's bookkeeping, which hwsim's per-op host cost includes (``simulator.cost.host``): not taken out, a few microseconds per op against forwards of 70 ms and more.

Multi-GPU training labels (``scripts/asplos/label/<GPU>/<model>-train-<seq>-<batch>-<plan>.json``,
copied to ``tests/data/neusight_distributed_labels.csv``): GPT-2 large and the GPT-3 XL config on
four A100 SXM4 40GB or H100 80GB HBM3, trained by Megatron-LM (core_r0.5.0) through accelerate
1.0.0 (``scripts/asplos/collect_label_distributed.py``, ``run_label_distributed.py``,
``install_megatron.sh``) with ``dp4``, ``tp4`` or ``pp4_1`` (four stages, one micro-batch), fp32,
clipping 1.0. The CUDA events on rank 0 hold ``model(**batch)``, which under accelerate's
Megatron-LM integration is Megatron's whole ``train_step`` (``MegatronEngine.forward`` in training
mode: the gradient buffers zeroed, ``forward_backward_func`` over the micro-batches, the
gradients all-reduced after the backward by ``finalize_model_grads``, clipped and the update by
apex's FusedAdam), and ``accelerator.backward``, a no-op there; the ``optimizer.step()`` after the
events is accelerate's no-op wrapper. hwsim prices the whole step (``predict_distributed_ms``:
``Result.step_time_s``) of the model Megatron builds from the config (``megatron_workload``).
"""
from __future__ import annotations

import csv
import statistics
import sys
from functools import cache
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/neusight_labels.py``: this tree's
    sys.path.insert(0, str(ROOT))   # simulator, not the one an editable install points at
LABELS = ROOT / "tests" / "data" / "neusight_train_labels.csv"
INFERENCE_LABELS = ROOT / "tests" / "data" / "neusight_inference_labels.csv"
DISTRIBUTED_LABELS = ROOT / "tests" / "data" / "neusight_distributed_labels.csv"
#: Megatron-LM pads the vocabulary to a multiple of this x tp (``--make-vocab-size-divisible-by``,
#: default 128: megatron/arguments.py at NVIDIA/Megatron-LM core_r0.5.0; padded by
#: megatron/tokenizer/tokenizer.py ``_vocab_size_with_padding``, which accelerate's
#: ``initialize`` calls): GPT-2's 50,257 words become 50,304 at tp 1 and 50,688 at tp 4.
VOCAB_DIVISOR = 128
CONFIGS = ROOT / "tests" / "data" / "neusight_configs"
#: NeuSight model names whose config hwsim reads from the zoo instead (its HF reader covers
#: decoders; BERT-large is the zoo's ``bert-large``: 24 layers, 1024 wide, 16 heads, vocab 30522).
ZOO = {"bert_large": "bert-large"}


class Row(NamedTuple):
    gpu: str          # as NeuSight names it
    device: str       # the catalogue spec it is priced on
    model: str
    seq_len: int
    batch: int
    measured_ms: float
    predicted_ms: float
    mode: str = "train"   # NeuSight's mode: train (forward + backward) or inf (forward)

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1


def labels(path: Path = LABELS) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def workload(model: str, eager: bool = True):
    """The model NeuSight ran: its config (or the zoo's BERT-large) as Hugging Face's eager
    modules run it (``TransformerConfig.hf_eager``: the attention's scale and mask as their own
    kernels; ``gelu_kernels`` 8 where the config's activation is ``gelu_new``). ``eager``
    False: the fused kernels hwsim prices by default."""
    import dataclasses
    import json

    from workloads.zoo import get_workload

    path = CONFIGS / f"{model}.json"
    work = get_workload(ZOO.get(model) or str(path))
    if not eager:
        return work
    gelu_new = model not in ZOO and json.loads(path.read_text()).get(
        "activation_function") == "gelu_new"
    return dataclasses.replace(work, hf_eager=True, gelu_kernels=8 if gelu_new else 1)


@cache
def train(model: str, device: str, seq_len: int, batch: int, eager: bool = True):
    """hwsim's ``Result`` of one fp32 training step of ``model`` as NeuSight's harness runs it
    (``eager``: Hugging Face's eager modules and PyTorch's own ``F.cross_entropy`` on the fp32
    logits, ``loss_kernels="torch"``: the log-softmax, the nll gradient and the log-softmax
    gradient each a tensor of their own; False: the fused kernels hwsim prices by default)."""
    from simulator.api import simulate

    return simulate(workload(model, eager), device, micro_batch=batch, seq_len=seq_len,
                    precision="fp32", attention="materialized", optimizer="none",
                    **({"loss_kernels": "torch"} if eager else {}))


def predict_ms(model: str, device: str, seq_len: int, batch: int, eager: bool = True) -> float:
    """hwsim's forward + backward of one fp32 micro-batch, in milliseconds."""
    return train(model, device, seq_len, batch, eager).parallel["micro_batch_s"] * 1e3


def predict_peak_bytes(model: str, device: str, seq_len: int, batch: int) -> float:
    """hwsim's peak memory of one training iteration as NeuSight's harness runs it: weights,
    gradients and the live tensors at the peak (``Result.peak_memory_bytes``), with no
    optimizer (``optimizer="none"``: the harness runs no optimizer step, and in fp32 there is
    no master copy). The gradients are there: the harness never zeroes them, so from its
    second iteration on they are held throughout."""
    return train(model, device, seq_len, batch).peak_memory_bytes


#: The training runs NeuSight's label scripts launch on each GPU (scripts/asplos/
#: run_label_amd.py lines 50-59, run_label_nvidia.py lines 52-61, the same ten; the NVIDIA list's
#: two Switch Transformer runs are not modelled), and the GPUs that ran them: those with a
#: training label. ``measure_e2e`` returns None only on an out-of-memory error (any other
#: error is raised), and ``collect_label.py`` then writes no label: a launched run without a
#: label ran out of memory (``trace_graph`` runs the whole model first, then one layer).
LAUNCHED_TRAIN = (("bert_large", 512, 2), ("bert_large", 512, 8), ("gpt2_large", 1024, 1),
                  ("gpt2_large", 1024, 4), ("gpt3_xl", 2048, 1), ("gpt3_xl", 2048, 2),
                  ("opt_13", 2048, 1), ("opt_13", 2048, 2), ("gpt3_27", 2048, 1),
                  ("gpt3_27", 2048, 2))


class Fit(NamedTuple):
    gpu: str
    device: str
    model: str
    seq_len: int
    batch: int
    labelled: bool       # NeuSight has its label: it ran
    peak_bytes: float    # hwsim's peak, no optimizer (``predict_peak_bytes``)
    capacity_bytes: int

    @property
    def fraction(self) -> float:
        return self.peak_bytes / self.capacity_bytes


def launched_fits() -> list[Fit]:
    """Every launched training run on every GPU with a training label: whether it ran, and
    hwsim's peak memory (each model, sequence and batch priced once)."""
    from hardware_specs.loader import load_device

    table = labels()
    gpus = dict.fromkeys((r["gpu"], r["catalogue"]) for r in table)
    ran = {(r["gpu"], r["model"], int(r["seq_len"]), int(r["batch"])) for r in table}
    # the bytes do not depend on the device (the same on the MI100, MI210, L4 and H100,
    # 2026-12-06): each run priced once, on a GPU that has its label where one has (the
    # Result ``rows`` priced, kept by ``train``), else on the MI210
    where = {(r["model"], int(r["seq_len"]), int(r["batch"])): r["catalogue"] for r in table}
    peaks = {run: predict_peak_bytes(run[0], where.get(run, "mi210"), run[1], run[2])
             for run in LAUNCHED_TRAIN}
    return [Fit(gpu, device, model, seq, batch, (gpu, model, seq, batch) in ran,
                peaks[(model, seq, batch)], load_device(device).memory_bytes)
            for gpu, device in gpus for model, seq, batch in LAUNCHED_TRAIN]


def predict_inference_ms(model: str, device: str, seq_len: int, batch: int) -> float:
    """hwsim's forward of one fp32 batch as ``model.eval()`` under ``no_grad`` runs it, in
    milliseconds: the end of the last forward op of the eager graph with both dropouts off,
    the loss left out and, for BERT (a sequence classifier there), the masked-LM head."""
    import dataclasses

    from simulator.api import simulate
    from simulator.graph.op import Phase

    work = dataclasses.replace(workload(model), dropout=False, attention_dropout=False)
    result = simulate(work, device, micro_batch=batch, seq_len=seq_len, precision="fp32",
                      attention="materialized", optimizer="none", loss_kernels="torch")
    lowered, names = result.lowered, result.lowered.names
    head = names.index("mlm_dense") if model == "bert_large" else len(names)
    kept = [i for i in range(head)
            if lowered.phase[i] == Phase.FORWARD and not names[i].startswith("loss")]
    return float(result.times["end_s"][kept].max()) * 1e3


def inference_rows() -> list[Row]:
    """The inference labels with hwsim's predictions (priced once per process, as ``rows``)."""
    return list(_inference_rows())


@cache
def _inference_rows() -> tuple[Row, ...]:
    return tuple(Row(r["gpu"], r["catalogue"], r["model"], int(r["seq_len"]), int(r["batch"]),
                     float(r["fw_ms"]),
                     predict_inference_ms(r["model"], r["catalogue"], int(r["seq_len"]),
                                          int(r["batch"])), "inf")
                 for r in labels(INFERENCE_LABELS))


def rows() -> list[Row]:
    """The training labels with hwsim's predictions, priced once per process: the labels and
    the catalogue do not change while it runs, and ``docs/generate.py`` and
    tests/test_neusight_labels.py both want them (ten seconds of the test run here)."""
    return list(_rows())


@cache
def _rows() -> tuple[Row, ...]:
    out = []
    for r in labels():
        seq, batch = int(r["seq_len"]), int(r["batch"])
        out.append(Row(r["gpu"], r["catalogue"], r["model"], seq, batch, float(r["e2e_ms"]),
                       predict_ms(r["model"], r["catalogue"], seq, batch)))
    return tuple(out)


class DistributedRow(NamedTuple):
    gpu: str
    device: str
    model: str
    seq_len: int
    batch: int           # the global batch
    plan: str            # NeuSight's name: dp4, tp4, pp4_1
    measured_ms: float
    predicted_ms: float
    neusight_ms: float   # NeuSight's own prediction of the label

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1

    @property
    def neusight_error(self) -> float:
        return self.neusight_ms / self.measured_ms - 1


def megatron_workload(model: str, tp: int):
    """The GPT Megatron-LM builds from NeuSight's Hugging Face config (accelerate 1.0.0's
    ``parse_gpt2_config``: layers, hidden, heads, positions and vocabulary; Megatron's
    defaults for the rest: dropout 0.1 on the hidden states and the attention, 4 x hidden MLP,
    tied embeddings), in fp32. hwsim's default transformer is Megatron's layer (the fused
    query/key/value GEMM, bias and GELU one kernel, the bias, dropout and residual add fused
    in the jit/compiled kernels, Megatron's eager vocabulary-parallel cross-entropy) but for
    the softmax: outside 16 bits Megatron's fused scale-mask-softmax kernel is not used, and
    the mask runs as its own kernel (``mask_kernel``; the scale is in the score GEMM). The
    vocabulary is padded to a multiple of 128 x tp (``VOCAB_DIVISOR``)."""
    import dataclasses

    work = workload(model, eager=False)
    step = VOCAB_DIVISOR * tp
    return dataclasses.replace(work, vocab=-(-work.vocab // step) * step, mask_kernel=True)


def predict_distributed_ms(model: str, device: str, seq_len: int, batch: int, dp: int, tp: int,
                           pp: int, micro_batches: int = 1) -> float:
    """hwsim's whole fp32 training step of ``megatron_workload`` on dp x tp x pp devices
    (``cluster_for``: one node on the device's NVLink), as Megatron-LM core_r0.5.0 ran it through
    accelerate: 1F1B over ``micro_batches`` micro-batches, Megatron's DDP (``sharding``
    megatron) reducing the gradients in one bucket after the backward (``overlap_grad_reduce``
    off, its default), gradient accumulation fused into the weight-gradient GEMMs (apex, on by
    default), gradients clipped by their global norm (``grad_clip``: 1.0) and apex's FusedAdam
    (``optimizer_impl`` fused). In milliseconds."""
    from simulator.api import simulate

    result = simulate(megatron_workload(model, tp), device, num_devices=dp * tp * pp, dp=dp,
                      tp=tp, pp=pp, schedule="1f1b", micro_batch=batch // dp // micro_batches,
                      global_batch=batch, seq_len=seq_len, precision="fp32",
                      attention="materialized", optimizer="adamw", optimizer_impl="fused",
                      grad_clip=True, overlap_grad_reduce=False, sharding="megatron")
    return result.step_time_s * 1e3


def distributed_rows() -> list[DistributedRow]:
    out = []
    for r in labels(DISTRIBUTED_LABELS):
        seq, batch = int(r["seq_len"]), int(r["global_batch"])
        dp, tp, pp, m = (int(r[k]) for k in ("dp", "tp", "pp", "micro_batches"))
        out.append(DistributedRow(r["gpu"], r["catalogue"], r["model"], seq, batch, r["plan"],
                                  float(r["e2e_ms"]),
                                  predict_distributed_ms(r["model"], r["catalogue"], seq, batch,
                                                         dp, tp, pp, m),
                                  float(r["neusight_ms"])))
    return out


def median_abs_error(table: list) -> float:
    return statistics.median(abs(r.error) for r in table)


def _pct(x: float, sign: bool = True) -> str:
    return (f"{100 * x:+.1f} %" if sign else f"{100 * x:.1f} %")


def markdown_lines(table: list[Row] | None = None, inference: list[Row] | None = None,
                   distributed: list[DistributedRow] | None = None) -> list[str]:
    """The training table (one line per label), its per-GPU and overall median |error|, the
    same two for the inference labels and for the multi-GPU training labels (with NeuSight's
    own error beside each), and a per-GPU summary of all three, as Markdown lines
    (``docs/generate.py`` renders them into ``docs/accuracy.md``)."""
    table = rows() if table is None else table
    inference = inference_rows() if inference is None else inference
    distributed = distributed_rows() if distributed is None else distributed
    lines = ["Training (forward + backward):", ""]
    lines += _mode_lines(table)
    lines += ["", "Inference (forward under `no_grad`, `eval()`):", ""]
    lines += _mode_lines(inference)
    lines += ["", "Multi-GPU training (Megatron-LM on four GPUs, the whole step):", ""]
    lines += _distributed_lines(distributed)
    every = table + inference + distributed
    gpus = list(dict.fromkeys(r.gpu for r in every))
    lines += ["", f"All three, per GPU ({len(gpus)} GPUs):", "",
              "| GPU | labels | median \\|error\\| | worst |", "|---|---|---|---|"]
    for gpu in gpus:
        mine = [r for r in every if r.gpu == gpu]
        worst = max(mine, key=lambda r: abs(r.error))
        lines.append(f"| {gpu.replace('_', ' ')} | {len(mine)} | "
                     f"{_pct(median_abs_error(mine), False)} | {_pct(worst.error)} |")
    worst = max(every, key=lambda r: abs(r.error))
    lines.append(f"| all | {len(every)} | {_pct(median_abs_error(every), False)} | "
                 f"{_pct(worst.error)} |")
    return lines


def _distributed_lines(table: list[DistributedRow]) -> list[str]:
    lines = ["| GPU | priced on | model | sequence | global batch | plan | measured | hwsim | "
             "error | NeuSight's error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r.gpu.replace('_', ' ')} | `{r.device}` x 4 | {r.model} | "
                     f"{r.seq_len:,} | {r.batch} | {r.plan} | {r.measured_ms:,.1f} ms | "
                     f"{r.predicted_ms:,.1f} | {_pct(r.error)} | {_pct(r.neusight_error)} |")
    lines += ["", "| GPU | labels | median \\|error\\| | worst | bias (median error) | "
              "NeuSight's median \\|error\\| |", "|---|---|---|---|---|---|"]
    for gpu in [*dict.fromkeys(r.gpu for r in table), None]:
        mine = [r for r in table if gpu is None or r.gpu == gpu]
        worst = max(mine, key=lambda r: abs(r.error))
        name = "all" if gpu is None else gpu.replace("_", " ")
        lines.append(f"| {name} | {len(mine)} | {_pct(median_abs_error(mine), False)} | "
                     f"{_pct(worst.error)} | {_pct(statistics.median(r.error for r in mine))} | "
                     f"{_pct(statistics.median(abs(r.neusight_error) for r in mine), False)} |")
    return lines


def _mode_lines(table: list[Row]) -> list[str]:
    lines = ["| GPU | priced on | model | sequence | batch | measured | hwsim | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r.gpu.replace('_', ' ')} | `{r.device}` | {r.model} | {r.seq_len:,} | "
                     f"{r.batch} | {r.measured_ms:,.1f} ms | {r.predicted_ms:,.1f} | "
                     f"{_pct(r.error)} |")
    lines += ["", "| GPU | labels | median \\|error\\| | worst | bias (median error) |",
              "|---|---|---|---|---|"]
    for gpu in dict.fromkeys(r.gpu for r in table):
        mine = [r for r in table if r.gpu == gpu]
        worst = max(mine, key=lambda r: abs(r.error))
        lines.append(f"| {gpu.replace('_', ' ')} | {len(mine)} | "
                     f"{_pct(median_abs_error(mine), False)} | {_pct(worst.error)} | "
                     f"{_pct(statistics.median(r.error for r in mine))} |")
    worst = max(table, key=lambda r: abs(r.error))
    lines.append(f"| all | {len(table)} | {_pct(median_abs_error(table), False)} | "
                 f"{_pct(worst.error)} | {_pct(statistics.median(r.error for r in table))} |")
    return lines


def main(argv: list[str]) -> int:
    print("\n".join(markdown_lines()))
    print("\nTraining runs launched (hwsim's peak, no optimizer, of the GPU's memory):\n")
    for fit in launched_fits():
        print(f"{fit.gpu:24s} {fit.model:11s} {fit.seq_len:5d} {fit.batch}  "
              f"{'ran    ' if fit.labelled else 'no label'}  {fit.fraction:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
