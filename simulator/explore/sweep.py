"""Sweeps: one ``simulate`` per configuration of devices x device counts x plans, in parallel.

``sweep`` evaluates every configuration in worker processes (``concurrent.futures``) or on a
Dask cluster (``client.map`` / ``as_completed``) and returns one row per configuration: the
configuration's columns, ``status`` ("ok" or "invalid: <reason>" for a plan that cannot run
-- a row, not an error) and the flattened ``Result.summary()``. Rows are sorted by their
configuration index, so any executor gives the same frame. With ``out`` the rows are written
(.csv or .parquet, atomically) as they arrive and when the sweep is interrupted; an interrupt
(Ctrl-C, SIGTERM through the CLI, an error) ends the worker processes at once, and a worker
whose parent is killed outright exits within a second: none is left running.
``compare`` is the one-plan, few-devices table of ``hwsim compare``.
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from functools import partial

import pandas as pd

from hardware_specs.cluster import ClusterSpec, list_clusters, load_cluster
from hardware_specs.loader import load_device
from hardware_specs.override import override
from hardware_specs.spec import DeviceSpec
from simulator.api import own_projections, simulate
from simulator.errors import PlanError, SpecError, WorkloadError
from simulator.explore.memo import StageCache
from simulator.plan import fields as plan_fields
from simulator.plan.fields import plain
from simulator.plan.parallel import ParallelPlan, data_parallel_size
from simulator.report.io import TableFile, progress_bar
from workloads.zoo import get_workload

#: Plan fields a sweep varies (``--grid tp=1,2``): every field of ``ParallelPlan`` and ``Plan``
#: but micro_batches, which the global batch gives (``simulator.plan.fields``).
PARALLEL_FIELDS = plan_fields.PARALLEL
PLAN_FIELDS = plan_fields.PLAN
FIELDS = {**PARALLEL_FIELDS, **PLAN_FIELDS}
CONFIG_COLUMNS = ("config", "status", "model", "device", "num_devices", *FIELDS)
#: Columns of ``compare`` (those present: run totals only with tokens); ``micro_batch`` is the
#: one each device ran (with a global batch and no micro_batch: the largest that fits it).
COMPARE_COLUMNS = ("device", "num_devices", "cluster", "status", "micro_batch", "step_time_s",
                   "samples_per_s", "tokens_per_s", "mfu", "peak_memory_bytes", "memory_capacity_bytes", "fits",
                   "energy_j_per_step", "avg_power_w", "power_limit_w", "tokens_per_joule",
                   "samples_per_kwh",
                   "tflops_per_watt", "price_per_hour_usd", "cost_usd_per_step",
                   "total_time_days", "goodput", "energy_kwh", "co2_kg", "cost_usd",
                   "own_cost_usd")
_SUMMARY_DROPPED = ("model", "device", "num_devices", "precision", "micro_batch")
_FLUSH_S = 2.0  # at most one rewrite of ``out`` per this many seconds while a sweep runs

Progress = Callable[[int, int], None]
_BAR: Progress = partial(progress_bar, label="configurations")
_WORKER_CACHE: StageCache | None = None  # a worker's (``_worker_cache``)
_WORKER_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------- public

def sweep(model, devices: list[str | DeviceSpec], device_counts: Iterable[int] | None = None,
          plans: list[dict] | dict[str, list] | None = None, *, tokens: float | None = None,
          overrides: dict[str, object] | None = None, workers: int | None = None, client=None,
          out: str | os.PathLike | None = None, progress: bool | Progress = True,
          memo: bool = True, **totals) -> pd.DataFrame:
    """One row per configuration of ``devices`` x ``device_counts`` x ``plans``.

    ``plans``: a list of plan-field dicts, or a grid ``{field: [values]}`` (every combination);
    fields are ``FIELDS`` (dp, tp, pp, zero, recompute, micro_batch, precision, global_batch,
    ...). ``device_counts``: None uses dp x tp x pp of each plan (dp 1 when not given); with
    counts, dp defaults to the devices left over by tp x pp. ``overrides``: ``whatif``
    changes applied to every device. ``workers``: processes (default: the CPUs; 1 runs here);
    ``client``: a ``dask.distributed.Client`` to run on instead. ``out``: a .csv or .parquet
    file, rewritten atomically as rows arrive and on an interrupt (which is then re-raised).
    ``progress``: a bar on stderr (when it is a terminal), False for none, or a callable
    ``(done, total)`` called after each chunk of rows. ``memo``: each worker keeps the stage
    graphs it builds for its later configurations (a ``StageCache`` per worker); False builds
    them for every configuration (the same rows, slower).
    ``totals``: ``pue``, ``grid_kg_co2_per_kwh``, ``node_overhead_w`` for run totals.
    """
    writer = _Out(out) if out is not None else None   # checked before any work
    try:
        return _sweep(writer, model, devices, device_counts, plans, workers, overrides, tokens,
                      totals, client, progress, memo)
    finally:
        if writer:
            writer.file.release()


def _sweep(writer, model, devices, device_counts, plans, workers, overrides, tokens, totals,
           client, progress, memo) -> pd.DataFrame:
    work = get_workload(model)
    specs = resolve_devices(devices, overrides)
    configs = list(_configs(specs, device_counts, expand(plans), work))
    report = (_BAR if sys.stderr.isatty() else None) if progress is True else (progress or None)
    chunks = _chunks(configs, workers, client)
    rows: dict[int, dict] = {}
    try:
        for done in _execute(chunks, (work, tokens, totals, memo), workers, client):
            rows.update(done)
            if report:
                report(len(rows), len(configs))
            if writer:
                writer.maybe_write(rows)
    except BaseException:
        if writer and rows:
            writer.write(rows)
        raise
    if writer:
        writer.write(rows)
    return frame(rows)


def sweep_configs(model, configs: list[tuple[DeviceSpec, int | None, dict]], *,
                  tokens: float | None = None, workers: int | None = None, client=None,
                  progress: bool | Progress = True, memo: bool = True,
                  **totals) -> pd.DataFrame:
    """One row per configuration ``(device, num_devices or None, plan fields)`` -- each
    device with its own counts and plans (``simulator.explore.capacity``), where ``sweep``
    crosses every device with every plan. Executors, ``progress``, ``memo`` and ``totals`` as
    for ``sweep``."""
    work = get_workload(model)
    plans = expand([fields for _, _, fields in configs]) if configs else []
    todo = [(i, spec, n, fields) for i, ((spec, n, _), fields) in enumerate(zip(configs, plans))]
    report = (_BAR if sys.stderr.isatty() else None) if progress is True else (progress or None)
    rows: dict[int, dict] = {}
    for done in _execute(_chunks(todo, workers, client), (work, tokens, totals, memo), workers,
                         client) if todo else ():
        rows.update(done)
        if report:
            report(len(rows), len(todo))
    return frame(rows)


def compare(model, devices: list[str | DeviceSpec], *, num_devices: int | None = None,
            tokens: float | None = None, overrides: dict[str, object] | None = None,
            totals: dict | None = None, **plan_fields) -> pd.DataFrame:
    """One row per device, the same plan on each (``COMPARE_COLUMNS``); evaluated here.
    ``totals``: ``simulate``'s run-total keywords (``pue``, ``grid_kg_co2_per_kwh``,
    ``own_years``, ``electricity_usd_per_kwh``, ...)."""
    counts = None if num_devices is None else [num_devices]
    rows = sweep(model, devices, counts, [plan_fields], tokens=tokens, overrides=overrides,
                 workers=1, progress=False, **(totals or {}))
    return rows[[c for c in COMPARE_COLUMNS if c in rows.columns]].reset_index(drop=True)


def expand(plans: list[dict] | dict[str, list] | None) -> list[dict]:
    """A list of plan-field dicts, or every combination of a grid ``{field: [values]}``."""
    if plans is None:
        return [{}]
    if isinstance(plans, dict):
        grid = {key: list(values) if isinstance(values, (list, tuple, range)) else [values]
                for key, values in plans.items()}
        for key, values in grid.items():
            if not values:
                raise PlanError(f"empty grid: {key} has no values; give at least one")
        plans = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    elif not plans:
        raise PlanError("empty grid: no plans to evaluate; give at least one")
    for fields in plans:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise PlanError(f"unknown plan field {sorted(unknown)[0]!r}: choose from "
                            f"{', '.join(FIELDS)}")
    return [dict(fields) for fields in plans]


def parse_grid(items: list[str] | None) -> dict[str, list]:
    """``["tp=1,2,4", "recompute=none,full"]`` (``--grid``) -> ``{"tp": [1, 2, 4], ...}``."""
    grid: dict[str, list] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS:
            raise PlanError(f"--grid {item!r}: write FIELD=V1,V2,... with FIELD one of "
                            f"{', '.join(FIELDS)}")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise PlanError(f"empty grid: --grid {key}= has no values; give at least one")
        grid[key] = [_parse_value(key, v) for v in values]
    return grid


def resolve_devices(devices: list[str | DeviceSpec], overrides: dict | None) -> list[DeviceSpec]:
    """Load every device (SpecError naming an unknown one) and apply ``overrides``."""
    if isinstance(devices, (str, DeviceSpec)):
        devices = [devices]
    if not devices:
        raise PlanError("no devices given: name at least one (see 'hwsim devices')")
    specs = [d if isinstance(d, (DeviceSpec, ClusterSpec)) else _load(str(d).strip())
             for d in devices]
    return [_override(spec, overrides) for spec in specs] if overrides else specs


def _load(name: str) -> DeviceSpec | ClusterSpec:
    """A catalogue device or spec file, or a cluster preset (``hwsim`` cluster names:
    dgx-a100, dgx-h100, ...) when the name is one."""
    if name in list_clusters():
        return load_cluster(name)
    return load_device(name)


def _override(spec, changes):
    if isinstance(spec, ClusterSpec):
        return replace(spec, device=override(spec.device, changes))
    return override(spec, changes)


def with_prices(specs: list[DeviceSpec], prices: dict[str, float] | None) -> list[DeviceSpec]:
    """``specs`` with on-demand prices per device-hour by device (``--price-per-hour``:
    ``{"a100": 1.8, "h100": 2.5}``; a catalogue alias names the device it loads; ``"*"``
    prices every device not named). SpecError naming a device that is not among ``specs``."""
    if not prices:
        return specs
    named: dict[str, float] = {}
    for key, price in prices.items():
        if key == "*":
            continue
        try:
            name = load_device(key).name
        except SpecError:
            name = key
        if all(spec.name != name and getattr(spec, "device", spec).name != name
               for spec in specs):
            raise SpecError(f"--price-per-hour {key}={price:g}: {key} is not among the devices "
                            f"({', '.join(spec.name for spec in specs)}); name one of them")
        named[name] = price
    out = []
    for spec in specs:
        device = spec.device if isinstance(spec, ClusterSpec) else spec
        price = named.get(device.name, prices.get("*"))
        out.append(spec if price is None else _override(spec, {"price_per_hour_usd": price}))
    return out


def frame(rows: dict[int, dict]) -> pd.DataFrame:
    """Rows (by configuration index) -> a DataFrame sorted by index, config columns first."""
    ordered = [rows[i] for i in sorted(rows)]
    table = pd.DataFrame(ordered)
    if table.empty:
        return pd.DataFrame(columns=list(CONFIG_COLUMNS))
    first = [c for c in CONFIG_COLUMNS if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    if "fits" in table.columns:
        table["fits"] = table["fits"].astype("boolean")
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------- configurations

def _configs(specs: list[DeviceSpec], counts: Iterable[int] | None, plans: list[dict],
             work) -> Iterator[tuple]:
    """(index, device, num_devices or None, plan fields): devices vary fastest, so that one
    worker's chunk reuses the same plan's forward graphs (``simulator.explore.memo``)."""
    counts = [None] if counts is None else list(counts)
    if not counts:
        raise PlanError("empty grid: no device counts given")
    for n in counts:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise PlanError(f"device count {n!r} must be a positive integer")
    # no micro_batch: an imported model's example batch, 1 for the others; with a global
    # batch, the largest that fits (simulate's fitting_micro_batch)
    default_batch = getattr(work, "default_batch", None) or 1
    combos = itertools.product(counts, plans, specs)
    for index, (n, fields, spec) in enumerate(combos):
        fit = "micro_batch" not in fields and fields.get("global_batch") is not None
        yield index, spec, n, fields if fit else {"micro_batch": default_batch, **fields}


def _chunks(configs: list[tuple], workers: int | None, client) -> list[list[tuple]]:
    slots = _workers(workers) if client is None else max(len(client.nthreads()), 1)
    size = max(1, min(16, math.ceil(len(configs) / (4 * slots))))
    return [configs[i:i + size] for i in range(0, len(configs), size)]


def _workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PlanError(f"workers = {workers!r} must be a positive integer")
    return workers


def _execute(chunks, job: tuple, workers, client) -> Iterator[dict[int, dict]]:
    """Each chunk's rows as it completes: here, in a process pool, or on a Dask cluster.
    ``job``: (workload, tokens, totals, memo) of every chunk."""
    if client is not None:
        from distributed import as_completed as dask_completed
        futures = client.map(_run_in_worker, chunks, job=job, pure=False)
        try:
            for future in dask_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
        return
    n = _workers(workers)
    if n == 1 or len(chunks) == 1:
        work, tokens, totals, memo = job
        cache = StageCache() if memo else None
        for chunk in chunks:
            yield run_chunk(chunk, work, tokens, totals, cache)
        return
    pool = ProcessPoolExecutor(min(n, len(chunks)), initializer=_worker_start)
    try:
        futures = [pool.submit(_run_in_worker, chunk, job) for chunk in chunks]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:   # Ctrl-C, SIGTERM (the CLI raises it), an error: stop the workers
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (a chunk running in one would
    otherwise run to its end, and the interpreter's exit wait for it)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(timeout=5)


def _worker_start() -> None:
    """Workers leave Ctrl-C to the parent, which keeps the rows and stops the pool; a worker
    whose parent has gone (killed without a chance to stop it) exits within a second instead
    of running on as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # not the CLI's handler, forked with it
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="hwsim-parent-watch", daemon=True).start()


def _run_in_worker(chunk: list[tuple], job: tuple) -> dict[int, dict]:
    """``run_chunk`` in a worker process or thread, with the worker's ``StageCache``."""
    work, tokens, totals, memo = job
    return run_chunk(chunk, work, tokens, totals, _worker_cache() if memo else None)


def _worker_cache() -> StageCache:
    """This worker's cache, made on its first chunk and kept for the others (threads of one
    process share it)."""
    global _WORKER_CACHE
    with _WORKER_LOCK:
        if _WORKER_CACHE is None:
            _WORKER_CACHE = StageCache()
        return _WORKER_CACHE


def run_chunk(chunk: list[tuple], work, tokens: float | None, totals: dict,
              cache: StageCache | None = None) -> dict[int, dict]:
    """Evaluate a chunk of configurations: ``{index: row}`` (many steps: the compiled
    kernels pay for their loading)."""
    from simulator.engine.dispatch import prefer_compiled

    prefer_compiled()
    return {index: {"config": index, **evaluate(work, spec, n, fields, tokens, totals, cache)}
            for index, spec, n, fields in chunk}


def evaluate(work, device: DeviceSpec, num_devices: int | None, fields: dict,
             tokens: float | None = None, totals: dict | None = None,
             cache: StageCache | None = None) -> dict:
    """One configuration's row: its columns, ``status`` and the flattened summary.
    ``device`` may be a cluster (``ClusterSpec``): the run is on it, its device named, its
    devices the count unless ``num_devices`` says otherwise (nodes added or removed)."""
    hardware = device
    if isinstance(device, ClusterSpec):
        device = hardware.device
        if num_devices is None and not any(fields.get(k) for k in ("dp",)):
            num_devices = hardware.num_devices
    config = _config_columns(work, device, num_devices, fields)
    try:
        parallel, n = _parallel(fields, num_devices)
        config["num_devices"], config["dp"] = n, parallel.dp
        plan = {k: v for k, v in fields.items() if k in PLAN_FIELDS}
        result = simulate(work, hardware, parallel=parallel, num_devices=n, tokens=tokens,
                          cache=cache, **(totals or {}), **plan)
    except (PlanError, WorkloadError) as err:
        return {**config, "status": f"invalid: {err}"}
    config["micro_batch"] = result.micro_batch   # the one that fits, when not given
    return {**config, "status": "ok", **flatten(result.summary(), device)}


def _config_columns(work, device: DeviceSpec, n: int | None, fields: dict) -> dict:
    row = {"model": getattr(work, "name", str(work)), "device": device.name, "num_devices": n}
    row.update({key: plain(fields.get(key, field.default)) for key, field in FIELDS.items()})
    if row["projections"] is None:   # what the model runs (simulate resolves it so)
        row["projections"] = own_projections(work).value
    return row


def _parallel(fields: dict, n: int | None) -> tuple[ParallelPlan, int]:
    tp, pp, cp, dp = fields.get("tp", 1), fields.get("pp", 1), fields.get("cp", 1), \
        fields.get("dp")
    if n is None:
        n = (dp or 1) * tp * pp * cp
    elif dp is None:
        dp = data_parallel_size(n, tp, pp, cp)
    kwargs = {k: v for k, v in fields.items() if k in PARALLEL_FIELDS}
    return ParallelPlan(**{**kwargs, "dp": dp or 1}), n


def flatten(summary: dict, device: DeviceSpec) -> dict:
    """``Result.summary()`` as one flat row: memory_<part>, the parallel figures by name,
    notes joined; None as NaN; plus the device's price and the cost of a step (and of the run,
    its days)."""
    row: dict = {}
    for key, value in summary.items():
        if key in _SUMMARY_DROPPED:
            continue
        if key == "memory_breakdown":
            row.update({f"memory_{part}": float(v) for part, v in value.items()})
        elif key == "parallel":
            row.update({k: v for k, v in value.items() if k not in FIELDS})
        elif isinstance(value, list):
            row[key] = "; ".join(map(str, value))
        else:
            row[key] = math.nan if value is None else value
    price = device.price_per_hour_usd
    row["price_per_hour_usd"] = math.nan if price is None else price
    row["cost_usd_per_step"] = (summary["step_time_s"] * summary["num_devices"] * price / 3600
                                if price is not None else math.nan)
    if "total_time_s" in summary:
        row["total_time_days"] = summary["total_time_s"] / 86400
    return row


def _parse_value(key: str, text: str):
    kind = FIELDS[key].kind
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise PlanError(f"--grid {key}={text}: give true or false")
        return text.lower() in ("true", "1", "yes")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise PlanError(f"--grid {key}={text}: must be a whole number") from None
    return text


# ---------------------------------------------------------------------------------- output

class _Out:
    """The rows so far in ``out`` (``simulator.report.io.TableFile``), rewritten at most once
    per ``_FLUSH_S`` seconds while the sweep runs."""

    def __init__(self, out: str | os.PathLike):
        self.file = TableFile(out)
        self.last = time.monotonic()

    def maybe_write(self, rows: dict[int, dict]) -> None:
        if time.monotonic() - self.last >= _FLUSH_S:
            self.write(rows)

    def write(self, rows: dict[int, dict]) -> None:
        self.file.write(frame(rows))
        self.last = time.monotonic()
