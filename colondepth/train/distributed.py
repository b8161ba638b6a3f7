"""The distributed context of a training run: one process, or one of ``WORLD_SIZE`` processes under ``torchrun``.

:meth:`DistContext.setup` reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
initialises the process group (gloo on CPU, nccl on CUDA) unless one exists; :meth:`DistContext.close`
destroys it only when ``setup`` created it.  Every collective helper is a no-op for a single process, so the
training code calls them unconditionally::

    dist, device = DistContext.setup("cpu")
    try:
        if dist.all_reduce_max(0.0 if finite else 1.0) > 0: ...   # any process saw a NaN
        logs = dist.all_reduce_mean({"loss": 0.3})                  # mean over processes
        metrics = dist.broadcast_from_main(metrics)                 # rank 0's values everywhere
    finally:
        dist.close()

Only the main process (rank 0) writes files (:attr:`DistContext.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch


@dataclass
class DistContext:
    """Process index and count; ``initialised_here`` when :meth:`setup` created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and reports (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def setup(cls, device_request: Optional[str] = None) -> tuple["DistContext", torch.device]:
        """The context from the ``torchrun`` environment and the device this process trains on.

        Under ``torchrun`` with CUDA each process takes ``cuda:LOCAL_RANK``; without ``WORLD_SIZE > 1`` nothing
        is initialised and the device is :func:`colondepth.device.default_device` of ``device_request``.
        """
        from colondepth.device import default_device

        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = default_device(device_request)
        if world <= 1:
            return cls(), device
        import torch.distributed as dist

        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        here = False
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            here = True
        return cls(rank=rank, world_size=world, local_rank=local, initialised_here=here), device

    def close(self, clean: bool = False) -> None:
        """Destroy the process group if :meth:`setup` created it (a no-op otherwise).

        ``clean``: every process got here normally, so they first meet at a barrier (no collective still in
        flight) and unreferenced DDP reducers are collected while the interpreter is fully alive: otherwise
        Gloo's worker threads can still hold work at interpreter teardown, and a process aborts at exit
        ("terminate called without an active exception") after a run that succeeded.  Without ``clean`` (an
        error path) there is no barrier: a peer that failed would never arrive."""
        if self.initialised_here:
            import gc

            import torch.distributed as dist

            if dist.is_initialized():
                if clean:
                    dist.barrier()
                gc.collect()
                dist.destroy_process_group()
            self.initialised_here = False

    # -- collectives (no-ops for one process) -------------------------------------------------------------
    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_max(self, x: float) -> float:
        """The maximum of ``x`` over processes."""
        if not self.distributed:
            return x
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def all_reduce_mean(self, values: dict) -> dict:
        """Each value of ``values`` (name -> float) averaged over processes."""
        if not self.distributed or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def average_gradients(self, params: list) -> None:
        """Average ``p.grad`` over processes for parameters DDP does not synchronise (missing grads count as 0)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(self.world_size)

    def broadcast_from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every process, e.g. validation metrics, so that promotion decisions
        agree (BatchNorm running statistics differ slightly between processes)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap_model(self, net: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(net, model)``: the bare network (whose weights are saved) and what training forwards call — ``net``
        itself, or under ``torchrun`` its DistributedDataParallel wrapper (with SyncBatchNorm on CUDA)."""
        if not self.distributed:
            return net, net
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # batch statistics over all processes (SyncBatchNorm needs CUDA)
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # find_unused_parameters: a stage kind may use only some heads, or freeze the depth net for a while
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
        return net, model
