"""Timing with torch: the measuring half of ``hwsim calibrate`` and ``hwsim validate``.

``best_of`` times a call the same way for both (the best of five batches: interference only
ever adds time); ``training_step`` is the step both time (forward, the importer's loss,
backward, AdamW step, ``zero_grad``); ``torch_case`` builds the call of each calibration
``Case`` and ``measure`` times a list of them in passes. Passes are interleaved (every item
once, then every item again), so that a slow spell of a shared machine, tens of seconds, falls
on one pass of many items rather than on every timing of one; each item keeps the lower median
of its passes (``median_over_passes``: with two passes their best, with three the middle one)
and, for ``hwsim calibrate``, every pass's timing (``Measurement.samples``: the fit repeated on
halves of them says how stable it is, ``simulator.calibrate.stability``). torch is imported
by the callers' functions, never at module import.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from simulator.calibrate.fit import Case, Measurement
from simulator.calibrate.functions import micro_model

#: Interleaved passes over the cases (and the models ``hwsim validate`` times): three, so that
#: the lower median is the middle pass and one pass spoiled by a slow spell of a shared machine
#: moves no figure; their first and last passes, two equal halves, measure the fit's
#: stability (``simulator.calibrate.stability``).
PASSES = 3


def measure(todo: Iterable[Case], device: str = "cpu",
            progress: Callable[[int, int, str], None] | None = None,
            min_time_s: float = 0.05, passes: int = PASSES) -> list[Measurement]:
    """Time each case with torch on ``device`` ("cpu" or "cuda"): the best of five batches in
    each of ``passes`` interleaved passes over all cases; each case's figure is the lower
    median over its passes, and every pass's timing is kept in ``Measurement.samples``."""
    import torch

    pairs = [(case, torch_case(torch, case, device)) for case in todo]
    runs = over_passes(pairs, lambda pair: best_of(torch, pair[1], device, min_time_s),
                       passes, progress, lambda pair: pair[0].label)
    return [Measurement(case, lower_median(times), tuple(times))
            for (case, _), times in zip(pairs, runs)]


def over_passes(items: list, time_one: Callable, passes: int,
                progress: Callable[[int, int, str], None] | None = None,
                label: Callable[[object], str] = str) -> list[list]:
    """``time_one(item)`` for every item in each of ``passes`` interleaved passes over
    ``items``: each item's results (seconds, or tuples that start with them), pass by pass."""
    runs: list[list] = [[] for _ in items]
    total = passes * len(items)
    for p in range(passes):
        for i, item in enumerate(items):
            if progress:
                progress(p * len(items) + i, total, label(item))
            runs[i].append(time_one(item))
    if progress:
        progress(total, total, "done")
    return runs


def lower_median(results: list):
    """The lower median of results (seconds, or tuples that start with them), by seconds: with
    two results the faster (interference only adds time), with three or more the middle one
    (robust to one pass spoiled by a slow spell, and to one lucky fast one)."""
    ordered = sorted(results, key=lambda got: got[0] if isinstance(got, tuple) else got)
    return ordered[(len(ordered) - 1) // 2]


def median_over_passes(items: list, time_one: Callable, passes: int,
                       progress: Callable[[int, int, str], None] | None = None,
                       label: Callable[[object], str] = str) -> list:
    """Each item's ``lower_median`` over ``passes`` interleaved passes (``over_passes``)."""
    return [lower_median(runs) for runs in over_passes(items, time_one, passes, progress, label)]


def torch_case(torch, case: Case, device: str):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case.dtype]
    new = lambda *shape: torch.randn(*shape, dtype=dtype, device=device)  # noqa: E731
    d = case.dims
    if case.kind == "matmul":
        a, b = new(d[0], d[2]), new(d[2], d[1])
        return lambda: torch.mm(a, b)
    if case.kind == "conv":
        n, cin, h, w, cout, kernel, stride, pad = d
        x, weight = new(n, cin, h, w), new(cout, cin, kernel, kernel)
        return lambda: torch.nn.functional.conv2d(x, weight, stride=stride, padding=pad)
    if case.kind == "train":
        return _chain_step(torch, *d, device=device, dtype=dtype)
    if case.kind == "function":
        module, inputs = micro_model(torch, case.fn, d)
        return training_step(torch, module.to(device=device),
                           tuple(x.to(device=device) for x in inputs))
    if case.kind == "add":
        a, b = new(d[0]), new(d[0])
        return lambda: a + b
    if case.kind == "sum":
        x = new(d[0])
        return lambda: x.mean()
    x = new(d[0], d[1])
    if case.kind == "layernorm":
        weight, bias = new(d[1]), new(d[1])
        return lambda: torch.nn.functional.layer_norm(x, (d[1],), weight, bias)
    return lambda: torch.softmax(x, dim=-1)


def _chain_step(torch, layers: int, width: int, batch: int, relu: int, device: str,
                      dtype):
    blocks = []
    for layer in range(layers):
        blocks.append(torch.nn.Linear(width, width))
        if relu and layer < layers - 1:
            blocks.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*blocks)
    model = model.to(device=device, dtype=dtype)
    return training_step(torch, model, (torch.randn(batch, width, device=device, dtype=dtype),))


def loss_of(torch, output):
    """The importer's loss rule, applied to a real output."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 0:
        return output
    if output.dim() in (2, 3) and output.is_floating_point():
        logits = output.reshape(-1, output.shape[-1])
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target)
    return output.float().mean()


def training_step(torch, module, inputs: tuple):
    """A call running one training step of ``module`` (put in training mode): forward, the
    importer's loss (``loss_of``), backward, AdamW step, ``zero_grad``."""

    optimizer = torch.optim.AdamW(module.parameters())
    module.train()

    def step():
        loss_of(torch, module(*inputs)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def best_of(torch, fn, device: str, min_time_s: float, min_reps: int = 1) -> float:
    """Seconds per call of ``fn``: the best of five batches of calls, each batch about a fifth
    of ``min_time_s`` (and at least ``min_reps`` calls). On a CPU with subnormal numbers
    flushed to zero (``flushing_subnormals``)."""
    if not device.startswith("cuda"):
        with flushing_subnormals(torch):
            return _best_of(torch, fn, device, min_time_s, min_reps)
    return _best_of(torch, fn, device, min_time_s, min_reps)


@contextlib.contextmanager
def flushing_subnormals(torch):
    """CPU arithmetic with subnormal numbers flushed to zero (``torch.set_flush_denormal``:
    x86's FTZ and DAZ), off again after (PyTorch's default; torch has no getter for it).

    A timed training step repeats one batch with one target class (``training_step``,
    ``loss_of``), so the model learns it within tens of steps and its gradients underflow:
    on the development Xeon (torch 2.13.0, one thread, 2026-12-06) the VGG-style held-out
    model's largest convolution gradient fell from 1e-3 (step 0) to 7.7e-20 (step 12), 6e-35
    (step 20), with 11 % of the convolutions' gradients subnormal, and its step from 27-32 ms
    to 74-181 ms (x86 cores take a microcode assist per subnormal operand); flushed, every
    step took 25.5-29.0 ms. hwsim prices arithmetic at its normal-number rate (a subnormal
    regime is not modelled), and a user's training on fresh batches does not sit in it, so
    the timings are taken as Intel's PyTorch CPU tuning advice runs: flushed. Numbers in the
    normal range compute exactly as before."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _best_of(torch, fn, device: str, min_time_s: float, min_reps: int) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn(), fn()
    sync()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_time_s / 5 and calls < 10_000:
        fn()
        calls += 1
    sync()
    per = max((time.perf_counter() - start) / max(calls, 1), 1e-9)
    reps = max(min_reps, min(1000, int(min_time_s / 5 / per)))
    samples = []
    for _ in range(5):
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        samples.append((time.perf_counter() - t) / reps)
    return float(min(samples))  # best of five batches: interference only ever adds time


__all__ = ["PASSES", "best_of", "flushing_subnormals", "lower_median", "measure",
           "median_over_passes", "over_passes", "torch_case", "training_step"]
