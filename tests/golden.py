"""Recorded predictions of a dozen configurations, to prove that a refactor changes no figure.

``python -m tests.golden --write`` rewrites ``tests/data/golden_results.json``; do that only when a
change is *meant* to move predictions, and say so in the commit.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden_results.json"

# One argv per configuration: zoo models of each family, one device and many, each parallel
# axis, ZeRO stages, recomputation, precisions, whole-run totals, a cluster preset.
CONFIGS = [
    ["predict", "gpt2-small", "--device", "a100", "--micro-batch", "8", "--json"],
    ["predict", "llama2-7b", "--device", "h100", "--micro-batch", "1", "--tokens", "1e9",
     "--json"],
    ["predict", "resnet-50", "--device", "v100", "--micro-batch", "64", "--precision", "fp16",
     "--json"],
    ["predict", "bert-large", "--device", "tpu-v4", "--micro-batch", "16", "--json"],
    ["predict", "vit-b16", "--device", "mi300x", "--micro-batch", "32", "--json"],
    ["predict", "gpt3-1.3b", "--device", "a100", "--num-devices", "8", "--tp", "2",
     "--micro-batch", "4", "--zero", "1", "--json"],
    ["predict", "llama3-8b", "--device", "h100", "--num-devices", "16", "--tp", "4", "--pp",
     "2", "--micro-batch", "1", "--global-batch", "64", "--recompute", "selective", "--json"],
    ["predict", "gpt3-175b", "--device", "a100", "--num-devices", "1024", "--tp", "8", "--pp",
     "16", "--micro-batch", "1", "--global-batch", "1536", "--json"],
    ["predict", "llama2-13b", "--device", "a100", "--num-devices", "8", "--zero", "3",
     "--micro-batch", "2", "--recompute", "full", "--json"],
    ["predict", "mlp", "--device", "epyc-9654", "--micro-batch", "32", "--precision", "fp32",
     "--json"],
    ["predict", "gpt2-medium", "--device", "gaudi2", "--micro-batch", "4", "--steps", "100",
     "--json"],
    ["predict", "llama2-7b", "--device", "a100", "--cp", "2", "--num-devices", "2",
     "--micro-batch", "1", "--json"],
    ["predict", "gpt3-6.7b", "--device", "h100", "--num-devices", "8", "--tp", "8",
     "--micro-batch", "2", "--precision", "fp8", "--json"],
]


def run(argv: list[str]) -> dict:
    from simulator.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(argv)
    if status != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {status}")
    return json.loads(out.getvalue())


def record() -> dict[str, dict]:
    return {" ".join(argv): run(argv) for argv in CONFIGS}


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.golden --write  (rewrites the recorded figures)")
    GOLDEN.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
