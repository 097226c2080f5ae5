"""The timing harness's CPU arithmetic mode (``simulator.calibrate.timing.flushing_subnormals``)."""
from __future__ import annotations

import pytest


@pytest.mark.torch
def test_timed_cpu_calls_flush_subnormals():
    """``best_of`` times CPU calls with subnormals flushed to zero (a training step repeated
    on one batch drives its gradients into them, ``simulator.calibrate.timing``), and leaves
    PyTorch's default (not flushed) behind."""
    torch = pytest.importorskip("torch")
    from simulator.calibrate.timing import best_of

    tiny = torch.tensor([1e-39], dtype=torch.float32)     # subnormal in fp32
    seen = []
    best_of(torch, lambda: seen.append(float((tiny * 1.0)[0])), "cpu", 1e-4)
    assert seen and all(v == 0.0 for v in seen)
    assert float((tiny * 1.0)[0]) > 0.0
