"""ONNX import: real models exported with ``torch.onnx.export`` count what PyTorch counts.

Each model is built here, exported to a real ``.onnx`` file under ``tmp_path`` and imported;
its forward model FLOPs must equal ``torch.utils.flop_counter``'s forward count of the same
model on the same inputs, and its parameters ``sum(p.numel())``. Two differences are explained
where they occur: scaled_dot_product_attention is counted under the MATH backend (CPU's fused
kernel has no flop_counter formula and counts 0), and ``nn.LSTM`` (one fused ``aten.lstm`` on
CPU, also counted 0) is checked against flop_counter's count of the same weights unrolled with
``nn.LSTMCell``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytestmark = [pytest.mark.onnx, pytest.mark.torch]  # the models are exported from torch
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from simulator import simulate  # noqa: E402
from simulator.errors import PlanError, WorkloadError  # noqa: E402
from simulator.training.fusion import fuse_attention  # noqa: E402
from simulator.graph.op import OpKind  # noqa: E402
from workloads.onnx_import import load_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the models --------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.avg_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(torch.flatten(x, 1))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(Residual(16), Residual(16))
        self.down, self.fc = nn.Conv2d(16, 32, 1, stride=2), nn.Linear(32, 10)

    def forward(self, x):
        x = self.down(self.blocks(F.relu(self.bn(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def attn(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """nanoGPT's shape: learned positions, pre-norm blocks, causal attention, tied head."""

    def __init__(self, vocab=100, ctx=16, d=32, heads=4, layers=2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


class TextCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(200, 16)
        self.convs = nn.ModuleList([nn.Conv1d(16, 8, k) for k in (3, 4, 5)])
        self.fc = nn.Linear(24, 2)

    def forward(self, idx):
        x = self.emb(idx).transpose(1, 2)
        return self.fc(torch.cat([F.relu(c(x)).amax(dim=2) for c in self.convs], 1))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lstm, self.fc = nn.Embedding(200, 16), nn.LSTM(16, 32, batch_first=True), \
            nn.Linear(32, 3)

    def forward(self, idx):
        _, (h, _) = self.lstm(self.emb(idx))
        return self.fc(h[-1])


MODELS = {
    "mlp": (MLP, lambda: torch.randn(4, 32)),
    "cnn": (CNN, lambda: torch.randn(2, 3, 16, 16)),
    "resnet": (ResNet, lambda: torch.randn(2, 3, 16, 16)),
    "gpt": (GPT, lambda: torch.randint(0, 100, (2, 16))),
    "textcnn": (TextCNN, lambda: torch.randint(0, 200, (3, 20))),
    "lstm": (LSTMClassifier, lambda: torch.randint(0, 200, (3, 12))),
}


# -- helpers -------------------------------------------------------------------------------------
def export(model, x, path: Path, **kwargs) -> Path:
    """Export in training mode: an eval export folds BatchNorm into the convolutions and drops
    Dropout, which a training step still runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                          training=torch.onnx.TrainingMode.TRAINING, **kwargs)
    return path


def forward_flops(model, x) -> int:
    """flop_counter's forward count; SDPA under the MATH backend, which it can count."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def lstm_cell_flops(lstm: nn.LSTM, x) -> int:
    """flop_counter's count of the LSTM's recurrence unrolled with nn.LSTMCell (same weights)."""
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    h = c = torch.zeros(x.shape[0], lstm.hidden_size)
    with FlopCounterMode(display=False) as counter:
        for t in range(x.shape[1]):
            h, c = cell(x[:, t], (h, c))
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model exported once: name -> (model, example input, .onnx path)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    models = {}
    for name, (cls, make) in MODELS.items():
        model, x = cls().train(), make()
        models[name] = (model, x, export(model, x, out / f"{name}.onnx"))
    return models


# -- counts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_flops_and_params_match_pytorch(exported, name):
    model, x, path = exported[name]
    work = load_onnx(path)
    assert work.name == name and work.default_batch == x.shape[0]
    graph = work.forward_graph(work.default_batch)
    expected = forward_flops(model, x)
    if name == "lstm":  # aten.lstm counts 0 in flop_counter; hwsim counts the gate products
        b, t = x.shape
        recurrence = 2 * t * b * 4 * 32 * (16 + 32)  # 2 T B (4H) (I + H)
        assert recurrence == lstm_cell_flops(model.lstm, model.emb(x)) == 442_368
        expected += recurrence
    assert graph.model_flops() == expected
    assert work.params == graph.params() == sum(p.numel() for p in model.parameters())
    assert not [op.fn for op in graph.ops() if op.fn.startswith("unknown:")]


def test_gpt_attention_cores_are_causal_and_fuse(exported):
    work = load_onnx(exported["gpt"][2])
    assert work.seq_len == 16 and work.tokens_per_sample == 16
    graph = work.forward_graph(2)
    scores = [op for op in graph.ops() if op.fn == "bmm"]
    assert len(scores) == 4 and all(op.batch == 2 * 4 for op in scores)
    assert [op.causal for op in scores if op.name.endswith("scores")] == [1, 1]
    fused = [op for op in fuse_attention(graph).ops() if op.kind is OpKind.ATTENTION]
    assert len(fused) == 2 and all(op.causal for op in fused)
    assert sum(op.flops for op in fused) == 4 * 2 * 4 * 16 * 16 * 8 * 2  # 4 B H S^2 D per layer


def test_model_parts_map_to_their_kinds(exported):
    kinds = {name: {op.kind for op in load_onnx(p).forward_graph(x.shape[0]).ops()}
             for name, (_, x, p) in exported.items()}
    assert {OpKind.CONV, OpKind.NORM, OpKind.POOL} <= kinds["cnn"]
    assert {OpKind.EMBEDDING, OpKind.NORM, OpKind.SOFTMAX, OpKind.COPY} <= kinds["gpt"]
    mlp = load_onnx(exported["mlp"][2]).forward_graph(4)
    dropout = [op for op in mlp.ops() if op.fn == "dropout"]
    assert len(dropout) == 1 and dropout[0].mask_bytes == 4 * 64


def test_symbolic_batch_follows_the_micro_batch(tmp_path):
    model, x = MLP().train(), torch.randn(4, 32)
    path = export(model, x, tmp_path / "dyn.onnx", dynamic_axes={"x": {0: "batch"}})
    work = load_onnx(path)
    assert work.default_batch == 1
    per_sample = forward_flops(model, x) // 4
    assert work.forward_graph(1).model_flops() == per_sample
    assert work.forward_graph(8).model_flops() == 8 * per_sample
    fixed = load_onnx(export(model, x, tmp_path / "fixed.onnx"))
    with pytest.raises(PlanError, match="--micro-batch 4"):
        fixed.forward_graph(8)


def test_conv_transpose_counts_as_flop_counter(tmp_path):
    model = nn.Sequential(nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, groups=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 3))
    x = torch.randn(2, 8, 4, 4)
    work = load_onnx(export(model, x, tmp_path / "deconv.onnx"))
    assert work.forward_graph(2).model_flops() == forward_flops(model, x)
    assert work.params == sum(p.numel() for p in model.parameters())


def test_dynamo_exporter_gives_the_same_counts(tmp_path):
    """torch.onnx.export's default (dynamo) exporter: other node names and initializers, a
    causal mask stored as a float constant, the same FLOPs."""
    pytest.importorskip("onnxscript")
    import logging
    torch.manual_seed(0)
    model, x = GPT().train(), torch.randint(0, 100, (2, 16))
    path = tmp_path / "gpt_dynamo.onnx"
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    finally:
        logging.disable(logging.NOTSET)
    graph = load_onnx(path).forward_graph(2)
    assert graph.model_flops() == forward_flops(model, x)
    assert [op.causal for op in graph.ops() if op.name.endswith("scores")] == [1, 1]
    assert not [op.fn for op in graph.ops() if op.fn.startswith("unknown:")]
    # The exporter merges equal initializers: the five fresh LayerNorms' ones and zeros are one
    # weight and one bias, so 4 x 64 parameters fewer than PyTorch's count.
    assert graph.params() == sum(p.numel() for p in model.parameters()) - 4 * 64


# -- operators hwsim does not know, and the fused Attention operator ---------------------------
def unknown_op_model(path: Path) -> Path:
    rng = __import__("numpy").random.default_rng(0)
    weights = [numpy_helper.from_array(rng.random(shape, dtype="float32"), name)
               for name, shape in (("w1", (8, 16)), ("w2", (5, 16)))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"]),
         helper.make_node("Frobnicate", ["a"], ["b"], domain="my.ops"),
         helper.make_node("Relu", ["b"], ["c"]),
         helper.make_node("Gemm", ["c", "w2"], ["y"], transB=1)],
        "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("my.ops", 1)])
    onnx.save(model, str(path))
    return path


def test_unknown_operator_is_listed_and_costed_by_traffic(tmp_path):
    path = unknown_op_model(tmp_path / "custom.onnx")
    graph = load_onnx(path).forward_graph(4)
    op = graph.op("Frobnicate_1")
    assert op.fn == "unknown:my.ops.Frobnicate" and op.flops == 0
    assert op.bytes_read == op.bytes_written == 4 * 16 * 4  # its (4, 16) fp32 input, its output
    assert graph.model_flops() == 2 * 4 * 8 * 16 + 2 * 4 * 16 * 5  # the shape flows through it
    result = simulate(str(path), "a100", micro_batch=4)
    assert result.unknown_ops == ["my.ops.Frobnicate"]
    assert any("my.ops.Frobnicate" in note for note in result.notes)
    ops = result.ops
    assert (ops.loc[ops.name == "Frobnicate_1", "time_s"] > 0).all()


def test_onnx_attention_operator_is_one_fused_op(tmp_path):
    shape = [2, 4, 16, 8]  # B, H, S, D
    graph = helper.make_graph(
        [helper.make_node("Attention", ["q", "k", "v"], ["o"], is_causal=1),
         helper.make_node("ReduceMean", ["o"], ["y"], keepdims=0)], "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "attention.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), str(path))
    (op,) = [op for op in load_onnx(path).forward_graph(2).ops() if op.kind is OpKind.ATTENTION]
    assert op.flops == 4 * 2 * 4 * 16 * 16 * 8 and op.causal == 1


# -- bad input --------------------------------------------------------------------------------
def hwsim(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_predicts_an_onnx_file(exported):
    proc = hwsim("-m", "simulator.cli", "predict", str(exported["gpt"][2]), "--device", "a100",
                 "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["flops_per_step"] > 0 and out["tokens_per_s"] > 0 and out["unknown_ops"] == []


@pytest.mark.parametrize("content", [b"this is not an onnx model\n", b"\x08\x07\xff\xff\xff", b""])
def test_garbage_file_is_one_line_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(WorkloadError, match="broken.onnx"):
        load_onnx(path)
    proc = hwsim("-m", "simulator.cli", "predict", str(path), "--device", "a100", "--json")
    assert proc.returncode != 0 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "broken.onnx" in proc.stderr


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(WorkloadError, match="no such ONNX file"):
        load_onnx(tmp_path / "absent.onnx")


def test_missing_onnx_package_names_the_extra(tmp_path):
    path = unknown_op_model(tmp_path / "m.onnx")
    code = ("import sys; sys.modules['onnx'] = None; import simulator.cli as cli; "
            f"sys.exit(cli.main(['predict', {str(path)!r}, '--device', 'a100']))")
    proc = hwsim("-c", code)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert 'pip install "hwsim[onnx]"' in proc.stderr
