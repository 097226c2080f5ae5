"""Plain-Python twins of ``simulator.engine.kernels``: slow, obvious, and the tests' oracle.

Each function takes the same arrays and returns the same results as its kernel, computed with
Python floats in the same order of operations, so the two agree bit for bit.
"""
from __future__ import annotations

import numpy as np


def roofline(flops, nbytes, peak_flops_per_s, bandwidth_bytes_per_s, overhead_s):
    compute = [float(f) / float(p) for f, p in zip(flops, peak_flops_per_s)]
    memory = [float(b) / float(w) for b, w in zip(nbytes, bandwidth_bytes_per_s)]
    time = [max(c, m) + float(o) for c, m, o in zip(compute, memory, overhead_s)]
    return np.array(compute, dtype=float), np.array(memory, dtype=float), \
        np.array(time, dtype=float)


def _preds(indptr, indices, i):
    return [int(p) for p in indices[indptr[i]:indptr[i + 1]]]


def schedule(indptr, indices, duration, stream, n_streams):
    free = [0.0] * n_streams
    start, end = [], []
    for i, d in enumerate(duration):
        s = stream[i]
        begin = max([free[s]] + [end[p] for p in _preds(indptr, indices, i)])
        start.append(begin)
        end.append(begin + float(d))
        free[s] = end[-1]
    return np.array(start, dtype=float), np.array(end, dtype=float)


def schedule_issued(indptr, indices, duration, stream, n_streams, release):
    free = [0.0] * n_streams
    start, end = [], []
    for i, d in enumerate(duration):
        s = stream[i]
        begin = max([free[s], float(release[i])] + [end[p] for p in _preds(indptr, indices, i)])
        start.append(begin)
        end.append(begin + float(d))
        free[s] = end[-1]
    return np.array(start, dtype=float), np.array(end, dtype=float)


def schedule_synced(indptr, indices, duration, stream, n_streams, release, sync):
    """The host waits at each sync for every op issued before it (all streams) to end."""
    free = [0.0] * n_streams
    start, end = [], []
    shift = 0.0
    for i, d in enumerate(duration):
        if sync[i] and i > 0:
            shift = max(shift, max(end) - float(release[i - 1]))
        s = stream[i]
        begin = max([free[s], float(release[i]) + shift] +
                    [end[p] for p in _preds(indptr, indices, i)])
        start.append(begin)
        end.append(begin + float(d))
        free[s] = end[-1]
    return np.array(start, dtype=float), np.array(end, dtype=float)


def critical_path(indptr, indices, duration):
    finish: list[float] = []
    via: list[int] = []
    for i, d in enumerate(duration):
        preds = _preds(indptr, indices, i)
        # max() keeps the first of equal maxima: ties go to the earliest predecessor.
        best = max(preds, key=finish.__getitem__, default=-1)
        finish.append((finish[best] if best >= 0 else 0.0) + float(d))
        via.append(best)
    on_path = np.zeros(len(finish), dtype=bool)
    if not finish:
        return 0.0, on_path
    last = max(range(len(finish)), key=finish.__getitem__)
    length = finish[last]
    while last >= 0:
        on_path[last] = True
        last = via[last]
    return length, on_path


def liveness(indptr, indices, edge_output, start, end, out_bytes, keep_bytes, counted):
    """The definition itself: the live bytes at every allocation instant, the largest wins."""
    n = len(start)
    out_free = [float(t) for t in end]
    keep_free = [float(t) for t in end]
    for v in range(n):
        for e in range(int(indptr[v]), int(indptr[v + 1])):
            u = int(indices[e])
            if edge_output[e]:
                out_free[u] = max(out_free[u], float(end[v]))
            keep_free[u] = max(keep_free[u], float(end[v]))
    tensors = [(float(start[u]), free, int(nbytes))
               for u in range(n) if counted[u]
               for free, nbytes in ((out_free[u], out_bytes[u]), (keep_free[u], keep_bytes[u]))]
    peak, peak_time = 0, 0.0
    for t in sorted({alloc for alloc, _, _ in tensors}):
        live = sum(nbytes for alloc, free, nbytes in tensors if alloc <= t < free)
        if live > peak:
            peak, peak_time = live, t
    return peak, peak_time, np.array(out_free, dtype=float), np.array(keep_free, dtype=float)
