"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``): one ATen call, unrolled into the
ops PyTorch's native implementation runs (aten/src/ATen/native/RNN.cpp, the path
``torch.utils.flop_counter`` counts when oneDNN is off).

Per layer and direction: one input projection over the whole sequence (T x B rows, a weighted
matmul), then per step a recurrent projection of the previous hidden state (B rows, weighted),
the cell's pointwise gates, and for an LSTM with ``proj_size`` a projection of the output.
The layer's output is the stack of its steps' hidden states. FLOPs are therefore
2 x gates x H x (in + H) x T x B per layer and direction, as the closed form; the backward
follows autograd: a weight gradient per projection, a data gradient wherever the input
requires grad - not for the first step's recurrent product, whose initial state is constant.
"""
from __future__ import annotations

from simulator.graph.op import OpKind
from workloads.torch_trace import Meta
from workloads.torch_tables import dropout_op
from workloads.torch_values import Src, packet

#: Gates per cell: the rows of ``weight_ih`` are gates x hidden.
RNNS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
CELL_FLOPS_PER_GATE_ELEMENT = 5  # add the two projections, activation, gating (approximate)


def rnn(em, node, args, kwargs):
    t = packet(node.target)
    if not node.target.endswith(".input"):  # packed sequences (.data): not unrolled
        return em.unknown(node, args, kwargs)
    x, hx, params = args[0], args[1], [p for p in args[2] if isinstance(p, Src)]
    has_biases, layers, p_drop, train, bidirectional, batch_first = args[3:9]
    gates, dirs = RNNS[t], 2 if bidirectional else 1
    per = len(params) // (layers * dirs)
    states = hx if isinstance(hx, tuple) else (hx,)
    shape = x.meta.shape
    steps, batch = (shape[1], shape[0]) if batch_first and len(shape) == 3 else (
        shape[0], shape[1] if len(shape) == 3 else 1)
    base, layer_in = em.default_name(), x
    finals: list[Src] = []
    for layer in range(layers):
        hiddens: dict[int, list[Src]] = {}
        for d in range(dirs):
            chunk = params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per]
            w_ih, w_hh = chunk[0], chunk[1]
            b_ih, b_hh = (chunk[2], chunk[3]) if has_biases else (None, None)
            w_hr = chunk[-1] if per in (3, 5) else None
            init = [_state(s, layer * dirs + d, batch) for s in states]
            run = _Direction(em, f"{base}.l{layer}{'_reverse' if d else ''}", t, gates,
                             steps, batch, x.meta.itemsize)
            hiddens[d], last = run.unroll(layer_in, w_ih, w_hh, b_ih, b_hh, w_hr, init,
                                          reverse=bool(d))
            finals.extend(last)
        out = node.out[0]  # every layer's output has the final one's shape
        steps_out = [h for d in range(dirs) for h in hiddens[d]]
        name, grad = em.emit(OpKind.COPY, "stack", steps_out, [out],
                             name=f"{base}.l{layer}.output")
        layer_in = Src(name, grad, out, out.numel)
        if p_drop and train and layer < layers - 1:
            layer_in = dropout_op(em, layer_in, f"{base}.l{layer}.dropout")
    metas = [m for m in node.out[1:] if isinstance(m, Meta)]
    name, grad = em.emit(OpKind.COPY, "stack", finals, metas, name=f"{base}.state")
    return (layer_in, *(Src(name, grad, m, m.numel) for m in metas))


class _Direction:
    """One layer and direction of a recurrent layer, step by step."""

    def __init__(self, em, base: str, cell: str, gates: int, steps: int, batch: int,
                 itemsize: int) -> None:
        self.em, self.base, self.cell, self.gates = em, base, cell, gates
        self.steps, self.batch, self.itemsize = steps, batch, itemsize

    def meta(self, *shape: int) -> Meta:
        strides, acc = [], 1
        for size in reversed(shape):
            strides.insert(0, acc)
            acc *= size
        return Meta(tuple(shape), tuple(strides), True, self.itemsize)

    def linear(self, name: str, x: Src, weight: Src, bias: Src | None, rows: int) -> Src:
        out_f, in_f = weight.meta.shape
        out = self.meta(rows, out_f)
        reads = [r for r in (x, weight, bias) if r is not None]
        # "rnn_linear": a GEMM inside the fused recurrent kernel (one aten::lstm call), which
        # pays no per-call framework cost of its own, unlike an nn.Linear's "linear"
        op, grad = self.em.emit(OpKind.MATMUL, "rnn_linear" if weight.grad else "matmul", reads,
                                [out], name=name, edges=[x] if x.op else [], saves=("inputs",),
                                flops=2 * rows * in_f * out_f, m=rows, n=out_f, k=in_f)
        return Src(op, grad, out, out.numel)

    def unroll(self, x, w_ih, w_hh, b_ih, b_hh, w_hr, init, reverse):
        """Returns the hidden state of every step (in time order) and the final states."""
        em, batch, steps = self.em, self.batch, self.steps
        rows = x.meta.numel // x.meta.shape[-1]
        ih = self.linear(f"{self.base}.input_proj", x, w_ih, b_ih, rows)
        hidden = w_ih.meta.shape[0] // self.gates
        h, c = init[0], init[1] if len(init) > 1 else None
        outputs: dict[int, Src] = {}
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        for i, t in enumerate(order):
            hh = self.linear(f"{self.base}.t{t}.hidden_proj", h, w_hh, b_hh, batch)
            gates = ih.view(self.meta(batch, self.gates * hidden))
            # Only the first step is an edge from the input projection: the rest follow it
            # through the recurrence, and the projection's gradient is written once.
            reads = [gates, hh, c if c is not None else h]
            edges = [s for s in (reads if i == 0 else reads[1:]) if s.op]
            outs = [self.meta(batch, hidden)] * (2 if self.cell == "lstm" else 1)
            name, grad = em.emit(OpKind.ELEMENTWISE, f"{self.cell}_cell", reads, outs,
                                 name=f"{self.base}.t{t}.cell", edges=edges, saves=("inputs",),
                                 flops=CELL_FLOPS_PER_GATE_ELEMENT * batch * self.gates * hidden)
            h = Src(name, grad, outs[0], sum(m.numel for m in outs))
            c = h if self.cell == "lstm" else None
            if w_hr is not None:
                h = self.linear(f"{self.base}.t{t}.output_proj", h, w_hr, None, batch)
            outputs[t] = h
        return [outputs[t] for t in range(steps)], [h] + ([c] if c is not None else [])


def _state(src: Src, index: int, batch: int) -> Src:
    """The initial state of one layer and direction: a slice of h0 (or c0)."""
    size = src.meta.shape[-1]
    meta = Meta((batch, size), (size, 1), src.meta.floating, src.meta.itemsize)
    return src.view(meta)

