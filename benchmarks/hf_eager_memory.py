"""The memory of one NeuSight-style training iteration of Hugging Face eager fp32 models,
counted exactly with the real PyTorch (the truth ``tests/test_hf_eager_memory.py`` compares
hwsim's memory breakdown with).

    python benchmarks/hf_eager_memory.py          print the rows of tests/data/hf_eager_memory.csv
    python benchmarks/hf_eager_memory.py --write  rewrite that file

Needs torch and ``transformers==4.38.1`` (the version NeuSight pins, sitar-lab/NeuSight 6945927
setup.py), which the project does not install: run it in a virtual environment of its own.

What it runs is NeuSight's ``measure_e2e`` (``neusight/Tracing/trace.py``) on models too small
to need a GPU: the config of ``tests/data/neusight_configs/<model>.json`` with fewer layers and
a narrower width (``SCALED``: the same modules, so the same ops), built by
``AutoModelForCausalLM`` (GPT-2, OPT) or ``AutoModelForPreTraining`` (BERT) ``.from_config``
with ``attn_implementation="eager"``, ``model.train()`` (dropout on), fp32; then
``result = model(input_ids)`` on a batch of ones, the cross-entropy of the logits (BERT's
``prediction_logits``) against the inputs outside the model, ``result`` and the logits dropped,
``loss.backward()``; no ``zero_grad`` and no optimizer step. The first iteration makes the
``.grad`` tensors; the second and third are counted, the gradients already there (as in
NeuSight's timed iterations 2-25):

- ``saved_forward`` / ``saved_loss``: the bytes of the distinct storages that autograd saves
  for the backward in the model's forward / in the loss, in the second iteration
  (``torch.autograd.graph.saved_tensors_hooks``; parameters and buffers left out, each
  storage counted once);
- ``peak_forward``, ``peak_loss``, ``peak_backward``: the peak of the bytes held by live
  tensors in each phase of the third iteration, run without the hooks, above the weights,
  gradients and inputs held before it (``torch.profiler`` with ``profile_memory``: each
  event's own allocations at its start and its own frees at its end, summed in time order;
  the iteration nets to 0). Not in the hooked iteration: a tensor a hook packs as itself and
  that its own ``grad_fn`` saves makes a reference cycle, which outlives a graph never run
  backward (BERT's next-sentence head: 66,048 bytes an iteration).

CUDA's dropout (ROCm's too) is ``native_dropout``, which keeps a one-byte mask; on the CPU
``torch.dropout`` keeps the fp32 noise instead (ATen Dropout.cpp: the fused kernel only for
CUDA-like tensors), so the run calls ``native_dropout`` as a GPU run does.
"""
from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "data" / "neusight_configs"
TABLE = ROOT / "tests" / "data" / "hf_eager_memory.csv"
#: name -> (NeuSight config, the fields changed, batch, sequence length)
SCALED = {
    "gpt2_a": ("gpt2_large", dict(n_embd=64, n_head=4, n_layer=2, vocab_size=1000,
                                   n_positions=256, n_ctx=256), 2, 128),
    "gpt2_b": ("gpt2_large", dict(n_embd=96, n_head=3, n_layer=3, vocab_size=777,
                                   n_positions=256, n_ctx=256), 3, 64),
    "opt_a": ("opt_13", dict(hidden_size=64, word_embed_proj_dim=64, ffn_dim=256,
                             num_attention_heads=4, num_hidden_layers=2, vocab_size=1000,
                             max_position_embeddings=256), 2, 128),
    "opt_b": ("opt_13", dict(hidden_size=96, word_embed_proj_dim=96, ffn_dim=200,
                             num_attention_heads=3, num_hidden_layers=3, vocab_size=777,
                             max_position_embeddings=256), 3, 64),
    "bert_a": ("bert_large", dict(hidden_size=64, intermediate_size=256, num_attention_heads=4,
                                  num_hidden_layers=2, vocab_size=1000,
                                  max_position_embeddings=256), 2, 128),
}
PHASES = ("forward", "loss", "backward")
FIELDS = ("name", "weights", "grads", "saved_forward", "saved_loss",
          *(f"peak_{phase}" for phase in PHASES))


def config(name: str) -> dict:
    """The scaled Hugging Face config of ``name`` (a key of ``SCALED``)."""
    base, changed, _, _ = SCALED[name]
    cfg = json.loads((CONFIGS / f"{base}.json").read_text())
    cfg.pop("task_specific_params", None)
    return {**cfg, **changed}


def measure(name: str) -> dict:
    """One row of the table: ``name`` counted as the module says (F.dropout restored after)."""
    import torch
    import torch.nn.functional as F

    def dropout(x, p=0.5, training=True, inplace=False):   # CUDA's: a bool mask kept
        return torch.native_dropout(x, p, True)[0] if training and p > 0 else x

    original, F.dropout = F.dropout, dropout
    try:
        return _measure(name)
    finally:
        F.dropout = original


def _measure(name: str) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForPreTraining

    cfg = config(name)
    _, _, batch, seq = SCALED[name]
    torch.manual_seed(0)
    built = AutoConfig.for_model(**cfg)
    kind = AutoModelForPreTraining if cfg["model_type"] == "bert" else AutoModelForCausalLM
    model = kind.from_config(built, attn_implementation="eager").train()
    ids = torch.ones(batch, seq, dtype=torch.int64)
    saved, phase = {}, ["forward"]

    def pack(t):
        storage = t.untyped_storage()
        saved.setdefault(storage.data_ptr(), (storage.nbytes(), phase[0]))
        return t

    def mark(phase_name):   # an empty event: what Python frees between ops stays a [memory]
        with torch.profiler.record_function(f"PH_{phase_name}"):   # event of its own time
            pass

    def iteration(hooked):
        with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if hooked
              else contextlib.nullcontext()):
            phase[0] = "forward"
            mark("forward")
            result = model(ids)
            logits = (result["prediction_logits"] if "prediction_logits" in result
                      else result["logits"])
            phase[0] = "loss"
            mark("loss")
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), ids.view(-1))
        result = logits = None
        mark("backward")
        loss.backward()
        mark("end")

    iteration(False)
    iteration(True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        iteration(False)
    # an event's own allocations at its start, its own frees at its end (the autograd
    # engine's evaluate_function frees a node's inputs after its kernels have allocated)
    events = sorted((e.time_range.start if e.self_cpu_memory_usage > 0 else e.time_range.end,
                     e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    marks = {e.name[3:]: e.time_range.start for e in prof.events() if e.name.startswith("PH_")}
    live, peaks = 0, dict.fromkeys(PHASES, 0)
    for at, delta in events:
        live += delta
        for phase_name, after in zip(PHASES, ("loss", "backward", "end")):
            if marks[phase_name] <= at < marks[after]:
                peaks[phase_name] = max(peaks[phase_name], live)
    if live != 0:
        raise RuntimeError(f"{name}: the iteration nets {live} bytes, not 0")
    held = ({p.untyped_storage().data_ptr() for p in model.parameters()}
            | {b.untyped_storage().data_ptr() for b in model.buffers()})
    kept = [(n, ph) for ptr, (n, ph) in saved.items() if ptr not in held]
    return {"name": name,
            "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
            "grads": sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
                         if p.grad is not None),
            "saved_forward": sum(n for n, ph in kept if ph == "forward"),
            "saved_loss": sum(n for n, ph in kept if ph == "loss"),
            **{f"peak_{phase_name}": peaks[phase_name] for phase_name in PHASES}}


def main(argv: list[str]) -> int:
    import datetime

    import torch
    import transformers

    rows = [measure(name) for name in SCALED]
    for row in rows:
        print(row)
    if "--write" in argv:
        with TABLE.open("w", newline="") as handle:
            handle.write(f"# benchmarks/hf_eager_memory.py, torch {torch.__version__}, "
                         f"transformers {transformers.__version__}, CPU, "
                         f"{datetime.date.today().isoformat()}\n")
            writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
