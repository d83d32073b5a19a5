"""Normalized Attention Guidance (NAG; Chen et al. 2025, arXiv 2505.21179): a negative prompt inside one model call.
Each cross-attention output is computed twice, with the prompt's tokens (z⁺) and the negative prompt's (z⁻), pushed
away from z⁻, its norm capped and blended back, so no second, unconditional pass is needed. Plain torch."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NAGSettings:
    """NAG's three numbers: scale φ (1 = off, higher pushes harder from the negative), the norm cap τ and the blend α."""

    scale: float = 3.0
    tau: float = 2.5
    alpha: float = 0.25

    def __post_init__(self) -> None:
        for name, value, low in (("scale", self.scale, 1.0), ("tau", self.tau, 1.0), ("alpha", self.alpha, 0.0)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise ValueError(f"NAG {name} must be a number of at least {low:g}, got {value!r}")
        if self.alpha > 1:
            raise ValueError(f"NAG alpha must be at most 1, got {self.alpha!r}")

    @property
    def off(self) -> bool:
        """Scale 1 or alpha 0: the negative prompt changes nothing."""
        return self.scale == 1 or self.alpha == 0


def normalized_attention_guidance(z_pos: torch.Tensor, z_neg: torch.Tensor, settings: NAGSettings) -> torch.Tensor:
    """z̃ = z⁺ + (φ − 1)(z⁺ − z⁻), scaled down where its L1 norm over channels passes τ·‖z⁺‖₁, then α·z̃ + (1 − α)·z⁺;
    z⁺ and z⁻ are attention outputs [batch, tokens, channels] before the output projection."""
    if settings.off:
        return z_pos
    extrapolated = z_pos + (settings.scale - 1) * (z_pos - z_neg)
    norm_pos = z_pos.norm(p=1, dim=-1, keepdim=True)
    ratio = extrapolated.norm(p=1, dim=-1, keepdim=True) / norm_pos.clamp_min(1e-12)
    capped = extrapolated * (ratio.clamp(max=settings.tau) / ratio.clamp_min(1e-12))
    return settings.alpha * capped + (1 - settings.alpha) * z_pos
