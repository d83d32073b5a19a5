"""SD1.5's discrete noise schedule (scaled-linear betas, 1000 steps) seen as noise levels σ, as ComfyUI sees it."""
from __future__ import annotations

import torch


class DiscreteSchedule:
    """x_σ = x_0 + σ·ε with σ_t = sqrt((1 − ᾱ_t)/ᾱ_t); the UNet sees x_σ/sqrt(σ² + 1) and the timestep t."""

    def __init__(self, steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> None:
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().float()
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_σ = x_0 + σ·ε for a batch of σ."""
        return x0 + sigma.view(-1, *[1] * (x0.ndim - 1)) * noise

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) timestep of each σ, interpolating in log σ."""
        log_sigma = sigma.log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        index = torch.searchsorted(self.log_sigmas.to(sigma.device), log_sigma.contiguous()).clamp(1, len(self.sigmas) - 1)
        low, high = self.log_sigmas.to(sigma.device)[index - 1], self.log_sigmas.to(sigma.device)[index]
        return (index - 1).float() + (log_sigma - low) / (high - low)

    def sample_sigmas(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training noise levels: a uniform timestep from the model's own 1000-step schedule."""
        return self.sigmas[torch.randint(0, len(self.sigmas), (count,), generator=generator)]

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """steps noise levels from σ_max down, evenly spaced in timestep (ComfyUI's 'normal'), then 0."""
        timesteps = torch.linspace(len(self.sigmas) - 1, 0, steps)
        low, frac = timesteps.floor().long(), timesteps.frac()
        high = (low + 1).clamp(max=len(self.sigmas) - 1)
        log_sigma = (1 - frac) * self.log_sigmas[low] + frac * self.log_sigmas[high]
        return torch.cat([log_sigma.exp(), torch.zeros(1)])


class FlowSchedule:
    """Rectified flow as SD3 and Wan train: x_σ = (1 − σ)·x_0 + σ·ε for σ in (0, 1], the model predicting the velocity
    ε − x_0 at timestep 1000·t, with σ = shift·t / (1 + (shift − 1)·t) as ComfyUI's ModelSamplingDiscreteFlow has it."""

    sigma_max = 1.0

    def __init__(self, shift: float = 1.0, steps: int = 1000) -> None:
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, steps + 1, dtype=torch.float64) / steps).float()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.shift * t / (1 + (self.shift - 1) * t)

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_σ = (1 − σ)·x_0 + σ·ε for a batch of σ."""
        sigma = sigma.view(-1, *[1] * (x0.ndim - 1))
        return (1 - sigma) * x0 + sigma * noise

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """1000·t for each σ (the shift undone)."""
        return 1000 * sigma / (self.shift - (self.shift - 1) * sigma)

    def sample_sigmas(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training noise levels for a student: a uniform timestep over the model's own 1000."""
        return self.sigmas[torch.randint(0, len(self.sigmas), (count,), generator=generator)]

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """steps noise levels from 1 down, evenly spaced in timestep (ComfyUI's 'normal' on a flow model), then 0."""
        t = torch.linspace(1, 1 / len(self.sigmas), steps, dtype=torch.float64)
        return torch.cat([self.sigma(t).float(), torch.zeros(1)])
