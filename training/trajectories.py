"""Training inputs from CFG's own sampling runs, as adapter guidance distillation (AGD) trains: the states a CFG-guided
DPM-Solver++(2M) run visits on a training caption, rather than forward-noised data. The student then learns CFG where
CFG's sampler actually goes, which forward noising of real latents does not show it."""
from __future__ import annotations

import math
import random

import torch

from .backend import DiffusionBackend
from .sampler import guided, initial_noise, sampling_run
from .step import draw_guidance, negative_marks, per_sample, reference_prompts

STEP_COUNTS = (10, 20)  # each run samples with one of these, so states cover both schedules users run
POOL_BATCHES = 16  # states of about this many recent batches are kept, so one batch mixes many captions


class TrajectoryStates:
    """A pool of (x_σ, σ, caption, reference, w) from recent CFG sampling runs; each draw runs enough new ones to add
    about as many states as it takes, so every state is used about once. With a guidance range each run draws its own
    CFG scale w, and its states are taught CFG at that w."""

    def __init__(self, backend: DiffusionBackend, guidance: float, negatives: list[str],
                 guidance_range: tuple[float, float] | None = None, negative_share: float = 1.0,
                 anchors: tuple[tuple[float, float], ...] = ()) -> None:
        self.backend, self.guidance, self.negatives = backend, guidance, negatives
        self.anchors = anchors
        self.guidance_range, self.negative_share = guidance_range, negative_share
        self.states: list[tuple[torch.Tensor, torch.Tensor, str, str, torch.Tensor]] = []
        self.runs = 0

    @torch.no_grad()
    def _run(self, count: int, generator: torch.Generator) -> None:
        """count CFG sampling runs on training captions, batched, with one step count; every state they visit goes
        into the pool."""
        prompts = self.backend.sample_captions(count, generator)
        rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
        references = reference_prompts(count, self.negatives, rng, self.negative_share)
        steps = STEP_COUNTS[int(torch.randint(0, len(STEP_COUNTS), (1,), generator=generator))]
        sigmas = self.backend.sampling_sigmas(steps)
        seeds = torch.randint(0, 2 ** 31 - 1, (count,), generator=generator).tolist()
        c, c_ref = self.backend.encode_prompts(prompts), self.backend.encode_prompts(references)
        y, y_ref = self.backend.encode_vectors(prompts), self.backend.encode_vectors(references)
        w = draw_guidance(count, generator, self.guidance_range, self.anchors).get("w", torch.full((count,), float(self.guidance)))
        x = initial_noise(seeds, tuple(self.backend.latent_shape)).to(c.device) * sigmas[0]
        scale = per_sample(w.to(c.device), x.ndim) if self.guidance_range else self.guidance
        cfg = guided(self.backend.predict_noise, c, c_ref, scale, y, y_ref, self.backend.join_contexts)

        def visit(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            self.states += [(x[i].cpu(), sigma[i].cpu(), prompts[i], references[i], w[i]) for i in range(count)]
            return cfg(x, sigma)

        sampling_run(visit, x, sigmas)
        self.runs += count

    def draw(self, count: int, generator: torch.Generator, device: torch.device) -> dict:
        """count states as a training batch (the keys make_batch gives)."""
        self._run(math.ceil(count / (sum(STEP_COUNTS) / len(STEP_COUNTS))), generator)
        del self.states[:max(0, len(self.states) - POOL_BATCHES * count)]
        picks = self._picks(count, generator)
        x, sigma, prompts, references, w = zip(*(self.states[i] for i in picks))
        batch = {"x": torch.stack(x), "sigma": torch.stack(sigma), "c": self.backend.encode_prompts(list(prompts)),
                 "c_ref": self.backend.encode_prompts(list(references)),
                 "y": self.backend.encode_vectors(list(prompts)), "y_ref": self.backend.encode_vectors(list(references)),
                 "w": torch.stack(w) if self.guidance_range else None, **negative_marks(list(references), self.negatives)}
        return {k: v.to(device) for k, v in batch.items() if v is not None}

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
            return {"runs": self.runs}
        x, sigma, prompts, references, w = zip(*self.states)
        return {"runs": self.runs, "x": torch.stack(x), "sigma": torch.stack(sigma), "prompts": list(prompts),
                "references": list(references), "w": torch.stack(w)}

    def load_state_dict(self, state: dict) -> None:
        self.runs = state.get("runs", 0)
        if "x" not in state:
            self.states = []
            return
        # Checkpoints written before the knob hold no w: their states were all taught CFG at the run's one scale.
        w = state.get("w", torch.full((len(state["x"]),), float(self.guidance)))
        self.states = list(zip(state["x"], state["sigma"], state["prompts"], state["references"], w))
