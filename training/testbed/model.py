"""The trained testbeds, loaded from their committed weights: text encoder, autoencoder, denoiser (the eps UNet, or the
flow-matching DiT), schedule, sampler."""
from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .data import caption, make_dataset, random_named_scene, realise, render
from .features import FeatureNet
from .models import Autoencoder, AutoencoderConfig, DiT, DiTConfig, UNet, UNetConfig
from ...sharpeners.adapter import block_layers
from ...sharpeners.formulas import repeat_to_common_length
from ...sharpeners.nag import NAGSettings, normalized_attention_guidance
from ..memory import checkpoint_layers
from ..sampler import guided, guided_at, initial_noise, sample, sampling_run
from .schedule import DiscreteSchedule, FlowSchedule
from .text_encoder import TextEncoder

WEIGHTS = Path(__file__).resolve().parent / "weights"
# The transformer testbed: a DiT trained with flow matching on the same data, text encoder and autoencoder.
DIT_WEIGHTS = Path(__file__).resolve().parent / "weights_dit"
DENOISERS = {"unet": WEIGHTS, "dit": DIT_WEIGHTS}
# Each testbed's denoiser weights: the file a sharpener trained on it names by sha256.
DENOISER_FILES = {"unet": WEIGHTS / "unet.safetensors", "dit": DIT_WEIGHTS / "dit.safetensors"}
TRAINING_POOL, TRAINING_POOL_SEED = 2000, 777  # captions a sharpener trains on; evaluation uses other seeds


def load_module(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    module.load_state_dict({k: v.float() for k, v in load_file(path).items()})
    return module.requires_grad_(False).eval()


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] → uint8 [N, H, W, 3]."""
    return ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class Testbed:
    """The offline text-to-image model; answers the trainer's DiffusionBackend interface."""

    latent_shape = (4, 8, 8)
    compute_dtype = torch.float32  # set_precision: bf16 or fp16 arithmetic, as ComfyUI runs SD on most GPUs

    def __init__(self, autoencoder: Autoencoder, unet: UNet | DiT, latent_scale: float,
                 text: TextEncoder | None = None, features: FeatureNet | None = None,
                 schedule: DiscreteSchedule | FlowSchedule | None = None) -> None:
        self.autoencoder, self.latent_scale = autoencoder, latent_scale
        self.unet = unet  # the denoiser: the UNet, or the transformer testbed's DiT
        self.text = text or TextEncoder()
        self.features = features
        self.schedule = schedule or DiscreteSchedule()
        self.flow = isinstance(self.schedule, FlowSchedule)
        self.embed_dim = unet.config.context_dim
        self._null = None
        self._pool = None

    @classmethod
    def load(cls, folder: str | Path = WEIGHTS) -> "Testbed":
        """The testbed in folder; the transformer testbed's folder holds its DiT alone and shares the autoencoder and
        feature network of the first."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        tuples = lambda values: {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}  # noqa: E731
        shared = folder if (folder / "autoencoder.safetensors").exists() else WEIGHTS
        autoencoder = load_module(Autoencoder(AutoencoderConfig(**tuples(config["autoencoder"]))),
                                  shared / "autoencoder.safetensors")
        if "dit" in config:
            denoiser = load_module(DiT(DiTConfig(**tuples(config["dit"]))), folder / "dit.safetensors")
            schedule = FlowSchedule(config["schedule"]["shift"])
        else:
            denoiser = load_module(UNet(UNetConfig(**tuples(config["unet"]))), folder / "unet.safetensors")
            schedule = DiscreteSchedule()
        features = load_module(FeatureNet(), shared / "features.safetensors") \
            if (shared / "features.safetensors").exists() else None
        return cls(autoencoder, denoiser, config["latent_scale"], features=features, schedule=schedule)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self.text.encode(prompts)

    def null_embedding(self) -> torch.Tensor:
        if self._null is None:
            self._null = self.text.null()
        return self._null

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images → scaled latents (the posterior mean)."""
        return self.autoencoder.encode(images_to_tensor(images))[0] * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return tensor_to_images(self.autoencoder.decode(latents / self.latent_scale))

    def sample_training_latents(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Fresh images of captions from a fixed pool, so each caption is encoded only once."""
        if self._pool is None:
            self._pool = training_pool()
        picks = torch.randint(0, len(self._pool), (count,), generator=generator).tolist()
        rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
        images = np.stack([render(rng, realise(rng, self._pool[i][0])) for i in picks])
        return self.encode_images(images), [self._pool[i][1] for i in picks]

    def sample_captions(self, count: int, generator: torch.Generator) -> list[str]:
        """Training captions alone (for CFG sampling runs), from the same pool."""
        if self._pool is None:
            self._pool = training_pool()
        return [self._pool[i][1] for i in torch.randint(0, len(self._pool), (count,), generator=generator).tolist()]

    def sample_sigmas(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return self.schedule.sample_sigmas(count, generator)

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        return self.schedule.sampling_sigmas(steps)

    def noise_level(self, sigma: torch.Tensor) -> torch.Tensor:
        top = self.schedule.timestep(torch.tensor([self.schedule.sigma_max]))
        return self.schedule.timestep(sigma.float().cpu()).to(sigma.device) / top.to(sigma.device)

    def encode_vectors(self, prompts: list[str]) -> None:
        return None  # like SD1.5, the text enters through cross-attention only

    def join_contexts(self, contexts: list[torch.Tensor]) -> list[torch.Tensor]:
        return repeat_to_common_length(contexts)  # cross-attention only: a tiled sequence gives the same result

    def context_group(self, prompt: str) -> None:
        return None  # contexts tile: any prompts go into one call

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.schedule.noised(x0, noise, sigma)

    def set_precision(self, dtype: torch.dtype) -> None:
        """The UNet's arithmetic in dtype from now on (its weights stay fp32, cast per operation by autocast)."""
        self.compute_dtype = dtype

    def adapter_model(self) -> torch.nn.Module:
        return self.unet

    def adapter_layers(self, selection: str) -> list[str]:
        """The UNet's transformers' attention projections, for "transformer" their feed-forward layers too, and for
        "all" also the res-blocks' convolutions."""
        paths = block_layers(self.unet, selection, ("self_qkv", "self_out", "cross_q", "cross_kv", "cross_out"),
                             ("ff.0", "ff.2"), "DiTBlock" if self.flow else "Transformer")
        if selection == "all" and not self.flow:
            paths += block_layers(self.unet, selection, (), ("conv1", "conv2"), "ResBlock", kinds=(torch.nn.Conv2d,))
        return paths

    def checkpoint_layers(self) -> int:
        """Recompute the UNet's res-blocks and transformers in the backward pass rather than keep their activations."""
        return checkpoint_layers(self.unet, {"ResBlock", "Transformer", "DiTBlock"})

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      y: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            raise ValueError("the testbed's denoiser has no vector input (y)")
        # The UNet predicts eps of x_σ/sqrt(σ² + 1); the DiT the velocity ε − x_0 of x_σ itself, which is (x_σ − x̂_0)/σ.
        scale = 1.0 if self.flow else (sigma ** 2 + 1).rsqrt().view(-1, 1, 1, 1)
        with torch.autocast(x.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            return self.unet(x * scale, self.schedule.timestep(sigma), context).float()

    @contextlib.contextmanager
    def negative_attention(self, negative: torch.Tensor, settings: NAGSettings, active: torch.Tensor | None = None):
        """Inside the block every cross-attention of the denoiser applies NAG with negative's tokens (one row per
        sample of each call, or one for all); active [B] picks the samples it applies to (the rest are left as
        they are)."""
        def patch(block, q, z):
            k, v = block.cross_kv(self.unet.context_in(negative)).chunk(2, dim=-1)
            if len(k) != len(q):
                k, v = k.expand(len(q), -1, -1), v.expand(len(q), -1, -1)
            guided = normalized_attention_guidance(z, block.attend(q, k, v), settings)
            return guided if active is None else torch.where(active.view(-1, 1, 1), guided, z)

        blocks = [m for m in self.unet.modules() if hasattr(m, "cross_kv")]
        for block in blocks:
            block.attention_patch = patch
        try:
            yield
        finally:
            for block in blocks:
                block.attention_patch = None

    @torch.no_grad()
    def generate(self, context: torch.Tensor, seeds: list[int], steps: int = 20, cfg_scale: float = 1.0,
                 method: str = "dpmpp_2m", null: torch.Tensor | None = None, batch: int = 250,
                 nag: NAGSettings | None = None, negative: torch.Tensor | None = None,
                 interval: tuple[float, float] | None = None) -> np.ndarray:
        """uint8 images for each embedding in context (already sharpened, scaled or fused as the caller likes); with
        nag, one call a step that applies NAG with negative's tokens (one row per prompt); null: CFG's uncond, one for
        all prompts or one each (a negative prompt per prompt); interval: the noise levels CFG applies at."""
        sigmas = self.schedule.sampling_sigmas(steps)
        null = self.null_embedding() if null is None and cfg_scale != 1.0 else null
        out = []
        for start in range(0, len(context), batch):
            part = slice(start, start + batch)
            patched = contextlib.nullcontext() if nag is None else self.negative_attention(negative[part], nag)
            reference = null if null is None or len(null) == 1 else null[part]  # one uncond for all, or one each
            with patched:
                latents = sample(self.predict_noise, context[part], sigmas, seeds[part], self.latent_shape, reference,
                                 cfg_scale, method, guide_at=guided_at(self.noise_level, interval))
            out.append(self.decode(latents))
        return np.concatenate(out)

    @torch.no_grad()
    def generate_cfg_then(self, context: torch.Tensor, then: torch.Tensor, seeds: list[int], steps: int,
                          cfg_steps: int, cfg_scale: float, batch: int = 250) -> np.ndarray:
        """CFG on context for the first cfg_steps of a steps-step DPM-Solver++(2M) run, then one call per step on
        then (a sharpened context): two samplers sharing one schedule, the second starting its history afresh, as
        two KSampler (Advanced) nodes with start/end steps run."""
        sigmas, null, out = self.schedule.sampling_sigmas(steps), self.null_embedding(), []
        for start in range(0, len(context), batch):
            part = slice(start, start + batch)
            x = initial_noise(seeds[part], self.latent_shape) * sigmas[0]
            if cfg_steps:
                x = sampling_run(guided(self.predict_noise, context[part], null, cfg_scale), x, sigmas[:cfg_steps + 1])
            out.append(self.decode(sampling_run(guided(self.predict_noise, then[part], None, 1.0), x, sigmas[cfg_steps:])))
        return np.concatenate(out)


def training_pool(size: int = TRAINING_POOL) -> list[tuple]:
    """The first size (named scene, caption) pairs of the captions a sharpener trains on, in the trainer's order."""
    rng = random.Random(TRAINING_POOL_SEED)
    return [(named, caption(rng, named)) for named in (random_named_scene(rng) for _ in range(size))]


def evaluation_prompts(count: int, seed: int = 1234):
    """Held-out prompts, their named scenes and real images drawn for them (a different seed from training)."""
    images, captions, named, _ = make_dataset(count, seed)
    return captions, named, images


