"""The PyTorch importer: counts against ``torch.utils.flop_counter``, the zoo twin, the CLI.

FLOPs are compared on one training step (forward + ``loss.backward()``) with two settings that
make PyTorch on a CPU run the kernels ``flop_counter`` can see: the MATH backend of
``scaled_dot_product_attention`` (the fused CPU kernel is not in flop_counter's registry, so it
would count 0) and oneDNN off (its LSTM kernel is not counted either). Under MATH, attention's
backward is 2x its forward, which is hwsim's model FLOPs of the backward; a fused (flash)
backward also recomputes QK^T, which hwsim counts apart as recomputation (checked below).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")]
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import (FlopCounterMode, sdpa_backward_flop_count,  # noqa: E402
                                      sdpa_flop_count)

from simulator.api import simulate  # noqa: E402
from simulator.cli import main  # noqa: E402
from simulator.graph.op import TENSOR_KINDS, DType, OpKind, Phase  # noqa: E402
from simulator.plan.step import Plan  # noqa: E402
from simulator.training.backward import training_graph  # noqa: E402
from tests.conftest import load_module  # noqa: E402
from workloads.torch_import import import_module, load_factory  # noqa: E402
from workloads.transformer import TransformerConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"


def factory(name: str):
    return load_module(MODELS / f"{name}.py", f"hwsim_test_{name}").factory()


def torch_step_flops(model, inputs) -> int:
    model.train()
    with sdpa_kernel(SDPBackend.MATH), torch.backends.mkldnn.flags(enabled=False), \
            FlopCounterMode(display=False) as counter:
        out = model(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().mean().backward()
    return counter.get_total_flops()


def hwsim_step(model, inputs):
    work = import_module(model, inputs)
    forward = work.forward_graph(work.default_batch, DType.FP32)
    step = training_graph(forward, Plan(micro_batch=work.default_batch, precision="fp32"))
    return work, forward, step


def step_flops(step) -> int:
    return step.model_flops([Phase.FORWARD, Phase.BACKWARD])


def grouped_wgrad_excess(forward) -> int:
    """flop_counter's weight gradient of a convolution ignores ``groups``
    (torch/utils/flop_counter.py, conv_backward_flop: conv_flop_count(t(x), t(grad_out), ...)
    multiplies Cin by Cout), so it counts ``groups`` x the forward; the arithmetic is 1x."""
    return sum((op.shape["groups"] - 1) * op.flops for op in forward.ops()
               if op.kind is OpKind.CONV and op.shape.get("groups", 1) > 1)


# Forward + backward FLOPs per model (hwsim = flop_counter, or the difference op by op):
#   mlp_model      32,227,328 = 32,227,328
#   cnn_model      72,563,712 + 1,769,472 (grouped conv wgrad, groups 4) = 74,333,184
#   resnet_model   296,500,224 = 296,500,224
#   gpt_model      226,492,416 = 226,492,416
#   textcnn_model  10,871,808 = 10,871,808
#   lstm_model     24,484,608 = 24,484,608
@pytest.mark.parametrize("name", ["mlp_model", "cnn_model", "resnet_model", "gpt_model",
                                  "textcnn_model", "lstm_model"])
def test_step_flops_equal_flop_counter(name):
    model, inputs = factory(name)
    work, forward, step = hwsim_step(model, inputs)
    assert step_flops(step) + grouped_wgrad_excess(forward) == torch_step_flops(model, inputs)
    assert work.params == forward.params() == sum(p.numel() for p in model.parameters())
    assert not [op.fn for op in forward.ops() if op.fn.startswith("unknown:")]


def test_grouped_conv_difference_is_only_the_weight_gradient():
    model, inputs = factory("cnn_model")
    _, forward, step = hwsim_step(model, inputs)
    grouped = [op for op in forward.ops() if op.shape.get("groups", 1) == 4]
    assert len(grouped) == 1 and grouped_wgrad_excess(forward) == 3 * grouped[0].flops
    wgrad = step.op(f"wgrad:{grouped[0].name}")
    assert wgrad.flops == grouped[0].flops  # MACs of the weight gradient = the forward's


class Lambda(nn.Module):
    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for key, module in modules.items():
            setattr(self, key, module)

    def forward(self, *args):
        return self.fn(self, *args)


CONVS = [(nn.Conv1d, (2, 4, 17)), (nn.Conv2d, (2, 4, 9, 11)), (nn.Conv3d, (2, 4, 5, 6, 7)),
         (nn.ConvTranspose1d, (2, 4, 9)), (nn.ConvTranspose2d, (2, 4, 9, 11)),
         (nn.ConvTranspose3d, (2, 4, 4, 5, 6))]


@pytest.mark.parametrize("cls,shape", CONVS, ids=[c.__name__ for c, _ in CONVS])
@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, dilation=2), dict(stride=3, padding=2),
                                dict(groups=2)], ids=["dilated", "strided", "grouped"])
def test_convolutions(cls, shape, kw):
    model = Lambda(lambda s, x: s.b(F.relu(s.a(x))), a=cls(4, 6, 3, **kw), b=cls(6, 4, 2))
    _, forward, step = hwsim_step(model, (torch.randn(*shape),))
    expected = torch_step_flops(model, (torch.randn(*shape),))
    assert step_flops(step) + grouped_wgrad_excess(forward) == expected


def attention_by_hand(s, x):
    b, t, c = x.shape
    q, k, v = s.qkv(x).chunk(3, -1)
    att = torch.einsum("btc,bsc->bts", q, k) / c ** 0.5
    att = att.masked_fill(torch.ones(t, t).tril() == 0, float("-inf")).softmax(-1)
    return s.out(F.dropout(att, 0.1) @ v + torch.bmm(att, v))


@pytest.mark.parametrize("model,inputs", [
    (nn.MultiheadAttention(32, 4, batch_first=True), (torch.randn(2, 10, 32),) * 3),
    (nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2),
     (torch.randn(2, 10, 32),)),
    (Lambda(attention_by_hand, qkv=nn.Linear(16, 48), out=nn.Linear(16, 16)),
     (torch.randn(3, 8, 16),)),
    (Lambda(lambda s, x: s.r(x)[0], r=nn.GRU(8, 12, 2, bidirectional=True)),
     (torch.randn(7, 3, 8),)),
    (Lambda(lambda s, x: s.r(x)[0], r=nn.RNN(8, 12, 2, batch_first=True)),
     (torch.randn(3, 7, 8),)),
    (Lambda(lambda s, x: s.fc(s.r(x)[1][0][-1]), r=nn.LSTM(8, 12, 2, proj_size=5),
            fc=nn.Linear(5, 3)), (torch.randn(7, 3, 8),)),
    (Lambda(lambda s, x: s.c(s.i(s.g(x)) + F.rms_norm(x, (11,))), g=nn.GroupNorm(2, 4),
            i=nn.InstanceNorm2d(4, affine=True), c=nn.Conv2d(4, 4, 1)),
     (torch.randn(2, 4, 9, 11),)),
    (Lambda(lambda s, x: s.b(F.relu(s.a(x))), a=nn.Linear(8, 8).requires_grad_(False),
            b=nn.Linear(8, 2)), (torch.randn(4, 8),)),
], ids=["multihead", "encoder", "attention-by-hand", "gru", "rnn", "lstm-proj", "norms",
        "frozen-layer"])
def test_modules_and_functions(model, inputs):
    _, _, step = hwsim_step(model, inputs)
    assert step_flops(step) == torch_step_flops(model, inputs)


def test_fused_attention_counts_flop_counters_flash_formula():
    """A GPU's flash kernels: flop_counter counts sdpa_flop_count forward and
    sdpa_backward_flop_count backward (2.5x, QK^T recomputed); hwsim: 1x + 2x model FLOPs
    + 0.5x recomputation."""
    x = torch.randn(2, 4, 8, 16)
    _, forward, step = hwsim_step(Lambda(lambda s, x: F.scaled_dot_product_attention(
        s.q(x), s.q(x), x, is_causal=True), q=nn.Linear(16, 16)), (x,))
    shape = (2, 4, 8, 16)
    attention = [op for op in forward.ops() if op.kind is OpKind.ATTENTION]
    assert len(attention) == 1 and attention[0].causal == 1
    assert attention[0].flops == sdpa_flop_count(shape, shape, shape)
    backward = sum(op.flops for op in step.ops() if op.forward_of == attention[0].name
                   and op.phase in (Phase.BACKWARD, Phase.RECOMPUTE))
    assert backward == sdpa_backward_flop_count(shape, shape, shape, shape)


def test_zoo_twin_has_the_zoo_counts():
    """A GPT-2-style stack written in torch = TransformerConfig with the same dims."""
    model, inputs = factory("gpt_model")  # 2 layers, 64 wide, 4 heads, vocab 512, 64 tokens
    work = import_module(model, inputs)
    zoo = TransformerConfig("twin", layers=2, hidden=64, heads=4, vocab=512, seq_len=64)
    assert work.forward_graph(4).model_flops() == zoo.forward_graph(4).model_flops()
    assert work.num_params() == zoo.num_params()
    assert work.default_batch == 4 and work.tokens_per_sample == 64


def test_views_cost_nothing_and_copies_cost_their_traffic():
    def f(s, x):  # a view, a transpose made contiguous (a copy), a cat (a copy)
        y = s.lin(x).view(4, 2, 8).transpose(1, 2).contiguous()
        return torch.cat([y, y], dim=1).flatten(1)
    work = import_module(Lambda(f, lin=nn.Linear(16, 16)), (torch.randn(4, 16),))
    forward = work.forward_graph(4, DType.BF16)
    kinds = [op.kind for op in forward.ops()]
    assert kinds == [OpKind.MATMUL, OpKind.COPY, OpKind.COPY, OpKind.LOSS]
    transpose, cat = [op for op in forward.ops() if op.kind is OpKind.COPY]
    assert (transpose.bytes_read, transpose.bytes_written) == (64 * 2, 64 * 2)
    assert (cat.bytes_read, cat.bytes_written) == (128 * 2, 128 * 2)


def test_unknown_operators_are_listed_not_dropped():
    model = Lambda(lambda s, x: s.lin(x).lgamma(), lin=nn.Linear(8, 3))
    result = simulate((model, (torch.randn(4, 8),)), "a100", micro_batch=4)
    assert result.unknown_ops == ["aten.lgamma.default"]
    assert any("aten.lgamma.default" in note for note in result.notes)
    unknown = [op for op in import_module(model, (torch.randn(4, 8),)).forward_graph(4).ops()
               if op.fn.startswith("unknown:")]
    assert len(unknown) == 1 and unknown[0].bytes_read == unknown[0].bytes_written == 4 * 3 * 4


def test_simulate_takes_module_and_inputs_and_precision_changes_bytes_only():
    model, inputs = factory("mlp_model")
    fp32 = simulate((model, inputs), "a100", micro_batch=32, precision="fp32")
    bf16 = simulate((model, inputs), "a100", micro_batch=32, precision="bf16")
    assert fp32.flops_per_step == bf16.flops_per_step == 32_227_328
    assert bf16.memory_breakdown["activations"] < fp32.memory_breakdown["activations"]
    assert fp32.step_time_s > 0 and fp32.fits


def test_model_returning_its_loss():
    model = Lambda(lambda s, x, y: F.cross_entropy(s.lin(x), y), lin=nn.Linear(8, 5))
    inputs = (torch.randn(4, 8), torch.randint(0, 5, (4,)))
    _, forward, step = hwsim_step(model, inputs)
    assert [op.kind for op in forward.ops()][-1] is OpKind.LOSS and len(forward) == 2
    assert step_flops(step) == torch_step_flops(model, inputs)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_predicts_a_factory():
    done = run_cli("predict", "tests/models/mlp_model.py:factory", "--device", "a100", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "mlp_model" and summary["micro_batch"] == 32
    assert summary["flops_per_step"] == 32_227_328 and summary["step_time_s"] > 0


BAD = {
    "not_python.py": ("def factory(:\n", "not a valid Python file"),
    "binary.py": ("\x00\x01\x02", "not a valid Python file"),
    "raises.py": ("def factory():\n    raise RuntimeError('no weights')\n",
                  "factory() raised RuntimeError: no weights"),
    "wrong.py": ("def factory():\n    return 3\n", "must return (torch.nn.Module"),
    "data_dependent.py": ("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                          "        return x * 2 if x.sum() > 0 else x\n"
                          "def factory():\n    return M(), (torch.randn(2, 3),)\n",
                          "torch.export could not trace the model"),
    "no_inputs.py": ("import torch\ndef factory():\n    return torch.nn.Linear(2, 2), 'x'\n",
                     "must return (torch.nn.Module"),
}


@pytest.mark.parametrize("spec,expected", [
    *[(f"{name}:factory", text) for name, (_, text) in BAD.items()],
    ("missing.py:factory", "no such Python file"),
    ("wrong.py:other", "no function 'other'"),
])
def test_cli_bad_factories_are_one_line(tmp_path, capsys, spec, expected):
    for name, (source, _) in BAD.items():
        (tmp_path / name).write_text(source)
    assert main(["predict", str(tmp_path / spec), "--device", "a100"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_missing_torch_is_one_line_with_the_fix():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from simulator.cli import main\n"
            "sys.exit(main(['predict', 'tests/models/mlp_model.py:factory', '--device', 'a100']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and 'pip install "hwsim[torch]"' in done.stderr


def test_load_factory_gives_the_batch_and_tokens():
    work = load_factory(str(MODELS / "lstm_model.py") + ":factory")
    assert work.name == "lstm_model" and work.default_batch == 4 and work.seq_len == 12
    assert all(op.kind not in TENSOR_KINDS or op.flops > 0 for op in work.forward_graph(4).ops())
