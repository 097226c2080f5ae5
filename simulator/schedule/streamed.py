"""Model states in a device's Streaming Memory, streamed in per phase (Graphcore IPUs).

A Graphcore IPU computes from its 900 MB of on-chip SRAM (In-Processor-Memory); next to it,
on the IPU-Machine's gateway, is up to 64 GB per IPU of DDR4 Streaming Memory ("a set of
attached DRAM chips which can transfer to the In-Processor-Memory via explicit copies within
the software": Graphcore, IPU Programmer's Guide, "IPU hardware overview"; Bow-2000 datasheet:
up to 256 GB of Streaming Memory per four IPUs). A model whose states do not fit on chip runs
as Poplar runs large models: the optimizer states live in Streaming Memory and are streamed
through the chip during the update (PopTorch ``TensorLocationSettings().useOnChipStorage(False)``,
Optimum Graphcore's ``optimizer_state_offchip``), and the weights and their gradient
accumulators live there too and are loaded phase by phase, one phase's on chip at a time
("phased execution": Graphcore, "Building Large Models on IPU", D. Lacey, December 2021;
PopART's ``ExecutionPhaseSettings`` with remote-buffer weights).

What hwsim models, per device and per step of ``m`` micro-batches, with ``W``, ``G`` and ``S``
the bytes of weights, gradients and optimizer states the plan would hold on chip, in two
tiers, the one moving fewer bytes first:

1. optimizer states off chip (what Optimum Graphcore's configurations of large models set):
   the update reads and writes them once per step, ``2 S`` bytes; weights and gradients stay
   on chip. Taken when the rest fits.
2. weights and gradient accumulators off chip too, loaded phase by phase: on chip stay the
   weights and gradients of the largest phase, taken as the op holding the most parameters (a
   lower bound on a real phase, which is a layer or more); each micro-batch reads the weights
   in its forward and again in its backward (``2 m W``) and reads and writes its gradient
   accumulators (``2 m G``, the first micro-batch's read included: an upper bound by ``G``);
   the update reads and writes the optimizer states (``2 S``) and writes the updated weights
   (``W``): in all ``(2 m + 1) W + 2 m G + 2 S`` bytes.

In both the optimizer states are streamed through the chip in chunks (none kept on chip), and
the bytes cross the Streaming Memory link at its bandwidth, not overlapped with compute: the
IPU runs bulk-synchronous supersteps, and remote-buffer copies are steps of their own between
compute phases (IPU Programmer's Guide, "Programming model": compute and exchange alternate).

Not modelled: Graphcore's "overlap I/O" (I/O tiles), which can hide some of the copies;
streamed activations (Poplar can offload them too); batch serialisation (one weight load per
phase for all micro-batches, activations streamed instead); replicated tensor sharding of the
streamed states over replicas; the contention of four IPUs on one gateway's DRAM.
"""
from __future__ import annotations

from dataclasses import dataclass

#: The memory breakdown's model states, in Streaming Memory when streamed.
STREAMED = ("weights", "gradients", "optimizer_states")


@dataclass(frozen=True)
class Streamed:
    """What streaming changes: the on-chip breakdown, the bytes kept off chip, the bytes
    moved per step and their time."""

    on_chip: dict[str, float]
    off_chip_bytes: float
    moved_bytes: float
    time_s: float
    phased: bool = True     # weights and gradients off chip too (tier 2), not only the states

    def note(self, device) -> str:
        level = device.streaming_memory
        what = ("weights, gradients and optimizer states" if self.phased
                else "its optimizer states")
        how = "streamed in per phase" if self.phased else "streamed through the update"
        return (f"{device.name}: model states do not fit its {device.memory_bytes / 1e9:.3g} GB "
                f"on chip; {what} ({self.off_chip_bytes / 1e9:.3g}"
                f" GB) live in its streaming memory ({level.name}, "
                f"{level.capacity_bytes / 2 ** 30:.3g} GiB) and are {how}: "
                f"{self.moved_bytes / 1e9:.3g} GB per step at "
                f"{level.bandwidth_bytes_per_s / 1e9:.3g} GB/s adds {self.time_s * 1e3:.4g} ms "
                "(simulator.schedule.streamed)")


def moved_bytes(weights: float, gradients: float, states: float, m: int,
                phased: bool = True) -> float:
    """Bytes through the Streaming Memory link per step of ``m`` micro-batches: ``2 S`` with
    only the optimizer states off chip, ``(2 m + 1) W + 2 m G + 2 S`` with the weights and
    gradients phased in too (module docstring)."""
    if not phased:
        return 2 * states
    return (2 * m + 1) * weights + 2 * m * gradients + 2 * states


def stream(device, memory: dict[str, float], largest_share: float, m: int) -> Streamed | None:
    """The step with its model states in ``device``'s streaming memory, or None where it needs
    none: the device has no streaming memory, everything already fits on chip, the states
    do not fit the streaming memory either, or what must stay on chip (activations, workspace,
    the largest phase) overflows it anyway (then the plan does not fit, as before).

    ``memory``: the on-chip breakdown the plan would need (``stage_memory``);
    ``largest_share``: the largest op's share of the device's parameters (the phase kept on
    chip); ``m``: micro-batches per step."""
    level = getattr(device, "streaming_memory", None)
    if level is None or sum(memory.values()) <= device.memory_bytes:
        return None
    weights, gradients, states = (memory.get(key, 0.0) for key in STREAMED)
    on_chip = {**memory, "optimizer_states": 0.0}
    phased = sum(on_chip.values()) > device.memory_bytes   # tier 1 does not fit: tier 2
    if phased:
        on_chip.update(weights=weights * largest_share, gradients=gradients * largest_share)
        if sum(on_chip.values()) > device.memory_bytes:
            return None      # activations alone overflow the chip: streaming cannot save it
    off = states + (weights + gradients if phased else 0.0)
    if off <= 0 or off > level.capacity_bytes:
        return None
    moved = moved_bytes(weights, gradients, states, m, phased)
    return Streamed(on_chip=on_chip, off_chip_bytes=off, moved_bytes=moved,
                    time_s=moved / level.bandwidth_bytes_per_s, phased=phased)


__all__ = ["STREAMED", "Streamed", "moved_bytes", "stream"]
