"""A whole run's goodput: the share of its wall-clock time spent on training steps, after
checkpoint writes, evaluations and the expected loss to failures (``run_time``).

What a run loses outside its steps (all off by default, so that a run's time is its steps'):

- **Checkpoint writes**, synchronous: the training state (``Plan.state_bytes_per_param`` less
  the gradients: every parameter's weights, the trainable parameters' optimizer states) written
  to storage at
  its aggregate write bandwidth, every ``checkpoint_every`` steps (GPT-NeoX / Megatron-LM
  ``save_checkpoint`` blocks the loop: GPT-NeoX 53112bf megatron/training.py ``train``).
  Storage bandwidth when none is given: Llama 3's Tectonic file system, 2 TB/s sustained for
  the 16,384-GPU job (Dubey et al. 2024, "The Llama 3 Herd of Models", sec. 3.3.1), its share
  per device, 0.122 GB/s, times the run's devices. Not modelled: asynchronous checkpointing
  (a copy to host memory while training goes on), storage contention with other jobs.
- **Evaluations**: ``eval_batches`` forward-only global batches every ``eval_every`` steps,
  each taking the step's forward share of its time (its forward ops' FLOPs over all its ops'
  FLOPs: a FLOP-proportional estimate; the evaluation's own batch size and kernels are not
  modelled).
- **Failures**: a job-stopping failure rate of ``failure_rate`` per device-hour, so that the
  job fails at rate L = failure_rate x devices; each failure loses the work since the last
  checkpoint and ``restart_s`` (detection, rescheduling, initialisation, checkpoint load).
  With failures a Poisson process and work between checkpoints W (steps, evaluations and the
  checkpoint's own write), the expected wall-clock time to get W done is
  exp(L R) (exp(L W) - 1) / L (Daly 2006, "A higher order estimate of the optimum
  checkpoint interval for restart dumps", FGCS 22(3): its T_w per segment, M = 1/L, failures
  during a restart included); it tends to W as L -> 0, and its optimum checkpoint interval
  to Young's sqrt(2 C / L) for a write of C seconds (Young 1974, CACM 17(9)). Cited rates:
  Llama 3, 419 unexpected interruptions in 54 days on 16,384 H100s (Dubey et al. 2024,
  sec. 3.3.4): 419 / (16,384 x 54 x 24) = 1.97e-5 per GPU-hour.

Goodput = the steps' time / the run's expected wall-clock time, in (0, 1]; Llama 3's
"effective training time" (useful training over elapsed time, above 90 %, sec. 3.3.4) is the
same ratio.
"""
from __future__ import annotations

import math

from simulator.errors import PlanError

#: Checkpoint storage's write bandwidth per device when a plan gives none: Llama 3's Tectonic,
#: 2 TB/s sustained throughput for its 16,384-GPU pre-training job (Dubey et al. 2024,
#: sec. 3.3.1): 2e12 / 16,384 bytes/s per GPU.
STORAGE_B_PER_S_PER_DEVICE = 2e12 / 16_384
#: The lowest goodput a plan may have: below it the run would take, in expectation, a million
#: times its steps' time (a failure rate far above its checkpoint interval's reach).
MIN_GOODPUT = 1e-6


def checkpoint_bytes(params: float, state_bytes_per_param: dict[str, int],
                     trainable: float | None = None) -> float:
    """Bytes of one checkpoint: every parameter's weights and the ``trainable`` parameters'
    (default: all) optimizer states, not the gradients. Fine-tuning's frozen parameters have
    no optimizer states (AdamW keeps none for a parameter without a gradient); their weights
    are counted, an upper bound for a LoRA run that saves its adapters alone (PEFT's
    ``save_pretrained``), whose adapter weights are not added (LoRA's trainable parameters,
    about 0.1-1 % of the model's, Hu et al. 2021 sec. 4.2)."""
    trainable = params if trainable is None else trainable
    return (params * state_bytes_per_param["weights"]
            + trainable * state_bytes_per_param["optimizer_states"])


def run_time(steps: float, step_s: float, *, checkpoint_every: int = 0,
             checkpoint_s: float = 0.0, eval_every: int = 0, eval_s: float = 0.0,
             failures_per_s: float = 0.0, restart_s: float = 0.0) -> dict[str, float]:
    """The run's expected wall-clock time and what it is made of (seconds): ``training_time_s``
    (steps x step_s), ``checkpoint_time_s`` (floor(steps / checkpoint_every) writes of
    ``checkpoint_s``), ``eval_time_s`` (floor(steps / eval_every) evaluations of ``eval_s``),
    ``failure_time_s`` (the expected loss to failures at ``failures_per_s`` for the whole
    job, each costing ``restart_s`` and the work since the last checkpoint), their sum
    ``total_time_s``, ``goodput`` = training / total, and ``busy_time_s``: the seconds outside
    the steps that the devices compute (the evaluations, and the work failures lose, less its
    checkpoint writes' share, run again), not idle (checkpoint writes, restarts). PlanError
    when the goodput would be below ``MIN_GOODPUT``."""
    training = steps * step_s
    writes = math.floor(steps / checkpoint_every) if checkpoint_every else 0
    evals = math.floor(steps / eval_every) if eval_every else 0
    work = training + writes * checkpoint_s + evals * eval_s
    # segments between checkpoints: their count, and the work of each
    segments = max(steps / checkpoint_every, 1.0) if checkpoint_every else 1.0
    lost = busy_rerun = 0.0
    if failures_per_s > 0 and work > 0:
        each = work / segments
        x = failures_per_s * (each + restart_s)
        if x > math.log(1 / MIN_GOODPUT) + 50:   # exp(x) far beyond the bound: no overflow
            expected = math.inf
        else:
            expected = (segments * math.exp(failures_per_s * restart_s)
                        * math.expm1(failures_per_s * each) / failures_per_s)
        lost = max(expected - work, 0.0)
        # the failures, L x the expected time (a Poisson process over all of it), each
        # starting a restart that lasts min(R, the next failure), (1 - exp(-L R)) / L on
        # average: the rest of the loss is work run again, busy but for its writes' share
        restarts = -expected * math.expm1(-failures_per_s * restart_s) if lost else 0.0
        rerun = max(lost - restarts, 0.0) if math.isfinite(lost) else 0.0
        busy_rerun = rerun * (training + evals * eval_s) / work
    total = work + lost
    if not total > 0 or training / total < MIN_GOODPUT:
        hours = 1 / failures_per_s / 3600 if failures_per_s else math.inf
        between = work / segments
        young = (f", Young's optimum "
                 f"{max(1, round(young_interval_s(checkpoint_s, failures_per_s) / step_s)):,}"
                 if checkpoint_s > 0 and failures_per_s > 0 and step_s > 0 else "")
        raise PlanError(
            f"failure_rate: a failure every {hours:.3g} h of the job against "
            f"{between / 3600:.3g} h of work between checkpoints: the run would not finish "
            f"(goodput below {MIN_GOODPUT:g}); checkpoint more often (--checkpoint-every "
            f"STEPS{young}) or lower --failure-rate")
    return {"training_time_s": training, "checkpoint_time_s": writes * checkpoint_s,
            "eval_time_s": evals * eval_s, "failure_time_s": lost, "total_time_s": total,
            "goodput": training / total if total else 1.0,
            "busy_time_s": evals * eval_s + busy_rerun}


def young_interval_s(checkpoint_s: float, failures_per_s: float) -> float:
    """Young's first-order optimum time between checkpoints, sqrt(2 C / L) (Young 1974)."""
    return math.sqrt(2 * checkpoint_s / failures_per_s)


__all__ = ["MIN_GOODPUT", "STORAGE_B_PER_S_PER_DEVICE", "checkpoint_bytes", "run_time",
           "young_interval_s"]
