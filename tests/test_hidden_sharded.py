"""Hidden-sharded activations (issue 22, item 3: PaLM's layout): the tensors outside the
matmuls split over the tp ranks along the hidden dimension, as GSPMD's 2D finalized layout
does (Xu et al. 2021, sec. 3.3; PaLM, Chowdhery et al. 2022, sec. 4). Per rank it moves and
holds the bytes sequence parallelism does, so where both can run they predict the same step;
it needs tp to divide the hidden size instead of the sequence."""
import pytest

from simulator import ParallelPlan, PlanError, simulate
from simulator.cli import main


def _step(**parallel):
    return simulate("gpt2-small", "a100", parallel=ParallelPlan(tp=4, **parallel),
                    micro_batch=2, global_batch=2)


def test_same_step_as_sequence_parallelism_where_both_run():
    sp, hs, plain = _step(sequence_parallel=True), _step(hidden_sharded=True), _step()
    assert hs.step_time_s == pytest.approx(sp.step_time_s, rel=1e-9)
    assert hs.peak_memory_bytes == sp.peak_memory_bytes
    assert hs.memory_breakdown["activations"] < plain.memory_breakdown["activations"]
    gathers = hs.ops[hs.ops["name"].str.contains("tp_all_gather")]
    assert len(gathers) > 0 and not hs.ops["name"].str.contains("tp_all_reduce").any()


def test_it_runs_where_the_sequence_does_not_split(tmp_path, capsys):
    """gpt2-small's 768 features split 12 ways, its 1,024 tokens do not: the CLI runs it and
    says so in its summary."""
    base = ["predict", "gpt2-small", "--device", "tpu-v4", "--num-devices", "12", "--tp", "12",
            "--micro-batch", "1", "--global-batch", "1"]
    assert main([*base, "--hidden-sharded"]) == 0
    assert "hidden-sharded" in capsys.readouterr().out
    assert main([*base, "--sequence-parallel"]) == 2
    assert "tp = 12 must divide seq_len = 1024" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--tp", "5", "--num-devices", "5"], "hidden_sharded: tp = 5 must divide hidden = 768"),
    (["--tp", "1"], "needs tp > 1"),
    (["--tp", "4", "--num-devices", "4", "--sequence-parallel"], "choose one"),
])
def test_bad_input_is_one_line(extra, words, capsys):
    code = main(["predict", "gpt2-small", "--device", "a100", "--micro-batch", "1",
                 "--hidden-sharded", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err


def test_tp_must_divide_the_hidden_size(tmp_path):
    spec = tmp_path / "odd.toml"
    spec.write_text('[transformer]\nlayers = 2\nhidden = 1004\nheads = 8\nvocab = 1000\n'
                    'seq_len = 64\nhead_size = 128\n')
    with pytest.raises(PlanError, match="hidden_sharded: tp = 8 must divide hidden = 1004"):
        simulate(str(spec), "a100", parallel=ParallelPlan(tp=8, hidden_sharded=True),
                 micro_batch=1)
