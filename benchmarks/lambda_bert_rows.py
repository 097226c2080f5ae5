"""Build the ``lambda-bert-*`` rows of tests/data/validation_rows.csv from Lambda's tables.

    python benchmarks/lambda_bert_rows.py GIT_DIR            print the rows (CSV, no header)
    python benchmarks/lambda_bert_rows.py GIT_DIR --check    compare them with the stored rows
    python benchmarks/lambda_bert_rows.py GIT_DIR --published [--check]   published_runs.csv's

GIT_DIR is a clone (or bare mirror) of lambdal/deeplearning-benchmark; the rows are read at
commit ``COMMIT``: ``pytorch/pytorch-train-throughput-fp16.csv`` (columns ``bert_large_squad``,
``bert_base_squad``: training sequences/s), ``pytorch/pytorch-train-bs-fp16.csv`` (the global
batch), ``pytorch/scripts/compile_results_pytorch.py`` (which ``pytorch/results/<folder>`` each
table row was compiled from) and each run's log there (the per-GPU batch, the parameter count,
the time stamps of iteration 1 and of 101 or the last logged). A run whose two epochs of SQuAD (88,641 features)
end before step 101 is left out: ``run_squad.py`` counts ``max_steps`` (100) steps in its
published figure however many ran (the bert_base 8-GPU runs: 2 x 35 steps). Nothing is fitted: each row is the run as Lambda ran
it (NVIDIA DeepLearningExamples' PyTorch BERT ``run_squad.py`` on Lambda's fork, branch
``lambda/benchmark`` at c1781a37: SQuAD v1.1 fine-tuning at sequence length 384, apex AMP O2,
apex ``FusedAdam``, gradient clipping with a host read of the norm each step, apex DDP; see
docs/accuracy.md, "Lambda BERT SQuAD rows").

To add a GPU: map Lambda's table name to the catalogue device in ``DEVICES`` (a table name
not mapped is skipped), run the script, append its new rows to validation_rows.csv.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import re
import subprocess
import sys

COMMIT = "aa5addb"
SOURCE = (f"lambdal/deeplearning-benchmark pytorch/pytorch-train-throughput-fp16.csv at "
          f"{COMMIT}, column bert_{{size}}_squad")
#: Lambda's table name (without the GPU count) -> (catalogue device, note). The series without
#: a vendor prefix, as the lambda-resnet50 rows (the Dell, SMC, 1CC, RAIDZ1 and LambdaCloud
#: H100 series are other hosts of the same parts).
DEVICES = {
    "V100 16GB (LambdaCloud)": ("v100-sxm2-32gb", "V100 16GB (LambdaCloud) run priced on the "
                                "catalogue's V100 SXM2 32GB (same chip and bandwidth; no 16 GB "
                                "spec)"),
    "A100 40GB PCIe (LambdaCloud)": ("a100-pcie-40gb", ""),
    "A100 80GB PCIe": ("a100-pcie-80gb", ""),
    "A100 80GB SXM4": ("a100-sxm4-80gb", ""),
    "RTX 4090": ("rtx-4090", ""),
    "H100 80GB PCIe Gen5": ("h100-pcie-80gb", ""),
    "H100 80GB SXM5": ("h100-sxm5-80gb", ""),
    # the GPUs added to the catalogue on 2026-12-06 (issue 20 item 5), on the GPU priors
    "A10 (LambdaCloud)": ("a10", ""),
    "RTX 3090": ("rtx-3090", ""),
    "RTX A6000": ("rtx-a6000", ""),
    "RTX 6000 Ada": ("rtx-6000-ada", ""),
    "Quadro RTX 8000": ("quadro-rtx-8000", ""),
}
#: hwsim's options for DeepLearningExamples' BertForQuestionAnswering as run_squad.py runs it:
#: the span head; the position table of 512 rows (bert_config.json) though the sequence is 384;
#: the attention's scale and mask as kernels of their own (modeling.py BertSelfAttention:
#: ``attention_scores / math.sqrt(...)``, ``+ attention_mask``).
MODEL_OPTIONS = "head=span positions=512 hf_eager=true"
#: vocab_size 30528 (WordPiece's 30522 padded to a multiple of 8): the logs' model_weights_num,
#: 335,150,082 (large) and 109,488,386 (base), are hwsim's counts at 30528 plus the pooler.
VOCAB = 30528
SEQ_LEN = 384   # scripts/run_squad.sh: --max_seq_length=384
LAYERS = {"large": (24, 1024, 16), "base": (12, 768, 12)}   # bert_config.json (Devlin et al.)
SET_RULE = ("validation from the start (2026-12-06): Lambda's BERT SQuAD fine-tuning rows, "
            "added as a second model family beside the ResNet-50 rows; no constant was chosen "
            "on them")


def git(git_dir: str, *args: str) -> str:
    return subprocess.check_output(["git", "--git-dir", git_dir, *args], text=True,
                                   errors="replace")


def table(git_dir: str, path: str) -> dict[str, dict[str, str]]:
    text = git(git_dir, "show", f"{COMMIT}:{path}")
    return {row["name_gpu"]: row for row in csv.DictReader(io.StringIO(text))}


def folders(git_dir: str) -> dict[str, str]:
    """Lambda's table name -> its results folder (compile_results_pytorch.py's lists)."""
    text = git(git_dir, "show", f"{COMMIT}:pytorch/scripts/compile_results_pytorch.py")
    return {name: folder for folder, name in
            re.findall(r'"([^"]+_v1)": \(\s*\[1, \d\],\s*"([^"]+)"', text)}


def base_name(name: str) -> tuple[str, int]:
    """('LambdaCloud 2x V100 16GB' ->) ('V100 16GB (LambdaCloud)', 2)."""
    count = re.search(r"(\d)x ?", name)
    rest = re.sub(r"\dx ?", "", name).strip()
    if rest.startswith("LambdaCloud "):
        rest = rest[len("LambdaCloud "):] + " (LambdaCloud)"
    return rest, int(count.group(1)) if count else 1


def log_facts(git_dir: str, folder: str, size: str) -> dict:
    """The run's log: its path, the commit that added it, per-GPU batch, parameter count, the
    published figure it prints, and the seconds per step between iterations 1 and 101."""
    where = f"pytorch/results/{folder}/PyTorch_bert_{size}_squad_FP16/"
    path = next(p for p in git(git_dir, "ls-tree", "--name-only", COMMIT, where).split()
                if p.endswith(".txt"))
    text = git(git_dir, "show", f"{COMMIT}:{path}")
    added = git(git_dir, "log", "--diff-filter=A", "--format=%h", "--abbrev=7", COMMIT, "--", path).split()
    stamps = dict((int(i), s) for s, i in re.findall(
        r"DLL (\S+ \S+) - Training Epoch: \d+ Training Iteration: (\d+) ", text))
    steady, last = None, max(stamps, default=0)
    if 1 in stamps and last > 1:   # iteration 101, else the last logged (an epoch's end)
        t = [datetime.datetime.strptime(stamps[i], "%Y-%m-%d %H:%M:%S.%f") for i in (1, last)]
        steady = (t[1] - t[0]).total_seconds() / (last - 1)
    per_epoch = int(re.search(r"Iteration: +0%\S* +\| *0/(\d+) ", text).group(1))
    return {"path": path, "added": added[-1] if added else "?", "per_epoch": per_epoch,
            "batch": int(re.search(r"train_batch_size : (\d+)", text).group(1)),
            "params": int(re.search(r"model_weights_num : (\d+)", text).group(1)),
            "e2e": float(re.search(r"e2e_train_time : ([\d.]+)", text).group(1)),
            "steady": steady, "last": last}


def rows(git_dir: str) -> list[dict[str, str]]:
    speed = table(git_dir, "pytorch/pytorch-train-throughput-fp16.csv")
    batch = table(git_dir, "pytorch/pytorch-train-bs-fp16.csv")
    where = folders(git_dir)
    out = []
    for size in ("large", "base"):
        for name, row in speed.items():
            gpu, count = base_name(name)
            if gpu not in DEVICES or not row.get(f"bert_{size}_squad") or name not in where:
                continue
            device, note = DEVICES[gpu]
            facts = log_facts(git_dir, where[name], size)
            if 2 * facts["per_epoch"] <= 100:   # num_train_epochs 2.0 ends the loop first
                print(f"skipped {name} bert_{size}_squad: 2 epochs of {facts['per_epoch']} "
                      "steps ran, not the 100 the published figure counts", file=sys.stderr)
                continue
            micro, total = facts["batch"], int(float(batch[name][f"bert_{size}_squad"]))
            if micro * count != total:
                raise ValueError(f"{name}: log batch {micro} x {count} != table {total}")
            published = round(float(row[f"bert_{size}_squad"]))
            run_id = f"lambda-bert-{size}-" + (f"{count}x_" if count > 1 else "") + \
                gpu.replace(" ", "_")
            steady = facts["steady"]
            window = (f"the log's iterations 1 to {facts['last']} took {steady:.4f} s a step "
                      f"({micro * count / steady:.0f} sequences/s steady)" if steady else
                      "the log has one iteration's time stamp")
            config = (f"pytorch/pytorch-train-bs-fp16.csv (global batch {total:,}, {micro} per "
                      f"GPU); pytorch/scripts/config_v1 PyTorch_bert_{size}_squad_FP16_PARAMS, "
                      "run by scripts/run_squad.sh of LambdaLabsML/DeepLearningExamples "
                      "lambda/benchmark c1781a37 (SQuAD v1.1, seq 384, apex AMP O2, apex "
                      "FusedAdam, max_steps 100)"
                      + ("; apex DDP" if count > 1 else "")
                      + f"; log {facts['path']} (added {facts['added']}): "
                      f"model_weights_num {facts['params']:,}, e2e_train_time "
                      f"{facts['e2e']:.2f} s")
            notes = "; ".join(filter(None, [note, (
                "published = 100 x global batch / e2e_train_time, which times 101 steps and "
                f"the first step's setup: {window}")]))
            out.append({"_published": {
                "run_id": run_id, "model": f"BERT-{size} SQuAD v1.1 fine-tuning (NVIDIA "
                "DeepLearningExamples, PyTorch)", "params_B": f"{facts['params'] / 1e9:.3f}",
                "layers": str(LAYERS[size][0]), "hidden": str(LAYERS[size][1]),
                "heads": str(LAYERS[size][2]), "seq_len": str(SEQ_LEN), "vocab": str(VOCAB),
                "global_batch_seqs": str(total), "global_batch_tokens": str(total * SEQ_LEN),
                "precision": "AMP fp16 (apex O2)", "device": gpu, "device_count": str(count),
                "dp": str(count), "tp": "1", "pp": "1", "samples_per_s": str(published),
                "flops_accounting": "throughput only",
                "run_type": "single-node fine-tuning throughput benchmark",
                "source": SOURCE.format(size=size).replace(", column", "; column"),
                "source_location": f"row name_gpu '{name}', column bert_{size}_squad; log "
                                   f"{facts['path']}",
                "notes": f"training sequences/s over max_steps 100 (run_squad.py); {window}",
                "confirmed_level": "primary"},
                "run_id": run_id, "set": "validation", "model": f"bert-{size}",
                        "vocab": str(VOCAB), "seq_len": str(SEQ_LEN),
                        "model_options": MODEL_OPTIONS, "device": device,
                        "device_count": str(count), "dp": str(count), "tp": "1", "pp": "1",
                        "cp": "1", "zero": "0", "sequence_parallel": "false",
                        "schedule": "1f1b", "virtual_stages": "1",
                        "overlap_grad_reduce": "true", "overlap_tp_comm": "true",
                        "fused_grad_accumulation": "true", "micro_batch": str(micro),
                        "global_batch": str(total), "precision": "fp16", "recompute": "none",
                        "attention": "materialized", "fusion": "eager",
                        "optimizer": "adamw", "optimizer_impl": "fused", "grad_clip": "true",
                        "fp32_grads": "false", "metric": "samples_per_s",
                        "published_value": str(published),
                        "source": SOURCE.format(size=size), "config_source": config,
                        "set_rule": SET_RULE, "notes": notes})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("git_dir", help="a clone or bare mirror of lambdal/deeplearning-benchmark")
    parser.add_argument("--check", action="store_true",
                        help="compare with the stored rows")
    parser.add_argument("--published", action="store_true",
                        help="the rows of tests/data/published_runs.csv instead")
    args = parser.parse_args(argv)
    from pathlib import Path
    name = "published_runs.csv" if args.published else "validation_rows.csv"
    stored_csv = Path(__file__).resolve().parents[1] / "tests" / "data" / name
    with stored_csv.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        header, stored = reader.fieldnames, {r["run_id"]: r for r in reader}
    built = rows(args.git_dir)
    if args.published:
        built = [row["_published"] for row in built]
    if args.check:
        differ = [r["run_id"] for r in built if {k: stored.get(r["run_id"], {}).get(k, "")
                                                 for k in header} != {k: r.get(k, "")
                                                                      for k in header}]
        print("\n".join(differ) or f"all {len(built)} rows as stored")
        return 1 if differ else 0
    writer = csv.DictWriter(sys.stdout, fieldnames=header, lineterminator="\n")
    for row in built:
        writer.writerow({key: row.get(key, "") for key in header})
    return 0


if __name__ == "__main__":
    sys.exit(main())
