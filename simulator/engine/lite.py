"""The kernels of ``simulator.engine.kernels`` without numba: NumPy and plain loops.

Loading numba and its compiled kernels costs a process about half a second; pricing one small
step with these takes milliseconds. Each function computes what its kernel computes, in the same
order of floating-point operations (a division per op, a max, an add; integer sums for bytes),
so the two agree bit for bit (``tests/test_kernels.py`` holds them to each other on random
graphs). ``simulator.engine.dispatch`` chooses between them.
"""
from __future__ import annotations

import numpy as np


def roofline(flops, nbytes, peak_flops_per_s, bandwidth_bytes_per_s, overhead_s):
    compute_s = flops / peak_flops_per_s
    memory_s = nbytes / bandwidth_bytes_per_s
    return compute_s, memory_s, np.maximum(compute_s, memory_s) + overhead_s


def schedule(indptr, indices, duration, stream, n_streams):
    return schedule_issued(indptr, indices, duration, stream, n_streams,
                           np.zeros(len(duration), dtype=np.float64))


def schedule_issued(indptr, indices, duration, stream, n_streams, release):
    ptr, ind, dur, on = indptr.tolist(), indices.tolist(), duration.tolist(), stream.tolist()
    rel = release.tolist()
    n = len(dur)
    start, end, free = [0.0] * n, [0.0] * n, [0.0] * n_streams
    for i in range(n):
        ready = free[on[i]]
        if rel[i] > ready:
            ready = rel[i]
        for e in range(ptr[i], ptr[i + 1]):
            if end[ind[e]] > ready:
                ready = end[ind[e]]
        start[i] = ready
        end[i] = ready + dur[i]
        free[on[i]] = end[i]
    return np.array(start, dtype=np.float64), np.array(end, dtype=np.float64)


def schedule_synced(indptr, indices, duration, stream, n_streams, release, sync):
    ptr, ind, dur, on = indptr.tolist(), indices.tolist(), duration.tolist(), stream.tolist()
    rel, wait = release.tolist(), np.asarray(sync, dtype=np.bool_).tolist()
    n = len(dur)
    start, end, free = [0.0] * n, [0.0] * n, [0.0] * n_streams
    shift = last = 0.0
    for i in range(n):
        if wait[i] and i > 0 and last - rel[i - 1] > shift:
            shift = last - rel[i - 1]
        ready = free[on[i]]
        ready = max(ready, rel[i] + shift)
        for e in range(ptr[i], ptr[i + 1]):
            ready = max(ready, end[ind[e]])
        start[i] = ready
        end[i] = ready + dur[i]
        free[on[i]] = end[i]
        last = max(last, end[i])
    return np.array(start, dtype=np.float64), np.array(end, dtype=np.float64)


def critical_path(indptr, indices, duration):
    ptr, ind, dur = indptr.tolist(), indices.tolist(), duration.tolist()
    n = len(dur)
    finish, via = [0.0] * n, [-1] * n
    last, length = -1, 0.0
    for i in range(n):
        best = 0.0
        for e in range(ptr[i], ptr[i + 1]):
            p = ind[e]
            if via[i] < 0 or finish[p] > best:
                best = finish[p]
                via[i] = p
        finish[i] = best + dur[i]
        if last < 0 or finish[i] > length:
            last, length = i, finish[i]
    on_path = np.zeros(n, dtype=np.bool_)
    while last >= 0:
        on_path[last] = True
        last = via[last]
    return length, on_path


def liveness(indptr, indices, edge_output, start, end, out_bytes, keep_bytes, counted):
    n = start.shape[0]
    reader = np.repeat(np.arange(n), np.diff(indptr))        # the op v of each edge u -> v
    out_free, keep_free = end.copy(), end.copy()
    edge_output = np.asarray(edge_output, dtype=np.bool_)
    np.maximum.at(out_free, indices[edge_output], end[reader[edge_output]])
    np.maximum.at(keep_free, indices, end[reader])
    counted = np.asarray(counted, dtype=np.bool_)
    times = np.concatenate([np.where(counted, out_free, start), np.where(counted, keep_free, start),
                            start, start])
    zero = np.zeros(n, dtype=np.int64)
    delta = np.concatenate([np.where(counted, -out_bytes, zero), np.where(counted, -keep_bytes, zero),
                            np.where(counted, out_bytes, zero), np.where(counted, keep_bytes, zero)])
    order = np.argsort(times, kind="mergesort")
    live = np.cumsum(delta[order].astype(np.int64))
    if not len(live) or live.max() <= 0:
        return 0, 0.0, out_free, keep_free
    j = int(np.argmax(live))                                  # the first instant at the peak
    return int(live[j]), float(times[order[j]]), out_free, keep_free


__all__ = ["critical_path", "liveness", "roofline", "schedule", "schedule_issued",
           "schedule_synced"]
