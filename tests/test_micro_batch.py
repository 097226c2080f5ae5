"""Without a micro-batch, a global batch runs the largest micro-batch that divides the
per-replica batch and fits in memory (issue 22, item 1): simulate() and the CLI alike."""
import json

import pytest

from simulator import ParallelPlan, simulate
from simulator.cli import main


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _divisors(n: int) -> list[int]:
    return [b for b in range(1, n + 1) if not n % b]


def test_resnet_runs_its_whole_batch_in_one_micro_batch():
    """ResNet-50's 256 images fit an H100 at once (the issue's case: micro-batch 1 and 256
    accumulation steps ran 12x slower); the figures are those of micro-batch 256 given."""
    fitted = simulate("resnet-50", "h100", global_batch=256)
    given = simulate("resnet-50", "h100", global_batch=256, micro_batch=256)
    assert (fitted.micro_batch, fitted.micro_batches) == (256, 1)
    assert fitted.step_time_s == given.step_time_s
    assert fitted.peak_memory_bytes == given.peak_memory_bytes
    assert any("micro-batch 256 (no --micro-batch given)" in n for n in fitted.notes)
    assert fitted.samples_per_s > 5 * simulate("resnet-50", "h100", global_batch=256,
                                               micro_batch=1).samples_per_s


@pytest.mark.parametrize("model, device, batch", [
    ("gpt3-1.3b", "a100-sxm4-40gb", 64),   # about 21 GB of states: a few samples fit
    ("gpt2-medium", "t4", 96),              # 16 GB, a per-replica batch of 96 (12 divisors)
    ("resnet-50", "t4", 512),
])
def test_the_choice_is_the_largest_divisor_that_fits(model, device, batch):
    """It fits, and the next larger divisor of the batch does not (bisection over the
    divisors assumes memory grows with the micro-batch: checked here on each side)."""
    fitted = simulate(model, device, global_batch=batch)
    b = fitted.micro_batch
    assert fitted.fits and batch % b == 0
    larger = [d for d in _divisors(batch) if d > b]
    assert larger, "the whole batch fits: choose a case that needs a choice"
    over = simulate(model, device, global_batch=batch, micro_batch=larger[0])
    assert not over.fits
    assert over.peak_memory_bytes > fitted.peak_memory_bytes
    note = next(n for n in fitted.notes if "no --micro-batch given" in n)
    assert f"{larger[0]} needs" in note


def test_per_replica_batch_is_the_global_batch_over_dp():
    fitted = simulate("gpt2-small", "a100", num_devices=4, global_batch=32)
    assert fitted.parallel["dp"] == 4
    assert fitted.micro_batch * fitted.micro_batches == 8
    assert "per-replica batch of 8" in " ".join(fitted.notes)


def test_a_pipeline_runs_the_fastest_micro_batch_that_fits():
    """With pp > 1 a smaller micro-batch also shrinks the bubble: the choice fits and is at
    least as fast as each divisor next to it that fits."""
    parallel = ParallelPlan(dp=1, tp=8, pp=8)
    fitted = simulate("gpt3-175b", "h100", parallel=parallel, global_batch=64,
                      recompute="full")
    assert fitted.fits
    b = fitted.micro_batch
    sizes = _divisors(64)
    i = sizes.index(b)
    for other in sizes[max(i - 1, 0):i] + sizes[i + 1:i + 2]:
        step = simulate("gpt3-175b", "h100", parallel=parallel, global_batch=64,
                        micro_batch=other, recompute="full")
        assert not step.fits or step.step_time_s >= fitted.step_time_s


def test_the_interleaved_schedule_gets_a_multiple_of_pp_micro_batches():
    parallel = ParallelPlan(dp=1, pp=4, schedule="interleaved", virtual_stages=2)
    fitted = simulate("gpt3-350m", "a100", parallel=parallel, global_batch=16)
    assert fitted.micro_batches % 4 == 0


def test_nothing_fits_runs_micro_batch_one_and_says_so():
    result = simulate("llama2-7b", "a100", global_batch=64)   # 7B x 16 B of states > 80 GB
    assert result.micro_batch == 1 and not result.fits
    assert any("no micro-batch fits" in n for n in result.notes)


def test_a_given_micro_batch_and_no_global_batch_are_kept():
    assert simulate("resnet-50", "h100", global_batch=256, micro_batch=8).micro_batch == 8
    alone = simulate("resnet-50", "h100")
    assert (alone.micro_batch, alone.global_batch) == (1, 1)
    assert not any("no --micro-batch given" in n for n in alone.notes)


def test_cli_json_and_text_say_which(capsys):
    code, out, _ = cli(["predict", "resnet-50", "--device", "h100", "--global-batch", "256",
                        "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert (summary["micro_batch"], summary["micro_batches"]) == (256, 1)
    code, out, _ = cli(["predict", "resnet-50", "--device", "h100", "--global-batch", "256"],
                       capsys)
    assert code == 0 and "256 = 1 x micro-batch 256" in out
    assert "note: micro-batch 256 (no --micro-batch given)" in out


def test_compare_fits_each_device(capsys):
    """compare (and sweep) choose per device: a T4's 16 GB takes a smaller micro-batch of
    GPT-2 medium than an H100's 80 GB."""
    code, out, _ = cli(["compare", "gpt2-medium", "--devices", "h100,t4", "--global-batch",
                        "96", "--json"], capsys)
    assert code == 0
    rows = {row["device"]: row for row in json.loads(out)}
    h100 = simulate("gpt2-medium", "h100", global_batch=96)
    t4 = simulate("gpt2-medium", "t4", global_batch=96)
    assert t4.micro_batch < h100.micro_batch
    assert rows["t4"]["step_time_s"] == pytest.approx(t4.step_time_s, rel=1e-9)
    assert rows["h100-sxm5-80gb"]["step_time_s"] == pytest.approx(h100.step_time_s, rel=1e-9)


@pytest.mark.parametrize("argv, words", [
    (["--global-batch", "30", "--num-devices", "4"], ["global batch = 30", "4"]),
    (["--global-batch", "0"], ["global_batch", "0"]),
])
def test_bad_batches_are_one_line(capsys, argv, words):
    code, out, err = cli(["predict", "gpt2-small", "--device", "a100", *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert all(word in err for word in words)
