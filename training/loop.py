"""DICE training (the paper's Algorithm 1): a frozen model's CFG output teaches a sharpener to give it in one call."""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
from .backend import DiffusionBackend
from .checkpoint import load_state, save_state, write_atomic
from .distributed import Distributed
from .png import grid, save_png
from .progress import Progress, format_seconds
from .sampler import sample, vector_input


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint."""

    steps: int = 8000
    batch: int = 16
    lr: float = 2e-4
    lr_schedule: str = "constant"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    guidance: float = 5.0
    loss: str = "l1"
    seed: int = 0
    save_every: int = 500
    sample_every: int = 500
    sample_steps: int = 20
    sample_prompts: list[str] = field(default_factory=list)
    eval_batch: int = 64
    negatives: list[str] = field(default_factory=list)
    mixed_precision: str = "auto"
    attention_context: str = "prompt+reference"


@dataclass
class RunInfo:
    """What goes into the sharpener's metadata besides the training config."""

    model_family: str
    base_checkpoint: str
    base_checkpoint_sha256: str = ""
    clip_skip: int = 1
    prediction_type: str = "eps"


def teacher_noise(backend: DiffusionBackend, batch: dict, guidance: float) -> torch.Tensor:
    """CFG's prediction, cond and uncond in one batched call: eps_ref + w·(eps_c − eps_ref)."""
    x, sigma = batch["x"], batch["sigma"]
    y = None if batch.get("y") is None else torch.cat([batch["y"], batch["y_ref"]])
    eps = backend.predict_noise(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([batch["c"], batch["c_ref"]]),
                                **vector_input(y))
    eps_cond, eps_ref = eps.chunk(2)
    return eps_ref + guidance * (eps_cond - eps_ref)


def single_call(backend: DiffusionBackend, batch: dict, context: torch.Tensor) -> torch.Tensor:
    """One call with the prompt's own vector input, whatever the cross-attention context (plain or sharpened)."""
    return backend.predict_noise(batch["x"], batch["sigma"], context, **vector_input(batch.get("y")))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(student.float(), teacher.float()) if kind == "l1" else F.mse_loss(student.float(), teacher.float())


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate at step: constant, or a cosine from config.lr down to zero at the last step."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * step / max(config.steps, 1)))
    return config.lr


def reference_prompts(count: int, negatives: list[str], rng: random.Random) -> list[str]:
    """The empty prompt for each sample, or random negative prompts (the paper's option for negative prompts)."""
    return [rng.choice(negatives) for _ in range(count)] if negatives else [""] * count


def autocast(device: torch.device, mode: str):
    """Mixed precision on a GPU (bf16 where supported, else fp16); full precision on the CPU."""
    if device.type != "cuda" or mode == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if (mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported())) else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def held_out_distances(backend: DiffusionBackend, sharpener: torch.nn.Module, batch: dict, guidance: float) -> dict:
    """Mean |eps − eps_CFG| of the unguided call and of the sharpened call on a fixed held-out batch."""
    teacher = teacher_noise(backend, batch, guidance)
    unguided = single_call(backend, batch, batch["c"])
    sharpened = single_call(backend, batch, batch["c"] + sharpener(batch["c"], batch["c_ref"]))
    far, near = float((unguided - teacher).abs().mean()), float((sharpened - teacher).abs().mean())
    return {"unguided_to_cfg": far, "sharpened_to_cfg": near, "ratio": near / far}


@torch.no_grad()
def time_one_forward(backend: DiffusionBackend, batch: dict) -> float:
    """Median seconds of one plain UNet call on a training batch: the unit of the cost figures."""
    times = []
    for _ in range(3):
        begun = time.perf_counter()
        single_call(backend, batch, batch["c"])
        times.append(time.perf_counter() - begun)
    return sorted(times)[1]


def make_batch(backend: DiffusionBackend, count: int, generator: torch.Generator, negatives: list[str],
               device: torch.device) -> dict:
    x0, prompts = backend.sample_training_latents(count, generator)
    rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
    references = reference_prompts(count, negatives, rng)
    sigma = backend.sample_sigmas(count, generator)
    noise = torch.randn(x0.shape, generator=generator)
    batch = {"x": x0 + sigma.view(-1, 1, 1, 1) * noise, "sigma": sigma,
             "c": backend.encode_prompts(prompts), "c_ref": backend.encode_prompts(references),
             "y": backend.encode_vectors(prompts), "y_ref": backend.encode_vectors(references)}
    return {k: v.to(device) for k, v in batch.items() if v is not None}


@torch.no_grad()
def sample_grid(backend: DiffusionBackend, sharpener: torch.nn.Module, prompts: list[str], steps: int,
                guidance: float) -> np.ndarray:
    """Rows: unguided, CFG and sharpened, same prompts and seeds."""
    c = backend.encode_prompts(prompts)
    null = backend.null_embedding()
    sigmas = backend.sampling_sigmas(steps)
    seeds = list(range(len(prompts)))
    shape = tuple(backend.latent_shape)
    vectors = {"y": backend.encode_vectors(prompts), "null_y": backend.encode_vectors([""])}
    rows = [
        sample(backend.predict_noise, c, sigmas, seeds, shape, **vectors),
        sample(backend.predict_noise, c, sigmas, seeds, shape, null=null, cfg_scale=guidance, **vectors),
        sample(backend.predict_noise, c + sharpener(c, null.expand_as(c)), sigmas, seeds, shape, **vectors),
    ]
    return grid(np.concatenate([backend.decode(r) for r in rows]), len(prompts), scale=3)


def train(config: TrainConfig, backend: DiffusionBackend, info: RunInfo, run_dir: Path, out: Path,
          resume: Path | None = None, log=print) -> dict:
    """Train a sharpener for backend; returns the summary. Run by every process under torchrun."""
    dist = Distributed.start()
    torch.manual_seed(config.seed)  # the same initial sharpener in every process
    sharpener = Sharpener(SharpenerConfig(embed_dim=backend.embed_dim, attention_context=config.attention_context)).to(dist.device)
    optimizer = torch.optim.AdamW(sharpener.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1000 * dist.rank)
    start = 0
    if resume is not None:
        state = load_state(resume)
        saved = state["config"].get("attention_context", "reference")
        if saved != config.attention_context:
            raise SystemExit(f"--resume: {resume} trains a sharpener with attention over '{saved}', this run asks "
                             f"for '{config.attention_context}'; pass --attention {saved}")
        sharpener.load_state_dict(state["sharpener"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if dist.world_size == 1:
            generator.set_state(state["generator"])
        else:
            generator.manual_seed(config.seed + 1000 * dist.rank + start)
        log(f"resumed from {resume} at step {start}")
        if config.lr_schedule != "constant" and state["config"].get("steps") != config.steps:
            log(f"the {config.lr_schedule} learning-rate schedule now ends at step {config.steps}, not "
                f"{state['config'].get('steps')}: the rest of the run follows the new length")
    model = dist.wrap(sharpener)
    scaler = torch.amp.GradScaler("cuda", enabled=dist.device.type == "cuda" and config.mixed_precision in ("auto", "fp16")
                                  and not torch.cuda.is_bf16_supported())
    held_out = make_batch(backend, config.eval_batch, torch.Generator().manual_seed(config.seed + 999_999),
                          config.negatives, dist.device)
    before = held_out_distances(backend, sharpener, held_out, config.guidance)
    if dist.is_main:
        log(f"training a {sharpener.parameter_count():,}-parameter sharpener for {info.base_checkpoint} "
            f"(width {backend.embed_dim}) on {dist.world_size} process(es), {config.batch} samples each, "
            f"{config.steps} steps; held-out distance to CFG: unguided {before['unguided_to_cfg']:.4f}, "
            f"sharpened {before['sharpened_to_cfg']:.4f}")
    forward_seconds = time_one_forward(backend, make_batch(backend, config.batch, torch.Generator().manual_seed(1),
                                                           config.negatives, dist.device))
    progress = Progress(config.steps, "train", "steps", start=start) if dist.is_main else None
    training_seconds, samples_seen = 0.0, 0
    for step in range(start, config.steps):
        begun = time.time()
        batch = make_batch(backend, config.batch, generator, config.negatives, dist.device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        with torch.no_grad(), autocast(dist.device, config.mixed_precision):
            teacher = teacher_noise(backend, batch, config.guidance)
        with autocast(dist.device, config.mixed_precision):
            student = single_call(backend, batch, batch["c"] + model(batch["c"], batch["c_ref"]))
        loss = distillation_loss(student, teacher, config.loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        training_seconds += time.time() - begun
        samples_seen += config.batch
        if dist.is_main:
            progress.update(step + 1, loss=loss.item())
            done = step + 1
            if config.save_every and (done % config.save_every == 0 or done == config.steps):
                save_state(run_dir / "checkpoint.pt", sharpener, optimizer, done, generator, asdict(config))
            if config.sample_every and config.sample_prompts and (done % config.sample_every == 0 or done == config.steps):
                save_png(run_dir / "samples" / f"step{done:06d}.png",
                         sample_grid(backend, sharpener, config.sample_prompts, config.sample_steps, config.guidance))
    seconds = training_seconds
    after = held_out_distances(backend, sharpener, held_out, config.guidance)
    summary = {"steps": config.steps, "resumed_at": start, "world_size": dist.world_size,
               "samples_per_second": dist.mean(samples_seen / max(seconds, 1e-9)) * dist.world_size,
               "seconds": round(seconds, 1), "held_out_before": before, "held_out_after": after,
               # One training sample's cost in units of one plain UNet call on one sample.
               "unet_call_equivalents_per_sample": round(seconds / max(config.steps - start, 1) / forward_seconds, 2),
               "out": str(out)}
    if dist.is_main:
        save_sharpener(out, sharpener.cpu(), TrainingInfo(
            model_family=info.model_family, base_checkpoint=info.base_checkpoint,
            base_checkpoint_sha256=info.base_checkpoint_sha256, guidance_scale=config.guidance,
            clip_skip=info.clip_skip, prediction_type=info.prediction_type,
            trained_with_negatives=bool(config.negatives), default_alpha=1.0, training_steps=config.steps))
        write_atomic(run_dir / "summary.json", lambda t: t.write_text(json.dumps(summary, indent=2) + "\n"))
        log(f"done in {format_seconds(seconds)}: {summary['samples_per_second']:.1f} samples/s; held-out distance "
            f"to CFG: unguided {after['unguided_to_cfg']:.4f}, sharpened {after['sharpened_to_cfg']:.4f} "
            f"(ratio {after['ratio']:.3f}); wrote {out}")
    dist.barrier()
    dist.stop()
    return summary
