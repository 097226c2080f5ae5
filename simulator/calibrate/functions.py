"""Calibrating named functions: whole training steps of one-function micro-models.

A function's cost on a real framework is not its kind's: on a CPU, PyTorch's GELU runs an erf
per element, dropout a serial random-number generator, and every oneDNN convolution call pays
a primitive set-up of tens of microseconds, whatever its size. So ``hwsim calibrate`` times,
for each function in ``FUNCTIONS``, whole training steps (forward, loss, backward, AdamW step) of
a micro-model that is one parameter scale followed by that function, at two or three sizes. The
same micro-model is imported with ``workloads.torch_import`` (so the function's ops carry
exactly the ``Op.fn`` an imported model's ops carry) and priced with the globally fitted spec;
the function's own efficiency and per-call overhead are then fitted to its cases alone
(``DeviceSpec.function_efficiency`` / ``function_overhead_s``).

The shapes are generic powers of two, chosen to span the sizes of small models' tensors; none
is taken from the validation models, and no op of the held-out models of
``benchmarks/bench_validation_cpu.py`` has one of their shapes
(``tests/test_calibrate_heldout.py``): a function's two figures, fitted on its sizes, predict
those models' other sizes.
"""
from __future__ import annotations

import functools

#: fn -> the sizes its micro-model is timed at, smallest first (``--quick`` keeps two; the
#: meaning of each tuple is ``_body``'s). Functions are fitted in this order, each with the
#: ones before it known: the loss and the small ops that other micro-models contain come first.
FUNCTIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "cross_entropy": ((64, 128), (512, 1024)),
    # the micro-models' own wrapper (x times the parameter scale, its gradient a sum over x):
    # fitted first, on the elementwise functions' sizes, so theirs are not left carrying it
    "mul": ((1 << 12,), (1 << 17,)),
    "add": ((1 << 12,), (1 << 17,)),
    "linear": ((32, 128, 128), (256, 64, 256), (128, 512, 512), (512, 256, 1024)),
    "conv2d": ((4, 16, 32, 32, 16, 3, 1), (8, 32, 16, 16, 64, 3, 1), (8, 64, 16, 16, 64, 1, 1),
               (4, 32, 32, 32, 32, 3, 2)),
    "conv1d": ((8, 32, 64, 32, 3), (16, 64, 128, 64, 5)),
    "batchnorm": ((8, 16, 32, 32), (16, 64, 16, 16)),
    "layernorm": ((256, 64), (2048, 256)),
    # sizes of different element counts: at (8, 16, 32, 32) and (8, 64, 16, 16), both 2^17,
    # a rate and a per-call cost could not be told apart (avgpool's efficiency stayed at its
    # start, 0.1, and its per-call cost took all: 383 us a call, the CNN +47 %; issue 20)
    "maxpool": ((8, 16, 32, 32), (8, 48, 32, 32)),
    "avgpool": ((8, 16, 32, 32), (8, 48, 32, 32)),
    "relu": ((1 << 12,), (1 << 17,)),
    "gelu": ((1 << 12,), (1 << 17,)),
    "tanh": ((1 << 12,), (1 << 16,)),
    "sigmoid": ((1 << 12,), (1 << 17,)),
    "hardtanh": ((1 << 12,), (1 << 17,)),
    "dropout": ((1 << 12,), (1 << 16,)),
    "softmax": ((64, 128), (512, 512)),
    "sdpa": ((2, 4, 32, 16), (4, 8, 128, 32)),
    "embedding": ((1024, 32, 8, 32), (8192, 128, 16, 64)),
    # (batch, steps, width, hidden, layers, bidirectional): nn.LSTM's configurations
    "lstm_cell": ((4, 8, 32, 32, 1, 0), (4, 16, 32, 64, 2, 1), (8, 16, 64, 128, 1, 0)),
    "gru_cell": ((4, 8, 32, 32, 1, 0), (4, 16, 32, 64, 2, 1), (8, 16, 64, 128, 1, 0)),
    "adamw": ((1 << 14,), (1 << 17,), (1 << 20,)),  # 1M: past the cache, ~4x the ns/param
}
#: Functions fitted on another function's micro-model: the GEMMs inside a fused recurrent
#: kernel (one aten::lstm call, a oneDNN primitive on CPUs) are fitted on the LSTM's steps, first,
#: then the cells with them known (the GRU's cells with the same GEMM figures).
FITTED_ON = {"rnn_linear": "lstm_cell"}
#: Functions fitted on stage 1's chains of linears as well as their own micro-models: a
#: micro-model step calls its function once, so there its per-call cost is collinear with the
#: micro-model's own fixed costs, while the chains call the linear 1 to 16 times
#: (tests/test_calibrate.py; fitted on the micro-models alone, linear took 25 us a call and
#: priced the chains +50 %).
FITTED_ON_CHAINS = frozenset({"linear"})
#: The order functions are fitted in (``FUNCTIONS``'s, each borrowing function before its host).
FIT_ORDER = tuple(fn for host in FUNCTIONS
                  for fn in (*[f for f, h in FITTED_ON.items() if h == host], host))
#: Functions whose per-call overhead is not fitted: an optimizer op updates a layer's tensors
#: together, whose per-tensor cost is the global ``optimizer_overhead_s``.
EFFICIENCY_ONLY = frozenset({"adamw"})


def micro_model(torch, fn: str, dims: tuple[int, ...]):
    """``(module, example_inputs)``: a parameter scale, then ``fn`` at ``dims``."""
    nn, F = torch.nn, torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    body, x = _body(torch, nn, F, fn, dims, gen)

    class Micro(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.body = body

        def forward(self, inputs):
            if fn == "embedding":  # integer ids take no scale; the table is the parameter
                return self.body(inputs)
            return self.body(inputs * self.scale)

    return Micro(), (x,)


def _lambda(nn, f, **modules):
    """A module computing ``f(self, x)`` that owns ``modules``; ``f`` reaches them through
    ``self`` (torch.export lifts a tensor a closure captures as a constant, not a parameter)."""
    class Lambda(nn.Module):
        def __init__(self):
            super().__init__()
            for name, module in modules.items():
                setattr(self, name, module)

        def forward(self, x):
            return f(self, x)

    return Lambda()


def _body(torch, nn, F, fn, d, gen):
    randn = functools.partial(torch.randn, generator=gen)
    if fn == "linear":
        return nn.Linear(d[1], d[2]), randn(d[0], d[1])
    if fn == "conv2d":
        n, cin, h, w, cout, k, stride = d
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), randn(n, cin, h, w)
    if fn == "conv1d":
        n, cin, length, cout, k = d
        return nn.Conv1d(cin, cout, k), randn(n, cin, length)
    if fn == "batchnorm":
        return nn.BatchNorm2d(d[1]), randn(*d)
    if fn == "layernorm":
        return nn.LayerNorm(d[1]), randn(*d)
    if fn in ("maxpool", "avgpool"):
        return (nn.MaxPool2d(2) if fn == "maxpool" else nn.AvgPool2d(2)), randn(*d)
    if fn in ("relu", "gelu", "tanh", "sigmoid", "hardtanh"):
        return {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(),
                "hardtanh": nn.ReLU6()}[fn], randn(*d)
    if fn == "dropout":
        return nn.Dropout(0.1), randn(*d)
    if fn == "add":
        return _lambda(nn, lambda self, a: a + a), randn(*d)
    if fn == "softmax":
        return nn.Softmax(dim=-1), randn(*d)
    if fn == "mul":   # the scale alone
        return _lambda(nn, lambda self, x: x), randn(*d)
    if fn == "cross_entropy":  # logits (N, C): the importer's loss rule appends cross-entropy
        return nn.Identity(), randn(*d)
    if fn == "sdpa":
        b, h, t, e = d
        return _lambda(nn, lambda self, q: F.scaled_dot_product_attention(q, q, q, is_causal=True)), \
            randn(b, h, t, e)
    if fn == "embedding":
        vocab, dim, n, t = d
        return nn.Embedding(vocab, dim), torch.randint(0, vocab, (n, t), generator=gen)
    if fn in ("lstm_cell", "gru_cell"):
        n, t, width, hidden, layers, bidirectional = d
        rnn = (nn.LSTM if fn == "lstm_cell" else nn.GRU)(
            width, hidden, num_layers=layers, batch_first=True, bidirectional=bool(bidirectional))
        return _lambda(nn, lambda self, x: self.rnn(x)[0], rnn=rnn), randn(n, t, width)
    if fn == "adamw":  # one large parameter: its update dominates the step
        holder = nn.Module()
        holder.weight = nn.Parameter(torch.zeros(d[0]))
        return _lambda(nn, lambda self, x: x * self.holder.weight, holder=holder), randn(d[0])
    raise ValueError(f"no micro-model for function {fn!r}")
