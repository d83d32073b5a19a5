"""Memory: the peak a piece of work adds on any device, the memory free to use, and activation checkpointing."""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.checkpoint import checkpoint


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op creates until it is freed; keeps the highest count."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: dict[int, int] = {}

    def _forget(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.is_meta:
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self._seen:
                continue
            self._seen[key] = storage.nbytes()
            self.live += storage.nbytes()
            weakref.finalize(storage, self._forget, key)
        self.peak = max(self.peak, self.live)
        return out


class PeakMemory:
    """with PeakMemory(device) as meter: work()  →  meter.bytes, the most memory work() held at once beyond what
    was allocated before (CUDA's own statistics on a GPU; a count of live tensor storages elsewhere)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._mode = _LiveTensorBytes()
            self._mode.__enter__()
        return self

    def __exit__(self, *error) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._mode.__exit__(*error)
            self.bytes = self._mode.peak


def free_memory(device: torch.device) -> int | None:
    """Bytes free for training now: the GPU's free memory, or the system's available memory; None if unknown."""
    if device.type == "cuda":
        # What the driver has free, plus what torch's caching allocator holds but no tensor uses.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def checkpoint_layers(model: torch.nn.Module, class_names: set[str]) -> int:
    """Recompute every layer of these classes in the backward pass instead of keeping its activations (only while
    gradients are on: the teacher's no-grad calls run as before). Returns how many layers now do."""
    count = 0
    for layer in model.modules():
        if type(layer).__name__ not in class_names:
            continue
        count += 1
        if getattr(layer, "_dice_checkpointed", False):
            continue
        plain = layer.forward

        def recomputed(*args, _plain=plain, **kwargs):
            if not torch.is_grad_enabled():
                return _plain(*args, **kwargs)
            return checkpoint(_plain, *args, use_reentrant=False, **kwargs)

        layer.forward, layer._dice_checkpointed = recomputed, True
    return count


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"
