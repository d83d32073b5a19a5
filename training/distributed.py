"""Several processes through torchrun (DDP): NCCL on GPUs, gloo on the CPU; one process is plain training."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, prefer_gpu: bool = True) -> "Distributed":
        """Join the torchrun group when there is one; pick this process's device."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        gpu = prefer_gpu and torch.cuda.is_available()
        device = torch.device(f"cuda:{local}") if gpu else torch.device("cpu")
        if gpu:
            torch.cuda.set_device(device)
        if world > 1:
            dist.init_process_group("nccl" if gpu else "gloo")
            return cls(dist.get_rank(), local, world, device)
        return cls(device=device)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None)

    def mean(self, value: float) -> float:
        """The mean of a number over all processes."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def stop(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
