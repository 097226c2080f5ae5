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
backward, its forward in hwsim's only (a cross-entropy over the vocabulary: well under 1 %).

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
"""
from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/neusight_labels.py``: this tree's
    sys.path.insert(0, str(ROOT))   # simulator, not the one an editable install points at
LABELS = ROOT / "tests" / "data" / "neusight_train_labels.csv"
INFERENCE_LABELS = ROOT / "tests" / "data" / "neusight_inference_labels.csv"
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


def predict_ms(model: str, device: str, seq_len: int, batch: int, eager: bool = True) -> float:
    """hwsim's forward + backward of one fp32 micro-batch, in milliseconds."""
    from simulator.api import simulate

    result = simulate(workload(model, eager), device, micro_batch=batch, seq_len=seq_len,
                      precision="fp32", attention="materialized", optimizer="sgd")
    return result.parallel["micro_batch_s"] * 1e3


def predict_inference_ms(model: str, device: str, seq_len: int, batch: int) -> float:
    """hwsim's forward of one fp32 batch as ``model.eval()`` under ``no_grad`` runs it, in
    milliseconds: the end of the last forward op of the eager graph with both dropouts off,
    the loss left out and, for BERT (a sequence classifier there), the masked-LM head."""
    import dataclasses

    from simulator.api import simulate
    from simulator.graph.op import Phase

    work = dataclasses.replace(workload(model), dropout=False, attention_dropout=False)
    result = simulate(work, device, micro_batch=batch, seq_len=seq_len, precision="fp32",
                      attention="materialized", optimizer="sgd")
    lowered, names = result.lowered, result.lowered.names
    head = names.index("mlm_dense") if model == "bert_large" else len(names)
    kept = [i for i in range(head)
            if lowered.phase[i] == Phase.FORWARD and not names[i].startswith("loss")]
    return float(result.times["end_s"][kept].max()) * 1e3


def inference_rows() -> list[Row]:
    return [Row(r["gpu"], r["catalogue"], r["model"], int(r["seq_len"]), int(r["batch"]),
                float(r["fw_ms"]),
                predict_inference_ms(r["model"], r["catalogue"], int(r["seq_len"]),
                                     int(r["batch"])), "inf")
            for r in labels(INFERENCE_LABELS)]


def rows() -> list[Row]:
    out = []
    for r in labels():
        seq, batch = int(r["seq_len"]), int(r["batch"])
        out.append(Row(r["gpu"], r["catalogue"], r["model"], seq, batch, float(r["e2e_ms"]),
                       predict_ms(r["model"], r["catalogue"], seq, batch)))
    return out


def median_abs_error(table: list[Row]) -> float:
    return statistics.median(abs(r.error) for r in table)


def _pct(x: float, sign: bool = True) -> str:
    return (f"{100 * x:+.1f} %" if sign else f"{100 * x:.1f} %")


def markdown_lines(table: list[Row] | None = None,
                   inference: list[Row] | None = None) -> list[str]:
    """The training table (one line per label), its per-GPU and overall median |error|, then
    the same two for the inference labels and a per-GPU summary of both, as Markdown lines
    (``docs/generate.py`` renders them into ``docs/accuracy.md``)."""
    table = rows() if table is None else table
    inference = inference_rows() if inference is None else inference
    lines = ["Training (forward + backward):", ""]
    lines += _mode_lines(table)
    lines += ["", "Inference (forward under `no_grad`, `eval()`):", ""]
    lines += _mode_lines(inference)
    both = table + inference
    gpus = list(dict.fromkeys(r.gpu for r in both))
    lines += ["", f"Both, per GPU ({len(gpus)} GPUs):", "",
              "| GPU | labels | median \\|error\\| | worst |", "|---|---|---|---|"]
    for gpu in gpus:
        mine = [r for r in both if r.gpu == gpu]
        worst = max(mine, key=lambda r: abs(r.error))
        lines.append(f"| {gpu.replace('_', ' ')} | {len(mine)} | "
                     f"{_pct(median_abs_error(mine), False)} | {_pct(worst.error)} |")
    worst = max(both, key=lambda r: abs(r.error))
    lines.append(f"| all | {len(both)} | {_pct(median_abs_error(both), False)} | "
                 f"{_pct(worst.error)} |")
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
