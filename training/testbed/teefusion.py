"""A TeEFusion-style student of the testbed, the peer DICE is measured against: the whole UNet fine-tuned so that
one call, given the fused embedding c + (w−1)(c − c_null) and w through a sinusoidal embedding added to its time
embedding, gives CFG's prediction at w (TeEFusion, ICCV 2025; there on a DiT, here on the testbed's UNet).

    python -m training.testbed.teefusion [--out outputs/testbed_teefusion.safetensors --steps 2000]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import write_atomic
from ..progress import Progress
from ..sampler import sample
from .models import DiT, UNet, timestep_embedding
from .model import Testbed

GUIDANCE_RANGE = (1.0, 8.0)
# w enters the sinusoidal embedding on the timesteps' scale, so its frequencies resolve steps of 0.1 in w.
GUIDANCE_TO_TIMESTEP = 100.0
KIND = "testbed-teefusion-student"


class GuidanceStudent(nn.Module):
    """The testbed UNet plus a small MLP that turns w into an offset of the time embedding (zero at the start)."""

    def __init__(self, unet: UNet | DiT) -> None:
        super().__init__()
        self.unet = copy.deepcopy(unet).requires_grad_(True)
        # The sinusoid's width and the time embedding's: the UNet's first width and 4×, the DiT's width for both.
        dit = isinstance(unet, DiT)
        self.sinusoid_width = unet.config.width if dit else unet.config.channels[0]
        width, time_dim = self.sinusoid_width, unet.config.width if dit else 4 * unet.config.channels[0]
        self.guidance_mlp = nn.Sequential(nn.Linear(width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        nn.init.zeros_(self.guidance_mlp[-1].weight)
        nn.init.zeros_(self.guidance_mlp[-1].bias)

    def predict_noise(self, testbed: Testbed, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      null: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """One call: eps(x, σ, c + (w−1)(c − c_null), w)."""
        fused = context + (guidance - 1).view(-1, 1, 1) * (context - null)
        offset = self.guidance_mlp(timestep_embedding(guidance * GUIDANCE_TO_TIMESTEP, self.sinusoid_width))
        scale = 1.0 if testbed.flow else (sigma ** 2 + 1).rsqrt().view(-1, 1, 1, 1)
        return self.unet(x * scale, testbed.schedule.timestep(sigma), fused, time_offset=offset)

    @torch.no_grad()
    def generate(self, testbed: Testbed, context: torch.Tensor, seeds: list[int], steps: int, guidance: float,
                 batch: int = 250) -> np.ndarray:
        """uint8 images, one call a step, DPM-Solver++(2M) like the testbed's own generate."""
        sigmas, null = testbed.sampling_sigmas(steps), testbed.null_embedding()
        images = []
        for start in range(0, len(context), batch):
            part = context[start:start + batch]
            w = torch.full((len(part),), guidance)

            def predict(x, sigma, c, w=w):
                return self.predict_noise(testbed, x, sigma, c, null.expand_as(c), w[:len(x)])

            images.append(testbed.decode(sample(predict, part, sigmas, seeds[start:start + batch], testbed.latent_shape)))
        return np.concatenate(images)


def train_student(testbed: Testbed, steps: int = 2000, batch: int = 64, lr: float = 2e-4, seed: int = 0,
                  log=print) -> GuidanceStudent:
    """Distil CFG over w ∈ GUIDANCE_RANGE into one call (TeEFusion's L2 objective), on the sharpener's data."""
    torch.manual_seed(seed)
    student = GuidanceStudent(testbed.unet).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    null = testbed.null_embedding()
    progress = Progress(steps, "teefusion student", "steps")
    begun = time.time()
    for step in range(steps):
        x0, prompts = testbed.sample_training_latents(batch, generator)
        sigma = testbed.sample_sigmas(batch, generator)
        x = testbed.noised(x0, torch.randn(x0.shape, generator=generator), sigma)
        c = testbed.encode_prompts(prompts)
        w = GUIDANCE_RANGE[0] + (GUIDANCE_RANGE[1] - GUIDANCE_RANGE[0]) * torch.rand(batch, generator=generator)
        with torch.no_grad():  # CFG at each sample's own w, cond and uncond in one batched call
            eps = testbed.predict_noise(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([c, null.expand_as(c)]))
            conditional, unconditional = eps.chunk(2)
            teacher = unconditional + w.view(-1, 1, 1, 1) * (conditional - unconditional)
        loss = F.mse_loss(student.predict_noise(testbed, x, sigma, c, null.expand_as(c), w), teacher)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.update(step + 1, loss=loss.item())
    log(f"TeEFusion-style student: {steps} steps of {batch} in {time.time() - begun:.0f} s")
    return student.eval().requires_grad_(False)


def save_student(student: GuidanceStudent, path: Path, steps: int) -> None:
    tensors = {k: v.contiguous() for k, v in student.state_dict().items()}
    metadata = {"kind": KIND, "steps": str(steps), "guidance_range": f"{GUIDANCE_RANGE[0]:g},{GUIDANCE_RANGE[1]:g}"}
    write_atomic(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def load_student(testbed: Testbed, path: Path) -> GuidanceStudent:
    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get("kind") != KIND:
            raise ValueError(f"{path}: not a TeEFusion-style testbed student (metadata kind is not {KIND!r})")
    student = GuidanceStudent(testbed.unet)
    student.load_state_dict(load_file(str(path)))
    return student.eval().requires_grad_(False)


def load_or_train_student(testbed: Testbed, path: Path, log=print) -> GuidanceStudent:
    """The student saved at path, or a new one trained (a few minutes on 2 cores) and saved there."""
    if path.is_file():
        return load_student(testbed, path)
    log(f"training the TeEFusion-style student into {path} (first use only)")
    student = train_student(testbed, log=log)
    save_student(student, path, 2000)
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/testbed_teefusion.safetensors")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    options = parser.parse_args()
    testbed = Testbed.load()
    student = train_student(testbed, options.steps, options.batch, options.lr)
    save_student(student, Path(options.out), options.steps)
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
