"""Training inputs from CFG's own sampling runs, as adapter guidance distillation (AGD) trains: the states a CFG-guided
DPM-Solver++(2M) run visits on a training caption, rather than forward-noised data. The student then learns CFG where
CFG's sampler actually goes, which forward noising of real latents does not show it."""
from __future__ import annotations

import random
import time

import torch

from .backend import DiffusionBackend
from .sampler import guided, guided_at, initial_noise, sampling_run
from .step import draw_guidance, negative_marks, per_sample, reference_prompts, teacher_noise

STEP_COUNTS = (10, 20)  # each block runs captions with both, so states cover both schedules users run
POOL_BATCHES = 16  # states of at least this many recent batches are kept, so one batch mixes many captions
RUNS_AT_ONCE = 64  # most runs in one batched call: a call's cost per sample levels off about there on CPU and GPU


class TrajectoryStates:
    """A pool of (x_σ, σ, caption, reference, w, CFG's prediction) from recent CFG sampling runs. Runs go in blocks, as
    many at once as a teacher's call holds (the cost of a call per sample falls with its batch), and a block is run
    when the states not yet drawn fall short of a draw, so every state is used about once. With a guidance range each
    run draws its own CFG scale w, and its states are taught CFG at that w: the prediction the run made there, which is
    the teacher's, so the teacher's call is not made again."""

    def __init__(self, backend: DiffusionBackend, guidance: float, negatives: list[str],
                 guidance_range: tuple[float, float] | None = None, negative_share: float = 1.0,
                 anchors: tuple[tuple[float, float], ...] = (), runs_per_call: int = 1,
                 draws_per_state: int = 1, interval: tuple[float, float] | None = None) -> None:
        self.backend, self.guidance, self.negatives = backend, guidance, negatives
        self.interval = interval  # the noise levels CFG applies at, in the runs and their teaching (None: all)
        self.anchors = anchors
        self.guidance_range, self.negative_share = guidance_range, negative_share
        self.runs_per_call = runs_per_call  # small until the plan knows what a call holds
        self.draws_per_state = draws_per_state  # above 1, a run's calls are shared by that many training samples
        # A mix of models changes the model between steps: there a state's prediction is recomputed by the current one.
        self.keeps_teacher = not hasattr(backend, "at_step")
        self.states: list[tuple] = []
        self.runs = 0
        self.fresh = 0  # draws the states run so far still owe (each state's draws_per_state, less those made)

    @torch.no_grad()
    def _run(self, count: int, steps: int, generator: torch.Generator) -> None:
        """count CFG sampling runs of steps steps on training captions, batched; every state they visit goes into the
        pool with CFG's prediction there."""
        prompts = self.backend.sample_captions(count, generator)
        rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
        references = reference_prompts(count, self.negatives, rng, self.negative_share)
        sigmas = self.backend.sampling_sigmas(steps)
        seeds = torch.randint(0, 2 ** 31 - 1, (count,), generator=generator).tolist()
        c, c_ref = self.backend.encode_prompts(prompts), self.backend.encode_prompts(references)
        y, y_ref = self.backend.encode_vectors(prompts), self.backend.encode_vectors(references)
        w = draw_guidance(count, generator, self.guidance_range, self.anchors).get("w", torch.full((count,), float(self.guidance)))
        x = initial_noise(seeds, tuple(self.backend.latent_shape)).to(c.device) * sigmas[0]
        scale = per_sample(w.to(c.device), x.ndim) if self.guidance_range else self.guidance
        cfg = guided(self.backend.predict_noise, c, c_ref, scale, y, y_ref, self.backend.join_contexts,
                     guided_at(self.backend.noise_level, self.interval))

        def visit(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            eps = cfg(x, sigma)
            x_cpu, sigma_cpu, eps_cpu = x.cpu(), sigma.cpu(), eps.cpu() if self.keeps_teacher else [None] * count
            self.states += [(x_cpu[i], sigma_cpu[i], prompts[i], references[i], w[i], eps_cpu[i]) for i in range(count)]
            return eps

        before = len(self.states)
        sampling_run(visit, x, sigmas)
        self.runs += count
        self.fresh += (len(self.states) - before) * self.draws_per_state

    def _run_block(self, generator: torch.Generator) -> None:
        for steps in STEP_COUNTS:
            self._run(self.runs_per_call, steps, generator)

    def seconds_per_state(self, runs_per_call: int, generator: torch.Generator) -> float:
        """Set how many runs go in one call (at most RUNS_AT_ONCE) and time a block of them: the cost of one training
        input, a state's share when each is drawn draws_per_state times. The block's states stay in the pool."""
        self.runs_per_call = max(1, min(runs_per_call, RUNS_AT_ONCE))
        made, begun = len(self.states), time.perf_counter()
        self._run_block(generator)
        return (time.perf_counter() - begun) / max((len(self.states) - made) * self.draws_per_state, 1)

    def draw(self, count: int, generator: torch.Generator, device: torch.device) -> dict:
        """count states as a training batch (the keys make_batch gives, and "teacher", CFG's prediction, where the
        pool keeps it)."""
        while self.fresh < count:
            self._run_block(generator)
        self.fresh -= count
        keep = max(POOL_BATCHES * count, 2 * self.runs_per_call * sum(STEP_COUNTS))
        del self.states[:max(0, len(self.states) - keep)]
        return self._batch([self.states[i] for i in self._picks(count, generator)], device)

    def _batch(self, states: list[tuple], device: torch.device | None = None) -> dict:
        """states as a batch on device (default: where the text encoder puts its output), with CFG's prediction
        where they hold it."""
        x, sigma, prompts, references, w, eps = zip(*states)
        c = self.backend.encode_prompts(list(prompts))
        batch = {"x": torch.stack(x), "sigma": torch.stack(sigma), "c": c,
                 "c_ref": self.backend.encode_prompts(list(references)),
                 "y": self.backend.encode_vectors(list(prompts)), "y_ref": self.backend.encode_vectors(list(references)),
                 "w": torch.stack(w) if self.guidance_range else None,
                 "teacher": torch.stack(eps) if eps[0] is not None else None,
                 **negative_marks(list(references), self.negatives)}
        return {k: v.to(device or c.device) for k, v in batch.items() if v is not None}

    def _picks(self, count: int, generator: torch.Generator) -> list[int]:
        """count random states; where the model's sampler cannot join prompts of different token counts into one
        call, the rest from the first one's group (the UNets' draws are as they were)."""
        picks = torch.randint(0, len(self.states), (count,), generator=generator).tolist()
        group = self.backend.context_group(self.states[picks[0]][2])
        if group is None:
            return picks
        same = [i for i, state in enumerate(self.states) if self.backend.context_group(state[2]) == group]
        return [picks[0]] + [same[i] for i in torch.randint(0, len(same), (count - 1,), generator=generator).tolist()]

    def state_dict(self) -> dict:
        """The pool, so a resumed run draws exactly what an uninterrupted one would."""
        if not self.states:
            return {"runs": self.runs, "fresh": self.fresh}
        x, sigma, prompts, references, w, eps = zip(*self.states)
        return {"runs": self.runs, "fresh": self.fresh, "x": torch.stack(x), "sigma": torch.stack(sigma),
                "prompts": list(prompts), "references": list(references), "w": torch.stack(w),
                **({"teacher": torch.stack(eps)} if self.keeps_teacher else {})}

    def load_state_dict(self, state: dict) -> None:
        self.runs = state.get("runs", 0)
        self.fresh = state.get("fresh", 0)  # checkpoints written before blocks ran their states as they were drawn
        if "x" not in state:
            self.states = []
            return
        # Checkpoints written before the knob hold no w: their states were all taught CFG at the run's one scale.
        w = state.get("w", torch.full((len(state["x"]),), float(self.guidance)))
        eps = state.get("teacher")
        if eps is None:
            eps = self._teach(state["x"], state["sigma"], state["prompts"], state["references"], w)
        self.states = list(zip(state["x"], state["sigma"], state["prompts"], state["references"], w, eps))

    @torch.no_grad()
    def _teach(self, x: torch.Tensor, sigma: torch.Tensor, prompts: list[str], references: list[str],
               w: torch.Tensor) -> list:
        """CFG's predictions at states a checkpoint holds without them (written before the pool kept them), a call for
        each run's worth of states of one token group."""
        eps: list = [None] * len(x)
        if not self.keeps_teacher:
            return eps
        groups: dict = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(self.backend.context_group(prompt), []).append(index)
        size = max(self.runs_per_call, 1)
        for members in groups.values():
            for start in range(0, len(members), size):
                part = members[start:start + size]
                batch = self._batch([(x[i], sigma[i], prompts[i], references[i], w[i], None) for i in part])
                taught = teacher_noise(self.backend, batch, self.guidance, self.interval)
                for i, prediction in zip(part, taught.cpu()):
                    eps[i] = prediction
        return eps
