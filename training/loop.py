"""DICE training (the paper's Algorithm 1): a frozen model's CFG output teaches a sharpener to give it in one call."""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..sharpeners.adapter import AdapterConfig, GuidanceAdapter
from ..sharpeners.adapter_file import AdapterInfo, load_adapter, save_adapter
from ..sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
from ..sharpeners.fingerprint import weight_fingerprint
from ..sharpeners.nag import NAGSettings
from .averaging import WeightAverage
from .backend import DiffusionBackend
from .checkpoint import load_state, save_state, write_atomic
from .distributed import Distributed
from .hashing import file_sha256
from .plan import describe, make_plan
from .png import grid, save_png
from .precision import dtype_name, loss_scaler
from .progress import Progress, format_seconds
from .sampler import sample
from .student import Student
from .trajectories import TrajectoryStates
from .step import accumulate_gradients, make_batch, single_call, split_batch, teacher_noise  # noqa: F401 (benches import them here)


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint."""

    steps: int = 8000
    batch: int = 16
    lr: float = 2e-4
    lr_schedule: str = "constant"
    ema: float = 0.0  # the decay of the weight average written as the file (0: the last step's weights)
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
    micro_batch: int = 0  # 0: picked from the free memory at start
    checkpointing: str = "auto"  # activation checkpointing of the frozen model: auto (only if needed), on, off
    train: str = "sharpener"  # what learns: the sharpener, a guidance adapter (LoRA in the frozen model), or both
    adapter_rank: int = 8
    adapter_layers: str = "attention"
    inputs: str = "forward"  # the noisy latents trained on: forward-noised data, or the states of CFG's sampling runs
    draws_per_state: int = 1  # with CFG's runs: how often each state is drawn on average
    guidance_min: float = 0.0  # with guidance_max: each sample draws its CFG scale from this range (the adapter's knob);
    guidance_max: float = 0.0  # 0, 0: every sample at guidance
    knob_exponent: float = 1.0  # the knob's map: strength = ((w − 1) / (guidance − 1)) ** knob_exponent
    knob_sampling_exponent: float = 0.0  # the map the file gives the hosts, where it differs from training's (0: the same)
    anchor_share: float = 0.0  # with a range: the share of samples drawn at guidance itself, the rest uniform
    extra_anchor: tuple[float, float] = (0.0, 0.0)  # with a range: (scale, share) of samples also drawn at another scale
    guidance_interval: tuple[float, ...] = ()  # (low, high): the teacher's CFG only at noise levels within (else all)
    init_adapter: str = ""  # an adapter file the new adapter starts from (else LoRA's zero start)
    negative_share: float = 1.0  # with negatives: the share of samples whose reference is one (the rest: empty prompt)
    nag: tuple[float, ...] = ()  # with negatives and an adapter: NAG's (scale, tau, alpha), through which the negative reaches the call
    default_steps: int = 0  # the run the plan also prices when this one is shorter (0: this one)
    default_batch: int = 0


def guidance_range(config: TrainConfig) -> tuple[float, float] | None:
    """The range of CFG scales the run draws from, or None for a run at config.guidance alone."""
    return (config.guidance_min, config.guidance_max) if config.guidance_max > config.guidance_min else None


def guidance_anchors(config: TrainConfig) -> tuple[tuple[float, float], ...]:
    """The (scale, share) pairs drawn apart from the range's uniform draws: guidance itself, then any extra anchor."""
    return (config.guidance, config.anchor_share), tuple(config.extra_anchor)


@dataclass
class RunInfo:
    """What goes into the sharpener's metadata besides the training config."""

    model_family: str
    base_checkpoint: str
    base_checkpoint_sha256: str = ""
    clip_skip: int = 1
    prediction_type: str = "eps"
    base_fingerprint: str = ""  # a few of the model's weights, for hosts that cannot name the checkpoint (adapters)


COOLDOWN_SHARE = 0.2  # the cooldown schedule's linear tail, a fifth of the run


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate at step: constant; a cosine from config.lr down to zero at the last step; or a cooldown, constant until
    the last COOLDOWN_SHARE of the run, then straight down to zero (so a constant run resumed with it anneals)."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * step / max(config.steps, 1)))
    if config.lr_schedule == "cooldown":
        tail = max(round(config.steps * COOLDOWN_SHARE), 1)
        return config.lr * min(1.0, (config.steps - step) / tail)
    return config.lr


@torch.no_grad()
def held_out_distances(backend: DiffusionBackend, student: Student, batch: dict, guidance: float,
                       micro_batch: int = 1 << 30, interval: tuple[float, float] | None = None) -> dict:
    """Mean |eps − eps_CFG| of the unguided call and of the student's call on a fixed held-out batch."""
    far = near = 0.0
    for part in split_batch(batch, micro_batch):
        teacher = teacher_noise(backend, part, guidance, interval)
        unguided = single_call(backend, part, part["c"])
        sharpened = student(backend, part)
        share = len(part["x"]) / len(batch["x"])
        far += share * float((unguided - teacher).abs().mean())
        near += share * float((sharpened - teacher).abs().mean())
    return {"unguided_to_cfg": far, "sharpened_to_cfg": near, "ratio": near / far}


@torch.no_grad()
def sample_grid(backend: DiffusionBackend, student: Student, prompts: list[str], steps: int,
                guidance: float, micro_batch: int = 1 << 30) -> np.ndarray:
    """Rows: unguided, CFG and the student (sharpened and/or adapted), same prompts and seeds; micro_batch prompts at
    a time."""
    null = backend.null_embedding()
    sigmas = backend.sampling_sigmas(steps)
    shape = tuple(backend.latent_shape)
    rows: list[list[torch.Tensor]] = [[], [], []]
    if backend.join_contexts([backend.encode_prompts([p]) for p in prompts]) is None:
        micro_batch = 1  # prompts of different token counts that the model cannot take in one call (SD3, PixArt)
    for first in range(0, len(prompts), micro_batch):
        part = prompts[first:first + micro_batch]
        c, seeds = backend.encode_prompts(part), list(range(first, first + len(part)))
        vectors = {"y": backend.encode_vectors(part), "null_y": backend.encode_vectors([""])}
        rows[0].append(sample(backend.predict_noise, c, sigmas, seeds, shape, **vectors))
        rows[1].append(sample(backend.predict_noise, c, sigmas, seeds, shape, null=null, cfg_scale=guidance,
                              join=backend.join_contexts, **vectors))
        with student.adapter_on():
            rows[2].append(sample(backend.predict_noise, student.context(c, null.expand(len(c), -1, -1)), sigmas, seeds,
                                  shape, **vectors))
    return grid(np.concatenate([backend.decode(torch.cat(row)) for row in rows]), len(prompts), scale=3)


@contextlib.contextmanager
def out_of_memory_stops(message):
    """A GPU's out-of-memory error, or the CPU allocator's, becomes SystemExit(message()); other errors pass."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not (isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)):
            raise
        raise SystemExit(message()) from None


def out_of_memory_message(config: TrainConfig, plan, step: int, run_dir: Path) -> str:
    checkpoint = run_dir / "checkpoint.pt"
    if plan.micro_batch > 1:
        advice = f"pass --micro-batch {plan.micro_batch // 2}"
    elif not plan.checkpointing:
        advice = "pass --micro-batch 1 --checkpointing on"
    else:
        advice = "lower --resolution"
    kept = (f"the last checkpoint, {checkpoint}, is intact: add --resume to go on from it" if checkpoint.exists()
            else "no checkpoint was written yet")
    return (f"out of memory at step {step + 1} with micro-batch {plan.micro_batch} of {config.batch} samples: "
            f"{advice} (other programs using the GPU, such as a running ComfyUI, also take memory); {kept}")


def make_student(config: TrainConfig, backend: DiffusionBackend, device: torch.device) -> Student:
    """The parts config.train asks for: a new sharpener, a new guidance adapter hooked into the frozen model, or both."""
    sharpener = adapter = None
    if config.train in ("sharpener", "both"):
        sharpener = Sharpener(SharpenerConfig(embed_dim=backend.embed_dim, attention_context=config.attention_context))
    if config.train in ("adapter", "both"):
        model = backend.adapter_model()
        paths = backend.adapter_layers(config.adapter_layers)
        adapter = GuidanceAdapter.for_layers(model, paths, AdapterConfig(
            rank=config.adapter_rank, alpha=float(config.adapter_rank), layers=config.adapter_layers))
        if config.init_adapter:
            start = load_adapter(config.init_adapter)
            if set(start.names) != set(adapter.layers):
                raise SystemExit(f"--init-adapter {config.init_adapter}: its {len(start.names)} layers are not this "
                                 f"model's {len(adapter.layers)} adapter layers; it was trained for "
                                 f"{start.info.model_family} ('{start.info.base_checkpoint}')")
            adapter.load_lora_tensors(start.tensors)
        adapter.to(device).attach(model)
    nag = NAGSettings(*config.nag) if config.nag else None
    return Student(sharpener, adapter, reference_scale=config.guidance, nag=nag,
                   knob_exponent=config.knob_exponent).to(device)


def check_resumable(state: dict, config: TrainConfig, resume: Path) -> None:
    """A checkpoint trains the same parts as this run, or the run stops naming the flag that differs."""
    saved = state["config"]
    asked = {"train": (saved.get("train", "sharpener"), config.train), "inputs": (saved.get("inputs", "forward"), config.inputs),
             "guidance-range": (range_flag(saved.get("guidance_min", 0.0), saved.get("guidance_max", 0.0)),
                                range_flag(config.guidance_min, config.guidance_max)),
             "knob-exponent": (saved.get("knob_exponent", 1.0), config.knob_exponent),
             "anchor-share": (saved.get("anchor_share", 0.0), config.anchor_share),
             "draws-per-state": (saved.get("draws_per_state", 1), config.draws_per_state),
             "extra-anchor": (anchor_flag(saved.get("extra_anchor", (0.0, 0.0))), anchor_flag(config.extra_anchor)),
             "nag": (",".join(f"{v:g}" for v in saved.get("nag", ())) or "none", ",".join(f"{v:g}" for v in config.nag) or "none"),
             "guidance-interval": (interval_flag(saved.get("guidance_interval", ())) or "none",
                                   interval_flag(config.guidance_interval) or "none")}
    if config.train != "adapter":
        asked["attention"] = (saved.get("attention_context", "reference"), config.attention_context)
    if config.train != "sharpener":
        asked["adapter-rank"] = (saved.get("adapter_rank"), config.adapter_rank)
        asked["adapter-layers"] = (saved.get("adapter_layers"), config.adapter_layers)
    for flag, (was, now) in asked.items():
        if was != now:
            raise SystemExit(f"--resume: {resume} was trained with --{flag} {was}, this run asks for --{flag} {now}; "
                             f"pass --{flag} {was}")


def anchor_flag(anchor) -> str:
    """--extra-anchor as typed ("8,0.2"), or "none"."""
    return f"{anchor[0]:g},{anchor[1]:g}" if anchor[1] > 0 else "none"


def knob_exponents(config: TrainConfig) -> dict[str, float]:
    """The file's knob exponent (the one hosts read) and, where sampling reads the knob with another, the trained one."""
    sampling = config.knob_sampling_exponent
    if not sampling or sampling == config.knob_exponent:
        return {"knob_exponent": config.knob_exponent}
    return {"knob_exponent": sampling, "knob_trained_exponent": config.knob_exponent}


def interval_flag(interval) -> str:
    """--guidance-interval as typed ("0,0.8"), or "" for CFG at every noise level."""
    return ",".join(f"{v:g}" for v in interval)


def parse_interval(text: str) -> tuple[float, ...]:
    """--guidance-interval (or a file's guidance_interval) as numbers: (LOW, HIGH), or () for "", "none"; ValueError
    naming what is wrong unless 0 <= LOW < HIGH <= 1."""
    if not text or text == "none":
        return ()
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError("give the noise levels CFG applies at as LOW,HIGH, e.g. 0,0.8") from None
    if not 0 <= low < high <= 1:
        raise ValueError("must satisfy 0 <= LOW < HIGH <= 1 (1 is pure noise, 0 clean)")
    return low, high


def range_flag(low: float, high: float) -> str:
    """--guidance-range as typed ("2,9"), or "none" for a run at one scale."""
    return f"{low:g},{high:g}" if high > low else "none"


def save_student(student: Student, config: TrainConfig, info: RunInfo, out: Path, adapter_out: Path | None) -> list[Path]:
    """The trained parts' files: the sharpener at out, the adapter (a LoRA in kohya's layout) at adapter_out."""
    written = []
    if student.sharpener is not None:
        save_sharpener(out, student.sharpener.cpu(), TrainingInfo(
            model_family=info.model_family, base_checkpoint=info.base_checkpoint,
            base_checkpoint_sha256=info.base_checkpoint_sha256, guidance_scale=config.guidance,
            clip_skip=info.clip_skip, prediction_type=info.prediction_type,
            trained_with_negatives=bool(config.negatives), default_alpha=1.0, training_steps=config.steps))
        written.append(out)
    if student.adapter is not None:
        save_adapter(adapter_out, student.adapter, AdapterInfo(
            model_family=info.model_family, base_checkpoint=info.base_checkpoint,
            base_checkpoint_sha256=info.base_checkpoint_sha256, guidance_scale=config.guidance,
            prediction_type=info.prediction_type, clip_skip=info.clip_skip, training_steps=config.steps,
            sharpener=out.name if student.sharpener is not None else "", base_fingerprint=info.base_fingerprint,
            **({"guidance_min": config.guidance_min, "guidance_max": config.guidance_max,
                **knob_exponents(config)} if guidance_range(config) else {}),
            **(dict(zip(("nag_scale", "nag_tau", "nag_alpha"), config.nag)) if config.nag else {}),
            **({"init_adapter": f"{Path(config.init_adapter).name} sha256:{file_sha256(config.init_adapter)}"}
               if config.init_adapter else {}),
            **({"guidance_interval": interval_flag(config.guidance_interval)} if config.guidance_interval else {})))
        written.append(adapter_out)
    return written


def train(config: TrainConfig, backend: DiffusionBackend, info: RunInfo, run_dir: Path, out: Path,
          resume: Path | None = None, log=print, adapter_out: Path | None = None) -> dict:
    """Train a sharpener, a guidance adapter or both for backend; returns the summary. Run by every process under
    torchrun."""
    dist = Distributed.start()
    torch.manual_seed(config.seed)  # the same initial student in every process
    student = make_student(config, backend, dist.device)
    if student.adapter is not None:  # the adapter's hooks leave the model's own weights as the checkpoint has them
        model = backend.adapter_model()
        info = replace(info, base_fingerprint=weight_fingerprint(lambda path: model.get_submodule(path).weight,
                                                                 student.adapter.paths))
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    average = WeightAverage(student, config.ema) if config.ema else None
    averaged = average.swapped_in if average is not None else contextlib.nullcontext
    generator = torch.Generator().manual_seed(config.seed + 1000 * dist.rank)
    scales = guidance_range(config)
    interval = tuple(config.guidance_interval) or None
    runs = TrajectoryStates(backend, config.guidance, config.negatives, scales, config.negative_share,
                            guidance_anchors(config), draws_per_state=config.draws_per_state, interval=interval) \
        if config.inputs == "cfg-runs" else None

    def draw(count: int, source: torch.Generator) -> dict:
        """count training samples: forward-noised data, or states of CFG's own sampling runs."""
        if runs is not None:
            return runs.draw(count, source, dist.device)
        return make_batch(backend, count, source, config.negatives, dist.device, scales, config.negative_share,
                          guidance_anchors(config))

    start = 0
    if resume is not None:
        state = load_state(resume)
        check_resumable(state, config, resume)
        if student.sharpener is not None:
            student.sharpener.load_state_dict(state["sharpener"])
        if student.adapter is not None:
            student.adapter.load_state_dict(state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        if average is not None and "average" in state:
            average.load_state_dict(state["average"])
        elif average is not None:
            log(f"{resume} holds no weight average: the average starts at step {start}")
        if dist.world_size == 1:
            generator.set_state(state["generator"])
        else:
            generator.manual_seed(config.seed + 1000 * dist.rank + start)
        log(f"resumed from {resume} at step {start}")
        if config.lr_schedule != "constant" and state["config"].get("steps") != config.steps:
            log(f"the {config.lr_schedule} learning-rate schedule now ends at step {config.steps}, not "
                f"{state['config'].get('steps')}: the rest of the run follows the new length")
    model = dist.wrap(student)
    scaler = loss_scaler(backend.compute_dtype, dist.device)
    if dist.is_main:
        log(f"training {student.describe()} for {info.base_checkpoint} "
            f"(width {backend.embed_dim}, {dtype_name(backend.compute_dtype)}"
            f"{', loss scaling' if scaler.is_enabled() else ''}) on {dist.world_size} process(es), "
            f"{config.batch} samples each, {config.steps} steps")
    probe = torch.Generator().manual_seed(1)
    warm_up_message = ("out of memory in the warm-up step before training: pass a smaller --micro-batch (or "
                       "--checkpointing on, or a lower --resolution); other programs using the GPU, such as a running "
                       "ComfyUI, also take memory")
    with out_of_memory_stops(lambda: warm_up_message):
        plan = make_plan(backend, model, lambda count: draw(count, probe),
                         config.batch, config.guidance, config.loss, dist.device, config.micro_batch, config.checkpointing,
                         (lambda micro: runs.seconds_per_state(micro, probe)) if runs is not None else None)
    if runs is not None and resume is not None and "inputs" in state:
        runs.load_state_dict(state["inputs"])  # after the plan's warm-up draws, which a fresh run's pool also holds
    if dist.is_main:
        # Training latents a prompts-only run still has to draw, the held-out batch's included; on CFG's own runs
        # only the held-out batch's (the runs themselves are in the time of a sample).
        to_draw = getattr(backend, "latents_to_draw", lambda samples: 0)
        drawn = (lambda samples: config.eval_batch) if runs is not None else (lambda samples: samples + config.eval_batch)
        default_steps, default_batch = config.default_steps or config.steps, config.default_batch or config.batch
        for line in describe(plan, config.steps, start, config.batch, dist.world_size,
                             to_draw(drawn((config.steps - start) * config.batch * dist.world_size)),
                             default_steps, default_batch, to_draw(drawn(default_steps * default_batch))):
            log(line)
    # Uniform over the range whatever the anchor share, so runs of every share are scored on the same scales.
    held_out = make_batch(backend, config.eval_batch, torch.Generator().manual_seed(config.seed + 999_999),
                          config.negatives, dist.device, scales, config.negative_share)
    before = held_out_distances(backend, student, held_out, config.guidance, plan.micro_batch, interval)
    if dist.is_main:
        log(f"held-out distance to CFG: unguided {before['unguided_to_cfg']:.4f}, student {before['sharpened_to_cfg']:.4f}")
    progress = Progress(config.steps, "train", "steps", start=start) if dist.is_main else None
    training_seconds, samples_seen = 0.0, 0
    # A mix of models (the testbed's variants) puts each step's model in place; other backends are one model.
    at_step = getattr(backend, "at_step", lambda step: None)
    for step in range(start, config.steps):
        begun = time.time()
        at_step(step)
        batch = draw(config.batch, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.zero_grad(set_to_none=True)
        with out_of_memory_stops(lambda: out_of_memory_message(config, plan, step, run_dir)):
            loss = accumulate_gradients(model, backend, batch, plan.micro_batch, config.guidance, config.loss, scaler,
                                        interval)
        scaler.step(optimizer)
        scaler.update()
        if average is not None:
            average.update()
        training_seconds += time.time() - begun
        samples_seen += config.batch
        if dist.is_main:
            progress.update(step + 1, loss=loss)
            done = step + 1
            if config.save_every and (done % config.save_every == 0 or done == config.steps):
                save_state(run_dir / "checkpoint.pt", student, optimizer, done, generator, asdict(config),
                           inputs=runs.state_dict() if runs is not None else None,
                           average=average.state_dict() if average is not None else None)
            if config.sample_every and config.sample_prompts and (done % config.sample_every == 0 or done == config.steps):
                with averaged():
                    save_png(run_dir / "samples" / f"step{done:06d}.png",
                             sample_grid(backend, student, config.sample_prompts, config.sample_steps,
                                         config.guidance, plan.micro_batch))
    seconds = training_seconds
    at_step(0)  # the held-out distances before and after on the same model
    with averaged():  # what the file holds is what is scored
        after = held_out_distances(backend, student, held_out, config.guidance, plan.micro_batch, interval)
    summary = {"steps": config.steps, "resumed_at": start, "world_size": dist.world_size,
               "samples_per_second": dist.mean(samples_seen / max(seconds, 1e-9)) * dist.world_size,
               "seconds": round(seconds, 1), "held_out_before": before, "held_out_after": after,
               # One training sample's cost in units of one plain UNet call on one sample.
               "unet_call_equivalents_per_sample": round(seconds / max(samples_seen, 1) / plan.forward_seconds_per_sample, 2),
               "micro_batch": plan.micro_batch, "activation_checkpointing": plan.checkpointing,
               "precision": dtype_name(backend.compute_dtype),
               "memory_per_sample": {"teacher": plan.teacher_bytes, "student": plan.student_bytes},
               "out": str(out) if student.sharpener is not None else None,
               "adapter_out": str(adapter_out) if student.adapter is not None else None}
    if dist.is_main:
        with averaged():
            written = save_student(student, config, info, out, adapter_out)
        write_atomic(run_dir / "summary.json", lambda t: t.write_text(json.dumps(summary, indent=2) + "\n"))
        log(f"done in {format_seconds(seconds)}: {summary['samples_per_second']:.1f} samples/s; held-out distance "
            f"to CFG: unguided {after['unguided_to_cfg']:.4f}, student {after['sharpened_to_cfg']:.4f} "
            f"(ratio {after['ratio']:.3f}); wrote {' and '.join(str(p) for p in written)}")
    dist.barrier()
    dist.stop()
    return summary
