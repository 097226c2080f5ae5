"""Timing with torch: the measuring half of ``hwsim calibrate`` and ``hwsim validate``.

``best_of`` times a call the same way for both (the best of five batches: interference only
ever adds time); ``training_step`` is the step both time (forward, the importer's loss,
backward, AdamW step, ``zero_grad``); ``torch_case`` builds the call of each calibration
``Case`` and ``measure`` times a list of them in passes. torch is imported by the callers'
functions, never at module import.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from simulator.calibrate.fit import Case, Measurement
from simulator.calibrate.functions import micro_model


def measure(todo: Iterable[Case], device: str = "cpu",
            progress: Callable[[int, int, str], None] | None = None,
            min_time_s: float = 0.05, passes: int = 2) -> list[Measurement]:
    """Time each case with torch on ``device`` ("cpu" or "cuda"): the best of five batches in
    each of ``passes`` passes over all cases (``best_over_passes``)."""
    import torch

    pairs = [(case, torch_case(torch, case, device)) for case in todo]
    best = best_over_passes(pairs, lambda pair: best_of(torch, pair[1], device, min_time_s),
                            passes, progress, lambda pair: pair[0].label)
    return [Measurement(case, seconds) for (case, _), seconds in zip(pairs, best)]


def best_over_passes(items: list, time_one: Callable, passes: int,
                     progress: Callable[[int, int, str], None] | None = None,
                     label: Callable[[object], str] = str) -> list:
    """``time_one(item)`` for every item in each of ``passes`` passes over ``items``, keeping
    each item's fastest result (seconds, or a tuple that starts with them): a slow spell of a
    shared machine (tens of seconds) then spoils at most one pass, not the item."""
    seconds = lambda got: got[0] if isinstance(got, tuple) else got  # noqa: E731
    best: list = [None] * len(items)
    total = passes * len(items)
    for p in range(passes):
        for i, item in enumerate(items):
            if progress:
                progress(p * len(items) + i, total, label(item))
            got = time_one(item)
            if best[i] is None or seconds(got) < seconds(best[i]):
                best[i] = got
    if progress:
        progress(total, total, "done")
    return best


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
    of ``min_time_s`` (and at least ``min_reps`` calls)."""
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


__all__ = ["best_of", "best_over_passes", "measure", "torch_case", "training_step"]
