"""Euler and DPM-Solver++(2M) over any noise-level schedule, with or without CFG, batched and seeded per sample."""
from __future__ import annotations

from typing import Callable

import torch

from ..sharpeners.formulas import repeat_to_common_length

# eps(x, σ, context[, y=vector]) → predicted noise; the backend's predict_noise.
NoisePredictor = Callable[..., torch.Tensor]
# Contexts → the same contexts at one token count, to go into one call, or None where the model cannot take them
# together; the backend's join_contexts.
ContextJoiner = Callable[[list[torch.Tensor]], "list[torch.Tensor] | None"]


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal latent per seed, so a sample does not depend on its batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in seeds])


def vector_input(y: torch.Tensor | None) -> dict:
    """The y keyword for models with a vector input (SDXL's pooled text and sizes); nothing for the others."""
    return {} if y is None else {"y": y}


def cfg_noise(predict: NoisePredictor, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
              reference: torch.Tensor, scale: float | torch.Tensor, y: torch.Tensor | None = None, y_ref: torch.Tensor | None = None,
              join: ContextJoiner = repeat_to_common_length) -> torch.Tensor:
    """CFG's eps_ref + w·(eps_c − eps_ref): cond and reference in one batched call when join gives their contexts one
    length, else two calls, as ComfyUI's sampler runs conditionings it cannot concatenate (SD3's joint attention)."""
    joined = join([context, reference])
    if joined is None:
        eps_cond = predict(x, sigma, context, **vector_input(y))
        eps_ref = predict(x, sigma, reference, **vector_input(y_ref))
    else:
        vectors = None if y is None else torch.cat([y, y_ref])
        eps = predict(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat(joined), **vector_input(vectors))
        eps_cond, eps_ref = eps.chunk(2)
    return eps_ref + scale * (eps_cond - eps_ref)


def in_interval(level: torch.Tensor, interval: tuple[float, float]) -> torch.Tensor:
    """Which noise levels (the model's timestep as a fraction of its largest: 1 pure noise, 0 clean) CFG applies at."""
    return (level >= interval[0]) & (level <= interval[1])


def guided_at(noise_level: Callable[[torch.Tensor], torch.Tensor],
              interval: tuple[float, float] | None) -> Callable[[torch.Tensor], bool] | None:
    """guided's guide_at for a run with a guidance interval (every σ of a run's step is one), None without one."""
    if interval is None:
        return None
    return lambda sigma: bool(in_interval(noise_level(sigma[:1]), interval))


def guided(predict: NoisePredictor, context: torch.Tensor, null: torch.Tensor | None, scale: float | torch.Tensor,
           y: torch.Tensor | None = None, null_y: torch.Tensor | None = None,
           join: ContextJoiner = repeat_to_common_length, guide_at: Callable[[torch.Tensor], bool] | None = None):
    """x, σ → noise prediction: one call without guidance, or CFG against null (one reference for all, or one each);
    scale is one number, or a tensor that multiplies each sample's guidance (per_sample); guide_at(σ), if given, says
    at which noise levels of a run CFG applies (a guidance interval), one unguided call at the others."""
    if null is None or (not torch.is_tensor(scale) and scale == 1.0):
        return lambda x, sigma: predict(x, sigma, context, **vector_input(y))

    def cfg(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if guide_at is not None and not guide_at(sigma):
            return predict(x, sigma, context, **vector_input(y))
        reference = null.expand(len(x), *null.shape[1:])
        reference_y = None if null_y is None else null_y.expand(len(x), *null_y.shape[1:])
        return cfg_noise(predict, x, sigma, context, reference, scale, y, reference_y, join)

    return cfg


def sampling_run(eps_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                 method: str = "dpmpp_2m") -> torch.Tensor:
    """x_0 from x at sigmas[0], one eps_of(x, σ) per step; differentiable, so callers choose no_grad or not."""
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


@torch.no_grad()
def sample(predict: NoisePredictor, context: torch.Tensor, sigmas: torch.Tensor, seeds: list[int],
           latent_shape: tuple[int, ...], null: torch.Tensor | None = None, cfg_scale: float = 1.0,
           method: str = "dpmpp_2m", y: torch.Tensor | None = None, null_y: torch.Tensor | None = None,
           join: ContextJoiner = repeat_to_common_length,
           guide_at: Callable[[torch.Tensor], bool] | None = None) -> torch.Tensor:
    """Latents x_0 for each prompt embedding in context, starting from σ_max·noise(seed); y, null_y: vector inputs;
    guide_at: where CFG applies (guided's)."""
    x = initial_noise(seeds, latent_shape).to(context.device) * sigmas[0]
    return sampling_run(guided(predict, context, null, cfg_scale, y, null_y, join, guide_at), x, sigmas, method)
