"""NeMo's dense fp8 Blackwell validation rows (tests/data/validation_rows.csv) configured as the
performance summary ran them: the NeMo 25.02 DGX-B200 and 25.04 DGX-GB200 tables' own columns
(GPUs, global and micro batch, tp, pp, cp, vp, GA), the 405B recipe's pipeline split and each
container's fp8 recipe, read through benchmarks/validation_report.py as the report reads them."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_module

ROOT = Path(__file__).resolve().parent.parent


report = load_module(ROOT / "benchmarks" / "validation_report.py", "validation_report")
ROWS = {row["run_id"]: row for row in report.load_rows()}

# run id: (GPUs, GBS, MBS, tp, pp, cp, vp, GA, tokens/s/GPU), as the page's tables print them
PAGE = {
    "nemo-gpt3-175b-fp8-b200-512": (512, 2048, 2, 4, 4, 1, 6, 32, 1600),
    "nemo-llama3-8b-fp8-b200-8": (8, 128, 2, 1, 1, 1, 1, 8, 26006),
    "nemo-llama3-70b-fp8-b200-64": (64, 128, 1, 2, 4, 2, 5, 32, 3062),
    "nemo-llama3-405b-fp8-b200-128": (128, 64, 1, 4, 8, 2, 8, 32, 625),
    "nemo-gpt3-175b-fp8-gb200-128": (128, 256, 2, 4, 4, 1, 12, 16, 1804),
    "nemo-llama3-8b-fp8-gb200-8": (8, 128, 2, 1, 1, 1, 1, 8, 33099),
    "nemo-llama3-70b-fp8-gb200-64": (64, 128, 1, 1, 1, 1, 1, 2, 4035),
    "nemo-llama3-405b-fp8-gb200-128": (128, 64, 1, 4, 8, 2, 8, 32, 665),
}


GRAPHS = {"nemo-mixtral-8x7b-fp8-b200-64", "nemo-mixtral-8x7b-fp8-gb200-64",
          "nemo-gpt3-175b-fp8-gb200-128", "nemo-llama3-8b-fp8-gb200-8"}


@pytest.mark.parametrize("run_id", sorted(PAGE))
def test_each_row_is_the_pages_configuration(run_id):
    gpus, gbs, mbs, tp, pp, cp, vp, ga, value = PAGE[run_id]
    row = ROWS[run_id]
    parallel, plan = report.parallel_plan(row), report.step_plan(row)
    assert (parallel.num_devices, parallel.tp, parallel.pp, parallel.cp) == (gpus, tp, pp, cp)
    assert parallel.virtual_stages == vp
    assert (plan.global_batch, plan.micro_batch) == (gbs, mbs)
    assert gbs // (parallel.dp * mbs) == ga and gbs % (parallel.dp * mbs) == 0
    assert float(row["published_value"]) == value
    assert row["set"] == "validation" and plan.precision.value == "fp8"
    # 25.02's bf16_with_fp8_mixed: delayed scaling; 25.04's page: per-tensor current scaling
    assert plan.fp8_recipe.value == ("current" if "gb200" in run_id else "delayed")
    assert row["cluster"] == ("gb200-nvl72" if "gb200" in run_id else "dgx-b200")
    # CUDA graphs: NeMo v2.2.0's B200 scripts (Mixtral 8x7B only), v2.3.0's GB200 configs
    assert plan.graphs == (run_id in GRAPHS)


@pytest.mark.parametrize("run_id", [r for r in PAGE if "405b" in r])
def test_the_405b_split_counts_embedding_and_loss_as_layers(run_id):
    """NeMo's llama31_405b recipe (account_for_embedding/loss_in_pipeline_split): 126 layers
    and 2 over 8 x 8 = 64 model chunks of 2, the first and last holding 1 layer each."""
    parallel = report.parallel_plan(ROWS[run_id])
    chunks = parallel.chunk_layers(126)
    flat = [n for device in chunks for n in device]
    assert sum(flat) == 126 and len(flat) == 64
    assert chunks[0][0] == 1 and chunks[-1][-1] == 1
    assert sorted(flat)[2:] == [2] * 62
