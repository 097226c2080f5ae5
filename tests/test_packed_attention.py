"""Packed sequences attending within each sample (``TransformerConfig.packed_attention``): the
attention core of a row of s tokens packed with samples of l_i tokens does sum(l_i^2) / s^2 of
the unpacked score FLOPs (Krell et al. 2021, arXiv 2107.02027; NVIDIA's MLPerf BERT
--pad_fmha --packed_samples), priced as 1 / packed_attention equal samples; the GEMMs and the
rest of the layer still see s tokens a row."""
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import energy_validation as ev
from simulator.errors import WorkloadError
from workloads.moe import MLA
from workloads.transformer import TransformerConfig, packed_core
from workloads.zoo import get_workload

BERT = get_workload("bert-large")
CORE = ("scores", "softmax", "attn_dropout", "context")


def _ops(work, batch=2):
    graph = work.forward_graph(batch)
    return {op.name: op for op in (graph.op(n) for n in graph.names())}


def _core_flops(work, batch=2):
    return sum(op.flops for op in _ops(work, batch).values()
               if op.name.split(".")[-1] in ("scores", "context"))


def test_one_sample_a_row_is_the_unpacked_graph():
    """packed_attention 1 (one sample of 512 a row) builds the very graph of None."""
    plain, one = _ops(BERT), _ops(dataclasses.replace(BERT, packed_attention=1.0))
    assert plain == one


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_k_equal_samples_closed_form(k):
    """k samples of 512 / k tokens a row: the score and context matmuls of a layer run
    2 x 16 x k score matrices of (512 / k)^2 each, 1 / k of the unpacked FLOPs; every op
    outside the attention core is unchanged."""
    packed = _ops(dataclasses.replace(BERT, packed_attention=1 / k))
    plain = _ops(BERT)
    scores = next(op for name, op in packed.items() if name.endswith("scores"))
    assert (scores.batch, scores.m, scores.n, scores.k) == (2 * 16 * k, 512 // k, 512 // k, 64)
    assert scores.flops == 2 * (2 * 16 * k) * (512 // k) ** 2 * 64
    assert _core_flops(dataclasses.replace(BERT, packed_attention=1 / k)) * k == \
        _core_flops(BERT)
    outside = [name for name, op in plain.items() if op.block.name != "ATTN_CORE"]
    assert outside and all(packed[name] == plain[name] for name in outside)


@settings(max_examples=60, deadline=None)
@given(packed=st.floats(1e-3, 1.0), heads=st.integers(1, 4096), s=st.integers(1, 8192))
def test_packed_core_never_above_unpacked(packed, heads, s):
    """Invariants of the equivalent samples: never more score FLOPs nor more tokens than the
    unpacked rows, and less than one sample's tokens dropped by the rounding down."""
    count, side = packed_core(heads, s, packed)
    assert 1 <= side <= s
    assert count * side ** 2 <= heads * s * s
    assert heads * s - side < count * side <= heads * s


@settings(max_examples=20, deadline=None)
@given(low=st.floats(0.01, 1.0), high=st.floats(0.01, 1.0))
def test_less_packed_attention_never_more_flops(low, high):
    """On BERT-large the attention core's FLOPs never exceed the unpacked ones, and a smaller
    mean sum(l_i^2) / s^2 never costs more (to the rounding of the equivalent length: one
    sample side of 1 token in 512, at most 2 x 1/512 relative)."""
    low, high = sorted((low, high))
    flops = [_core_flops(dataclasses.replace(BERT, packed_attention=p)) for p in (low, high)]
    assert flops[0] <= flops[1] * (1 + 2 / 512) and flops[1] <= _core_flops(BERT)


@pytest.mark.parametrize("value", [0, 0.0, -0.25, 1.5, True, "0.75", float("nan")])
def test_a_value_outside_0_1_is_refused(value):
    with pytest.raises(WorkloadError, match="packed_attention"):
        dataclasses.replace(BERT, packed_attention=value)


def test_not_with_mla():
    with pytest.raises(WorkloadError, match="packed_attention"):
        TransformerConfig("m", 2, 256, 4, vocab=1000, seq_len=128, packed_attention=0.5,
                          mla=MLA(kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                  v_head_dim=32))


def test_a_workload_toml_says_so_and_a_bad_one_exits_2(tmp_path):
    """A [transformer] key of a workload TOML: read into the model; the CLI refuses a value
    outside (0, 1] in one line naming the key, exit 2."""
    from tests.test_cli import hwsim

    text = "[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nvocab = 1000\nseq_len = 128\n"
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(text + "packed_attention = 0.5\n")
    bad.write_text(text + "packed_attention = 1.5\n")
    assert get_workload(str(good)).packed_attention == 0.5
    proc = hwsim("predict", str(bad), "--device", "a100")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1
    assert "packed_attention" in lines[0] and "Traceback" not in proc.stderr


def test_mlperf_bert_figure_recomputed():
    """MLPerf BERT's packs (benchmarks.energy_validation.BERT_PACKED_ATTENTION): 156,726,829
    samples in 78,404,631 packs (NVIDIA's packing output, 'Average sequences/sample 1.99895')
    times the Wikipedia histogram's mean l^2 (Krell et al.'s, graphcore/examples 2d8b565
    histograms.py: sum l^2 1,608,843,187,973 over 16,279,552 samples) over 512^2."""
    per_pack = 156_726_829 / 78_404_631
    assert per_pack == pytest.approx(1.99895, abs=1e-5)
    mean_l2 = 1_608_843_187_973 / 16_279_552
    assert mean_l2 == pytest.approx(98_826.01, abs=0.01)
    assert ev.BERT_PACKED_ATTENTION == pytest.approx(per_pack * mean_l2 / 262_144, abs=5e-5)
    assert ev.BERT_PACKED_ATTENTION == 0.7536
    # the histogram is of the same data: its mean length (sum l 4,164,796,173) within 1 % of
    # the one NVIDIA's output implies, (156,726,829 x 512 - 4.04e10 padding) / 156,726,829
    nvidia = (156_726_829 * 512 - 4.04e10) / 156_726_829
    assert 4_164_796_173 / 16_279_552 == pytest.approx(nvidia, rel=0.01)
    # set on the two BERT metered rows, which pack; 386-token equivalent samples
    for bench in ("bert-h100", "bert-b200"):
        options = ev.RUNS[bench][2]["model_options"].split()
        assert "packed_attention=0.7536" in options
    assert packed_core(16, 512, 0.7536) == (16 * 512 // 386, 386)
