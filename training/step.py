"""One training step's mathematics: the batch, CFG's teacher prediction, the student's, the loss, and its gradient
taken a micro-batch at a time."""
from __future__ import annotations

import contextlib
import random

import torch
import torch.nn.functional as F

from .backend import DiffusionBackend
from .sampler import cfg_noise, in_interval, vector_input


def teacher_noise(backend: DiffusionBackend, batch: dict, guidance: float,
                  interval: tuple[float, float] | None = None) -> torch.Tensor:
    """CFG's prediction eps_ref + w·(eps_c − eps_ref), cond and reference batched as the model's sampler batches them;
    w is each sample's own scale where the batch draws one ("w"), else guidance; with a guidance interval, 1 (the
    plain prediction) at the samples whose noise level lies outside it."""
    scale = per_sample(batch["w"], batch["x"].ndim) if "w" in batch else guidance
    if interval is not None:
        guided = in_interval(backend.noise_level(batch["sigma"]), interval).view(-1, *[1] * (batch["x"].ndim - 1))
        scale = torch.where(guided, torch.as_tensor(scale, device=guided.device), 1.0)
    return cfg_noise(backend.predict_noise, batch["x"], batch["sigma"], batch["c"], batch["c_ref"], scale,
                     batch.get("y"), batch.get("y_ref"), backend.join_contexts)


def per_sample(w: torch.Tensor, ndim: int) -> torch.Tensor:
    """Scales [B] shaped to multiply predictions of ndim dimensions ([B, C, H, W], a video's [B, C, T, H, W])."""
    return w.view(-1, *[1] * (ndim - 1))


def draw_guidance(count: int, generator: torch.Generator, guidance_range: tuple[float, float] | None,
                  anchors: tuple[tuple[float, float], ...] = ()) -> dict:
    """{"w": one CFG scale per sample, uniform over guidance_range except, for each (scale, share) of anchors, that
    share of the samples at that scale}, or nothing for a run at one scale."""
    if guidance_range is None:
        return {}
    low, high = guidance_range
    w = low + (high - low) * torch.rand(count, generator=generator)
    anchors = tuple((scale, share) for scale, share in anchors if share > 0)
    if anchors:  # one draw for all anchors, so a run with one anchor draws what it drew before the second existed
        pick, below = torch.rand(count, generator=generator), 0.0
        for scale, share in anchors:
            w = torch.where((pick >= below) & (pick < below + share), torch.full_like(w, scale), w)
            below += share
    return {"w": w}


def single_call(backend: DiffusionBackend, batch: dict, context: torch.Tensor) -> torch.Tensor:
    """One call with the prompt's own vector input, whatever the cross-attention context (plain or sharpened)."""
    return backend.predict_noise(batch["x"], batch["sigma"], context, **vector_input(batch.get("y")))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    return F.l1_loss(student.float(), teacher.float()) if kind == "l1" else F.mse_loss(student.float(), teacher.float())


def reference_prompts(count: int, negatives: list[str], rng: random.Random, share: float = 1.0) -> list[str]:
    """The empty prompt for each sample, or random negative prompts (the paper's option for negative prompts) for a
    share of them and the empty prompt for the rest."""
    if not negatives:
        return [""] * count
    if share >= 1:
        return [rng.choice(negatives) for _ in range(count)]
    return [rng.choice(negatives) if rng.random() < share else "" for _ in range(count)]


def negative_marks(references: list[str], negatives: list[str]) -> dict:
    """{"negative": which samples' reference is a negative prompt}, in runs trained with negatives."""
    return {"negative": torch.tensor([r != "" for r in references])} if negatives else {}


def make_batch(backend: DiffusionBackend, count: int, generator: torch.Generator, negatives: list[str],
               device: torch.device, guidance_range: tuple[float, float] | None = None,
               negative_share: float = 1.0, anchors: tuple[tuple[float, float], ...] = ()) -> dict:
    x0, prompts = backend.sample_training_latents(count, generator)
    rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
    references = reference_prompts(count, negatives, rng, negative_share)
    sigma = backend.sample_sigmas(count, generator)
    noise = torch.randn(x0.shape, generator=generator)
    batch = {"x": backend.noised(x0, noise.to(x0.device), sigma), "sigma": sigma,
             "c": backend.encode_prompts(prompts), "c_ref": backend.encode_prompts(references),
             "y": backend.encode_vectors(prompts), "y_ref": backend.encode_vectors(references),
             **draw_guidance(count, generator, guidance_range, anchors), **negative_marks(references, negatives)}
    return {k: v.to(device) for k, v in batch.items() if v is not None}


def split_batch(batch: dict, size: int) -> list[dict]:
    count = len(batch["x"])
    return [{k: v[start:start + size] for k, v in batch.items()} for start in range(0, count, size)]


def accumulate_gradients(model: torch.nn.Module, backend: DiffusionBackend, batch: dict, micro_batch: int,
                         guidance: float, loss_kind: str, scaler: torch.amp.GradScaler | None = None,
                         interval: tuple[float, float] | None = None) -> float:
    """Backward of the whole batch's loss, micro_batch samples at a time, into the gradients of model (a Student,
    perhaps DDP-wrapped; the teacher sees the plain model); returns the loss. Each part's loss is weighted by its share of the batch, so the gradients equal one pass over the batch."""
    parts = split_batch(batch, micro_batch)
    total, loss_sum = len(batch["x"]), 0.0
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        # DDP averages gradients across processes once, on the last part; the others only add up locally.
        syncing = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with syncing:
            with torch.no_grad():  # CFG's runs hand in the prediction they made at each state
                teacher = part["teacher"] if "teacher" in part else teacher_noise(backend, part, guidance, interval)
            student = model(backend, part)
            loss = distillation_loss(student, teacher, loss_kind) * (len(part["x"]) / total)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
    return loss_sum
