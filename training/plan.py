"""Before training: what one sample costs in memory and time on this device, the micro-batch that fits, and the plan
printed for the user (samples, steps, memory, time, and what the default run would take here)."""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .backend import DiffusionBackend
from .memory import PeakMemory, format_bytes, free_memory
from .step import accumulate_gradients, distillation_loss, single_call, teacher_noise

HEADROOM = 0.85  # of the free memory, for the allocator's fragmentation and what the host allocates later


@dataclass
class Plan:
    micro_batch: int
    checkpointing: bool
    reason: str
    teacher_bytes: int  # peak memory one sample adds in the teacher's call (cond and uncond)
    student_bytes: int  # ... in the student's forward and backward
    free_bytes: int | None
    resident_bytes: int  # in use before training: the model's weights and what the host keeps
    seconds_per_sample: float  # teacher, student forward and backward, and the data pipeline
    forward_seconds_per_sample: float  # one plain UNet call: the unit of the cost figures
    draw_seconds: float  # drawing one training latent with CFG (prompts-only data)

    @property
    def per_sample_bytes(self) -> int:
        return max(self.teacher_bytes, self.student_bytes)

    def run_seconds(self, samples: int, draws: float) -> float:
        return samples * self.seconds_per_sample + draws * self.draw_seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_memory(backend: DiffusionBackend, model: torch.nn.Module, one: dict, guidance: float, loss: str,
                  device: torch.device) -> tuple[int, int]:
    """Peak memory the teacher's call and the student's forward and backward add for one sample."""
    with torch.no_grad(), PeakMemory(device) as teacher:
        target = teacher_noise(backend, one, guidance)
    with PeakMemory(device) as student:
        distillation_loss(model(backend, one), target, loss).backward()
    model.zero_grad(set_to_none=True)
    return teacher.bytes, student.bytes


def resident_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def choose_micro_batch(batch: int, per_sample: int, free: int | None, requested: int) -> tuple[int, str]:
    """The micro-batch and why: as asked, else the most samples whose memory fits in the free memory."""
    if requested:
        return min(requested, batch), "set by --micro-batch"
    if free is None:
        return batch, "the free memory is unknown here"
    fits = int(free * HEADROOM) // max(per_sample, 1)
    if fits >= batch:
        return batch, (f"all {batch} samples fit: {format_bytes(per_sample)} each, {format_bytes(free)} free")
    return fits, (f"{batch} samples would need {format_bytes(batch * per_sample)} at {format_bytes(per_sample)} each, "
                  f"{format_bytes(free)} free: {fits} at a time, gradients accumulated over the batch")


def make_plan(backend: DiffusionBackend, model: torch.nn.Module, make_batch, batch_size: int, guidance: float,
              loss: str, device: torch.device, requested_micro_batch: int = 0, checkpointing: str = "auto",
              input_seconds: Callable[[int], float] | None = None) -> Plan:
    """Measure one sample, pick the micro-batch (checkpointing the frozen model's layers when not even one sample
    fits, or when asked), then time a warm-up step at that micro-batch. make_batch(count) draws training samples;
    input_seconds(micro_batch), where given, times one input made at that micro-batch (CFG's runs, which a single
    draw does not show: they run in blocks)."""
    free, resident = free_memory(device), resident_memory(device)
    checkpointed = checkpointing == "on" and backend.checkpoint_layers() > 0
    one = make_batch(1)
    teacher_bytes, student_bytes = sample_memory(backend, model, one, guidance, loss, device)
    micro, reason = choose_micro_batch(batch_size, max(teacher_bytes, student_bytes), free, requested_micro_batch)
    if micro < 1 and checkpointing == "auto" and backend.checkpoint_layers() > 0:
        checkpointed, needed = True, student_bytes
        teacher_bytes, student_bytes = sample_memory(backend, model, one, guidance, loss, device)
        micro, reason = choose_micro_batch(batch_size, max(teacher_bytes, student_bytes), free, 0)
        reason = f"{format_bytes(needed)} a sample without activation checkpointing; with it, {reason}"
    if micro < 1:
        raise SystemExit(f"one training sample needs {format_bytes(max(teacher_bytes, student_bytes))} and "
                         f"{format_bytes(free or 0)} is free on {device}: lower --resolution"
                         + ("" if checkpointed else " or pass --checkpointing on"))
    if checkpointed and checkpointing == "on":
        reason += "; activation checkpointing on (--checkpointing on)"
    drawn_before = getattr(backend, "drawing_seconds", 0.0)
    begun = time.perf_counter()
    warm = make_batch(micro)
    data_seconds = time.perf_counter() - begun - (getattr(backend, "drawing_seconds", 0.0) - drawn_before)
    if input_seconds is not None:
        data_seconds = input_seconds(micro) * micro
    synchronize(device)
    begun = time.perf_counter()
    accumulate_gradients(model, backend, warm, micro, guidance, loss)
    synchronize(device)
    step_seconds = time.perf_counter() - begun
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        begun = time.perf_counter()
        single_call(backend, warm, warm["c"])
        synchronize(device)
        forward_seconds = (time.perf_counter() - begun) / micro
    drawn = getattr(backend, "latents_drawn", 0)
    # Drawing a latent is a CFG sampling run, two calls a step; measured when the warm-up drew some.
    draw_seconds = (backend.drawing_seconds / drawn if drawn else 2 * getattr(backend, "draw_steps", 0) * forward_seconds)
    return Plan(micro, checkpointed, reason, teacher_bytes, student_bytes, free, resident,
                (step_seconds + max(data_seconds, 0.0)) / micro, forward_seconds, draw_seconds)


def duration(seconds: float) -> str:
    """A person's way of saying how long: 45 s, 12 min, 3 h 20 min, 2 d 5 h."""
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def describe(plan: Plan, steps: int, start: int, batch: int, world: int, draws: float, default_steps: int,
             default_batch: int, default_draws: float) -> list[str]:
    """The plan's lines for the log."""
    samples = (steps - start) * batch * world
    peak = plan.resident_bytes + plan.micro_batch * plan.per_sample_bytes
    lines = [
        f"plan: {steps - start:,} steps × {batch} samples × {world} process(es) = {samples:,} samples"
        + (f" (resuming at step {start:,} of {steps:,})" if start else ""),
        f"memory: one sample adds {format_bytes(plan.teacher_bytes)} in the teacher's call and "
        f"{format_bytes(plan.student_bytes)} in the student's forward and backward; micro-batch {plan.micro_batch} "
        f"({plan.reason}); estimated peak {format_bytes(peak)} with {format_bytes(plan.resident_bytes)} already in use",
        f"time: {plan.seconds_per_sample * 1000:.1f} ms a sample here ({plan.seconds_per_sample / plan.forward_seconds_per_sample:.1f} "
        f"UNet-call equivalents), measured on a warm-up step"
        + (f"; plus about {draws:,.0f} training latents to draw with CFG, {plan.draw_seconds:.1f} s each, cached "
           "for later runs" if draws >= 1 else ""),
        f"estimated time for this run: {duration(plan.run_seconds(samples // world, draws))}",
    ]
    if (default_steps, default_batch) != (steps, batch):
        default_samples = default_steps * default_batch
        lines.append(f"the default run ({default_steps:,} steps × {default_batch}) would take "
                     f"{duration(plan.run_seconds(default_samples, default_draws))} here")
    return lines
