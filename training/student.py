"""The student: what a run trains, seen as one model call per step. A sharpener rewrites the text (c + r(c, c_ref)),
a guidance adapter changes the frozen model's layers while it runs, or both; the CFG teacher always sees the plain model."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..sharpeners import Sharpener
from ..sharpeners.adapter import GuidanceAdapter, strength_for_guidance
from ..sharpeners.nag import NAGSettings
from .backend import DiffusionBackend
from .sampler import vector_input


class Student(nn.Module):
    """The trained parts; forward(backend, batch) is the student's noise prediction, one call."""

    def __init__(self, sharpener: Sharpener | None = None, adapter: GuidanceAdapter | None = None,
                 reference_scale: float = 5.0, nag: NAGSettings | None = None, knob_exponent: float = 1.0) -> None:
        super().__init__()
        if sharpener is None and adapter is None:
            raise ValueError("a student trains a sharpener, a guidance adapter or both")
        self.sharpener, self.adapter = sharpener, adapter
        self.reference_scale = reference_scale  # the CFG scale at the adapter's strength 1
        self.knob_exponent = knob_exponent
        self.nag = nag  # negative prompts reach the call through NAG on its cross-attention (samples that have one)
        if adapter is not None:
            adapter.strength = 0.0  # off but inside adapter_on(): every teacher call sees the plain model

    def context(self, c: torch.Tensor, c_ref: torch.Tensor, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The cross-attention context of the student's call: sharpened (c + α·r with α the knob's strength, as the
        adapter's, so cfg 1 is the plain prompt), or the prompt's own."""
        if self.sharpener is None:
            return c
        residual = self.sharpener(c, c_ref)
        if torch.is_tensor(strength):
            strength = strength.to(residual).view(-1, *[1] * (residual.ndim - 1))
        return c + strength * residual

    def forward(self, backend: DiffusionBackend, batch: dict) -> torch.Tensor:
        strength = self.strength_of(batch)
        with self.adapter_on(strength), self.negative_attention(backend, batch):
            return backend.predict_noise(batch["x"], batch["sigma"], self.context(batch["c"], batch["c_ref"], strength),
                                         **vector_input(batch.get("y")))

    def strength_of(self, batch: dict) -> float | torch.Tensor:
        """The adapter's strength for each sample's CFG scale (the knob), or 1 where the run has one scale."""
        return strength_for_guidance(batch["w"], self.reference_scale, self.knob_exponent) if "w" in batch else 1.0

    def negative_attention(self, backend: DiffusionBackend, batch: dict):
        """NAG with each sample's reference as its negative prompt, for the samples that have one."""
        if self.nag is None or "negative" not in batch:
            return contextlib.nullcontext()
        return backend.negative_attention(batch["c_ref"], self.nag, batch["negative"])

    @contextlib.contextmanager
    def adapter_on(self, strength: float | torch.Tensor = 1.0):
        """The adapter's hooks add their deltas only inside this block; outside it the model is the plain one."""
        if self.adapter is None:
            yield
            return
        self.adapter.strength = strength
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
