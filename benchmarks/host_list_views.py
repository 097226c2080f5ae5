"""Host cost of the Python loops that build DeepSpeed v0.3.13's list collectives, as a fraction
of an eager op's: the figures behind ``simulator.cost.host.GATHER_VIEW_FRACTION`` and
``SCATTER_VIEW_FRACTION``.

DeepSpeed v0.3.13 (microsoft/DeepSpeed, deepspeed/runtime/zero/partition_parameters.py) builds
a list of one view per rank before each list collective, in Python:

- ``_allgather_param``, after ``torch.zeros`` and ``torch.cuda.synchronize()``:
  ``for i in range(self.world_size): partitions.append(flat_tensor.narrow(0, partition_size
  * i, partition_size)); if i == torch.distributed.get_rank(group=self.ds_process_group): ...``
- ``_reduce_scatter_gradient``: ``for i in range(self.world_size): start = i *
  partition_size; end = start + partition_size; if start < param.ds_numel and end <=
  param.ds_numel: input = param.grad.view(-1).narrow(0, start, partition_size) ...;
  input_list.append(input)``

This script times one iteration of each loop (best of 7 repeats over 1,536 ranks, one thread)
and the eager reference hwsim's per-op host cost stands for: a chain of 50 multiplies, forward
and backward, per kernel (the measurement behind ``COMPILED_HOST_FRACTION``), all in one
process, and prints the two fractions. The loops run on CPU tensors: a view touches no device
memory, so its host cost is the same call (dispatch and view bookkeeping) on a CUDA tensor.

    python benchmarks/host_list_views.py
"""
from __future__ import annotations

import os
import timeit


def main() -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    group = dist.group.WORLD
    ranks, part = 1536, 384
    flat = torch.zeros(ranks * part, dtype=torch.float16)
    grad = torch.zeros(ranks * part, dtype=torch.float16)
    numel = ranks * part

    def gather_loop():
        partitions = []
        for i in range(ranks):
            partitions.append(flat.narrow(0, part * i, part))
            if i == dist.get_rank(group=group):
                pass
        return partitions

    def scatter_loop():
        inputs = []
        for i in range(ranks):
            start = i * part
            end = start + part
            if start < numel and end <= numel:
                view = grad.view(-1).narrow(0, start, part)
            inputs.append(view)
        return inputs

    leaf = torch.ones(8, requires_grad=True)

    def chain():   # 50 forward kernels and 50 backward ones
        y = leaf
        for _ in range(50):
            y = y * 1.0001
        y.sum().backward()

    def best(fn, number, per):
        return min(timeit.repeat(fn, number=number, repeat=7)) / number / per

    kernel = best(chain, 200, 100)
    gather = best(gather_loop, 20, ranks)
    scatter = best(scatter_loop, 20, ranks)
    dist.destroy_process_group()
    print(f"torch {torch.__version__}, one thread")
    print(f"eager kernel (50-multiply chain, forward and backward): {kernel * 1e6:.2f} us")
    print(f"all-gather loop, per rank: {gather * 1e6:.2f} us = {gather / kernel:.2f} of it")
    print(f"reduce-scatter loop, per rank: {scatter * 1e6:.2f} us = {scatter / kernel:.2f} of it")


if __name__ == "__main__":
    main()
