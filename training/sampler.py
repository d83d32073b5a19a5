"""Euler and DPM-Solver++(2M) over any noise-level schedule, with or without CFG, batched and seeded per sample."""
from __future__ import annotations

from typing import Callable

import torch

# eps(x, σ, context) → predicted noise; the backend's predict_noise.
NoisePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal latent per seed, so a sample does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in seeds])


def guided(predict: NoisePredictor, context: torch.Tensor, null: torch.Tensor | None, scale: float):
    """x, σ → noise prediction: one call without guidance, or cond and uncond batched in one call for CFG."""
    if null is None or scale == 1.0:
        return lambda x, sigma: predict(x, sigma, context)

    def cfg(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        uncond_context = null.expand(len(x), *null.shape[1:])
        eps = predict(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([context, uncond_context]))
        eps_cond, eps_uncond = eps.chunk(2)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return cfg


@torch.no_grad()
def sample(predict: NoisePredictor, context: torch.Tensor, sigmas: torch.Tensor, seeds: list[int],
           latent_shape: tuple[int, ...], null: torch.Tensor | None = None, cfg_scale: float = 1.0,
           method: str = "dpmpp_2m") -> torch.Tensor:
    """Latents x_0 for each prompt embedding in context, starting from σ_max·noise(seed)."""
    eps_of = guided(predict, context, null, cfg_scale)
    x = initial_noise(seeds, latent_shape).to(context.device) * sigmas[0]
    previous_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        eps = eps_of(x, sigma.expand(len(x)).to(x.device))
        denoised = x - sigma * eps
        if method == "euler" or sigma_next == 0:
            x = x + (sigma_next - sigma) * eps if method == "euler" else denoised
        elif method == "dpmpp_2m":
            h = (sigma / sigma_next).log()
            if previous_denoised is None:
                estimate = denoised
            else:
                r = (sigmas[i - 1] / sigma).log() / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous_denoised
            x = (sigma_next / sigma) * x - torch.expm1(-h) * estimate
        else:
            raise ValueError(f"unknown sampling method {method!r}: use 'euler' or 'dpmpp_2m'")
        previous_denoised = denoised
    return x
