"""Attention with dropout on a CPU: PyTorch's SDPA math path, priced kernel by kernel
(``simulator.training.fusion.math_attention``)."""
from collections import Counter

import pytest

from simulator import simulate
from simulator.graph.op import DType, OpKind, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import MATH_PATH, fuse_attention, math_attention
from workloads.transformer import Style, TransformerConfig

LAYERS, HIDDEN, HEADS, SEQ = 2, 64, 4, 32


def _config(dropout=True, style=Style.ENCODER):
    return TransformerConfig("t", LAYERS, HIDDEN, HEADS, vocab=101, seq_len=SEQ,
                             dropout=dropout, style=style)


def _fused(config, batch=2):
    return fuse_attention(config.forward_graph(batch, DType.FP32))


@pytest.mark.parametrize("style", [Style.ENCODER, Style.DECODER])
def test_math_path_replaces_each_attention_with_dropout(style):
    fused = _fused(_config(style=style))
    attention = [op for op in fused.ops() if op.kind is OpKind.ATTENTION]
    assert len(attention) == LAYERS and all(dict(op.extra)["dropout"] == 1 for op in attention)
    math = math_attention(fused)
    assert not [op for op in math.ops() if op.kind is OpKind.ATTENTION]
    for op in attention:
        parts = [n[len(op.name) + 1:] for n in math.names() if n.startswith(op.name + ".")]
        # the causal mask is added as its own kernel (PyTorch builds it as a tril mask)
        assert parts == [p for p in MATH_PATH if p != "mask" or style is Style.DECODER]
        products = [math.op(f"{op.name}.{p}") for p in ("scores", "context")]
        assert sum(p.flops for p in products) == op.flops   # QK^T and PV, nothing dropped
        assert all(p.layer == op.layer for p in products)
        dropout = math.op(f"{op.name}.dropout")
        assert dropout.fn == "dropout" and dropout.flops == 2 * 2 * HEADS * SEQ * SEQ
        softmax = math.op(f"{op.name}.softmax")
        assert (softmax.kind, softmax.fn) == (OpKind.SOFTMAX, "softmax")
    assert math.params() == fused.params()


def test_math_path_keeps_attention_without_dropout():
    fused = _fused(_config(dropout=False))
    assert [op for op in fused.ops() if op.kind is OpKind.ATTENTION]
    assert math_attention(fused).names() == fused.names()


def test_math_path_backward_is_autograds():
    """Four bmm, the dropout's mul, where, the softmax's backward and the scales' muls; the
    -inf row check (isneginf, all) takes no gradient."""
    math = math_attention(_fused(_config(style=Style.ENCODER)))
    step = training_graph(math, Plan(micro_batch=2, precision="fp32"))
    backward = Counter()
    for op in step.ops():
        if op.phase is Phase.BACKWARD and ".scale_" in op.forward_of or \
                op.phase is Phase.BACKWARD and op.forward_of.rsplit(".", 1)[-1] in MATH_PATH:
            backward[op.forward_of.rsplit(".", 1)[-1]] += 1
    assert backward == Counter({"scores": 2 * LAYERS, "context": 2 * LAYERS,
                                "softmax": LAYERS, "where": LAYERS, "dropout": LAYERS,
                                "scale_q": LAYERS, "scale_k": LAYERS})


def test_cpus_run_the_math_path_and_gpus_the_fused_kernel():
    config = _config()
    cpu = simulate(config, "xeon-8480", micro_batch=2, precision="fp32")
    assert cpu.step_time_s == simulate(config, "xeon-8480", micro_batch=2, precision="fp32",
                                       math_attention_dropout=True).step_time_s
    # the s x s probabilities and the dropout mask are kept for the backward
    fused_cpu = simulate(_config(dropout=False), "xeon-8480", micro_batch=2, precision="fp32")
    assert cpu.peak_memory_bytes > fused_cpu.peak_memory_bytes
    gpu = simulate(config, "a100", micro_batch=2)
    assert gpu.step_time_s < simulate(config, "a100", micro_batch=2,
                                      math_attention_dropout=True).step_time_s


@pytest.mark.torch
def test_importer_records_dropout_and_mask():
    torch = pytest.importorskip("torch")
    from workloads.torch_import import import_module

    def extras(dropout, mask):
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=dropout, batch_first=True)
        inputs = (torch.randn(2, 8, 32),)
        if mask:
            module = _masked(torch, layer,
                             torch.nn.Transformer.generate_square_subsequent_mask(8))
        else:
            module = layer
        graph = import_module(module, inputs, name="t").forward_graph(2, DType.FP32)
        return [dict(op.extra) for op in graph.ops() if op.kind is OpKind.ATTENTION]

    assert extras(0.1, False) == [{"causal": 0, "dropout": 1}]
    assert extras(0.0, False) == [{"causal": 0}]
    assert extras(0.1, True) == [{"causal": 0, "dropout": 1, "mask": 1}]


def _masked(torch, layer, mask):
    """``layer`` called with an additive attention mask (a graph input of the trace)."""
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer
            self.register_buffer("mask", mask)

        def forward(self, x):
            return self.layer(x, src_mask=self.mask)

    return Masked()


@pytest.mark.torch
def test_torch_runs_the_math_path_on_a_cpu_under_dropout():
    """The kernels ``MATH_PATH`` names, as torch.profiler records them on this build."""
    torch = pytest.importorskip("torch")
    from torch.profiler import profile

    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    with profile() as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1).sum().backward()
    calls = Counter({e.key: e.count for e in prof.key_averages()})
    assert calls["aten::bmm"] == 6 and calls["aten::bernoulli_"] == 1
    assert calls["aten::_softmax"] == 1 and calls["aten::_softmax_backward_data"] == 1
    assert calls["aten::isneginf"] == calls["aten::all"] == calls["aten::where"] == 1
    assert not [k for k in calls if "flash" in k]
    with profile() as prof:   # without dropout: the flash kernel, no s x s product
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    calls = Counter({e.key: e.count for e in prof.key_averages()})
    assert [k for k in calls if "flash_attention" in k] and not calls["aten::bmm"]
