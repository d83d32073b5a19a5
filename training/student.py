"""The student: what a run trains, seen as one model call per step. A sharpener rewrites the text (c + r(c, c_ref)),
a guidance adapter changes the frozen model's layers while it runs, or both; the CFG teacher always sees the plain model."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..sharpeners import Sharpener
from ..sharpeners.adapter import GuidanceAdapter
from .backend import DiffusionBackend
from .sampler import vector_input


class Student(nn.Module):
    """The trained parts; forward(backend, batch) is the student's noise prediction, one call."""

    def __init__(self, sharpener: Sharpener | None = None, adapter: GuidanceAdapter | None = None) -> None:
        super().__init__()
        if sharpener is None and adapter is None:
            raise ValueError("a student trains a sharpener, a guidance adapter or both")
        self.sharpener, self.adapter = sharpener, adapter
        if adapter is not None:
            adapter.strength = 0.0  # off but inside adapter_on(): every teacher call sees the plain model

    def context(self, c: torch.Tensor, c_ref: torch.Tensor) -> torch.Tensor:
        """The cross-attention context of the student's call: sharpened, or the prompt's own."""
        return c if self.sharpener is None else c + self.sharpener(c, c_ref)

    def forward(self, backend: DiffusionBackend, batch: dict) -> torch.Tensor:
        with self.adapter_on():
            return backend.predict_noise(batch["x"], batch["sigma"], self.context(batch["c"], batch["c_ref"]),
                                         **vector_input(batch.get("y")))

    @contextlib.contextmanager
    def adapter_on(self):
        """The adapter's hooks add their deltas only inside this block; outside it the model is the plain one."""
        if self.adapter is None:
            yield
            return
        self.adapter.strength = 1.0
        try:
            yield
        finally:
            self.adapter.strength = 0.0

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        parts = []
        if self.sharpener is not None:
            parts.append(f"a {self.sharpener.parameter_count():,}-parameter sharpener")
        if self.adapter is not None:
            c = self.adapter.config
            parts.append(f"a {self.adapter.parameter_count():,}-parameter guidance adapter (rank {c.rank} on "
                         f"{len(self.adapter.paths)} {c.layers} layers)")
        return " and ".join(parts)


def unwrapped(model: nn.Module) -> Student:
    """The Student inside a DDP wrapper, or the Student itself."""
    return getattr(model, "module", model)
