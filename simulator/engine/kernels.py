"""numba kernels over the lowered arrays (STYLE.md rule 8).

Pure ``@njit(cache=True)`` functions over flat NumPy arrays: no Python objects, no I/O, no
validation (callers pass well-formed arrays; see each docstring's preconditions). Each kernel has
a plain-Python twin in ``simulator.engine.reference`` that the tests hold it to, bit for bit.

Graphs come as CSR predecessors in topological order: the predecessors of op ``i`` are
``indices[indptr[i]:indptr[i + 1]]``, every one of them < ``i``.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def roofline(flops, nbytes, peak_flops_per_s, bandwidth_bytes_per_s, overhead_s):
    """Roofline time of each op: max(compute, memory) + overhead (Williams et al. 2009).

    All five are float64 arrays of one length; ``peak_flops_per_s`` and
    ``bandwidth_bytes_per_s`` are the achievable rates for each op (efficiency applied), > 0.
    Returns ``(compute_s, memory_s, time_s)``.
    """
    n = flops.shape[0]
    compute_s = np.empty(n, dtype=np.float64)
    memory_s = np.empty(n, dtype=np.float64)
    time_s = np.empty(n, dtype=np.float64)
    for i in range(n):
        compute_s[i] = flops[i] / peak_flops_per_s[i]
        memory_s[i] = nbytes[i] / bandwidth_bytes_per_s[i]
        time_s[i] = max(compute_s[i], memory_s[i]) + overhead_s[i]
    return compute_s, memory_s, time_s


@njit(cache=True)
def schedule(indptr, indices, duration, stream, n_streams):
    """List scheduling in the given topological order on ``n_streams`` in-order streams.

    Op ``i`` starts when all its predecessors have ended and its stream (``stream[i]`` in
    ``[0, n_streams)``) is free, and holds the stream for ``duration[i]`` (>= 0) seconds. With
    one stream this is the serial schedule: the makespan is the sum of the durations.
    Returns float64 ``(start, end)``.
    """
    return schedule_issued(indptr, indices, duration, stream, n_streams,
                           np.zeros(duration.shape[0], dtype=np.float64))


@njit(cache=True)
def schedule_issued(indptr, indices, duration, stream, n_streams, release):
    """``schedule`` with an issue time per op: op ``i`` starts no earlier than
    ``release[i]`` (float64, >= 0), the instant the host has issued it
    (``simulator.cost.host``), besides its predecessors' ends and its stream being free.
    With ``release`` all zeros this is ``schedule``. Returns float64 ``(start, end)``.
    """
    n = duration.shape[0]
    start = np.empty(n, dtype=np.float64)
    end = np.empty(n, dtype=np.float64)
    free = np.zeros(n_streams, dtype=np.float64)
    for i in range(n):
        ready = max(free[stream[i]], release[i])
        for e in range(indptr[i], indptr[i + 1]):
            ready = max(ready, end[indices[e]])
        start[i] = ready
        end[i] = ready + duration[i]
        free[stream[i]] = end[i]
    return start, end


@njit(cache=True)
def schedule_synced(indptr, indices, duration, stream, n_streams, release, sync):
    """``schedule_issued`` with host synchronisations (``simulator.cost.host.syncs``): before
    issuing op ``i`` with ``sync[i]`` (bool) True the host waits until every op before it in
    issue order (all streams) has ended, so the host's time from then on is shifted by the
    wait: op ``i``'s issue time is ``release[i]`` plus the largest wait so far, the wait at
    ``i`` being (the latest end before ``i``) - ``release[i - 1]`` (when the host had issued
    op ``i - 1``). With ``sync`` all False this is ``schedule_issued``, bit for bit.
    Returns float64 ``(start, end)``.
    """
    n = duration.shape[0]
    start = np.empty(n, dtype=np.float64)
    end = np.empty(n, dtype=np.float64)
    free = np.zeros(n_streams, dtype=np.float64)
    shift = 0.0
    last = 0.0
    for i in range(n):
        if sync[i] and i > 0 and last - release[i - 1] > shift:
            shift = last - release[i - 1]
        ready = max(free[stream[i]], release[i] + shift)
        for e in range(indptr[i], indptr[i + 1]):
            ready = max(ready, end[indices[e]])
        start[i] = ready
        end[i] = ready + duration[i]
        free[stream[i]] = end[i]
        last = max(last, end[i])
    return start, end


@njit(cache=True)
def critical_path(indptr, indices, duration):
    """Longest path through the DAG, weighting each op by its ``duration`` (>= 0).

    Ties go to the earliest op (the first predecessor in CSR order, the lowest end position).
    Returns ``(length, on_path)``: the path's total duration and a bool mask of its ops.
    """
    n = duration.shape[0]
    finish = np.empty(n, dtype=np.float64)
    via = np.full(n, -1, dtype=np.int64)
    last, length = -1, 0.0
    for i in range(n):
        best = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            p = indices[e]
            if via[i] < 0 or finish[p] > best:
                best = finish[p]
                via[i] = p
        finish[i] = best + duration[i]
        if last < 0 or finish[i] > length:
            last = i
            length = finish[i]
    on_path = np.zeros(n, dtype=np.bool_)
    while last >= 0:
        on_path[last] = True
        last = via[last]
    return length, on_path


@njit(cache=True)
def liveness(indptr, indices, edge_output, start, end, out_bytes, keep_bytes, counted):
    """Peak of the bytes held by live tensors over a schedule.

    Op ``u`` allocates two tensors when it starts (``start[u]``): its output (``out_bytes[u]``)
    and what it keeps for its backward besides (``keep_bytes[u]``: a dropout mask, a norm's
    statistics). The output is freed when the last op reading it ends: the latest ``end[v]``
    over the edges u -> v with ``edge_output`` True, or ``end[u]`` if there is none; the kept
    bytes when the last reader of either ends (every edge). Ops with ``counted`` False hold
    nothing (their bytes live elsewhere, e.g. in the persistent gradient buffers).

    A tensor is live over ``[alloc, free)``: at one instant, frees happen before allocations
    (a framework frees a tensor once its last reader has finished, before the next op
    allocates), so a tensor of zero lifetime is never live. Returns ``(peak_bytes, peak_time,
    out_free, keep_free)``: the int64 peak, the earliest instant it is reached (0.0 if nothing
    is ever live) and the float64 free times.
    """
    n = start.shape[0]
    out_free = end.copy()
    keep_free = end.copy()
    for v in range(n):
        for e in range(indptr[v], indptr[v + 1]):
            u = indices[e]
            if edge_output[e] and end[v] > out_free[u]:
                out_free[u] = end[v]
            if end[v] > keep_free[u]:
                keep_free[u] = end[v]
    # events: all frees first, then all allocations; a stable sort by time keeps frees first
    times = np.empty(4 * n, dtype=np.float64)
    delta = np.zeros(4 * n, dtype=np.int64)
    for u in range(n):
        if counted[u]:
            times[u], delta[u] = out_free[u], -out_bytes[u]
            times[n + u], delta[n + u] = keep_free[u], -keep_bytes[u]
            times[2 * n + u], delta[2 * n + u] = start[u], out_bytes[u]
            times[3 * n + u], delta[3 * n + u] = start[u], keep_bytes[u]
        else:
            times[u] = times[n + u] = times[2 * n + u] = times[3 * n + u] = start[u]
    order = np.argsort(times, kind="mergesort")
    live, peak, peak_time = 0, 0, 0.0
    for j in range(4 * n):
        live += delta[order[j]]
        if live > peak:
            peak = live
            peak_time = times[order[j]]
    return peak, peak_time, out_free, keep_free
