"""The small interface the trainer drives: the offline testbed and a ComfyUI checkpoint both answer it."""
from __future__ import annotations

from typing import Protocol

import numpy
import torch


class DiffusionBackend(Protocol):
    """A frozen text-to-image model seen from the sharpener's trainer."""

    embed_dim: int
    latent_shape: tuple[int, ...]
    compute_dtype: torch.dtype  # the frozen model's arithmetic: fp16 needs loss scaling in the backward pass

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """[batch, tokens, embed_dim] text embeddings."""

    def encode_vectors(self, prompts: list[str]) -> torch.Tensor | None:
        """[batch, adm] vector inputs (SDXL's pooled text and size conditioning, ComfyUI's y), or None for models
        that take the text only through cross-attention. The sharpener never changes them."""

    def join_contexts(self, contexts: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """The contexts at one token count, so they go into one call (cross-attention gives the same result for a
        sequence tiled whole), or None where the model's sampler runs them as separate calls."""

    def context_group(self, prompt: str) -> object:
        """Prompts of one group go into one call together; None where any prompts do (contexts tile)."""

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The training input x_σ at noise level σ: x_0 + σ·ε for eps and v models, (1 − σ)·x_0 + σ·ε for flow."""

    def null_embedding(self) -> torch.Tensor:
        """[1, tokens, embed_dim]: the empty prompt, the reference CFG uses."""

    def sample_training_latents(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """count clean latents x_0 and their captions."""

    def sample_captions(self, count: int, generator: torch.Generator) -> list[str]:
        """count training captions, without their latents (the prompts of CFG sampling runs)."""

    def sample_sigmas(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Training noise levels drawn over the model's own schedule."""

    def noise_level(self, sigma: torch.Tensor) -> torch.Tensor:
        """Each σ's timestep as a fraction of the model's largest (1: pure noise, 0: clean), where a guidance interval
        is given."""

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """steps + 1 noise levels from the largest down to 0, for sample grids."""

    def decode(self, latents: torch.Tensor) -> numpy.ndarray:
        """uint8 [N, H, W, 3] images of latents."""

    def adapter_model(self) -> torch.nn.Module:
        """The frozen denoising network a guidance adapter hooks into (its module paths name the adapter's layers)."""

    def adapter_layers(self, selection: str) -> list[str]:
        """Module paths, in adapter_model(), of the layers a guidance adapter of this selection holds."""

    def checkpoint_layers(self) -> int:
        """Recompute the frozen model's layers in the backward pass instead of storing their activations; returns
        how many layers now do (0: not supported)."""

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      y: torch.Tensor | None = None) -> torch.Tensor:
        """eps(x_σ, σ, context, y) = (x_σ − x̂_0) / σ, the direction every sampler steps along (for flow models,
        the velocity)."""
