"""What the lever experiments share: the testbed with its training captions encoded once, and the fitting loop."""
from __future__ import annotations

import time

import torch


def caption_pool(size: int = 2000):
    """The testbed, the trainer's caption pool (same seed) as embeddings, and the empty prompt's embedding."""
    from dice_pack.training.testbed.model import Testbed, training_pool

    testbed = Testbed.load()
    captions = [text for _, text in training_pool(size)]
    pool = torch.cat([testbed.encode_prompts(captions[i:i + 500]) for i in range(0, size, 500)])
    return testbed, pool, testbed.null_embedding()


class Fit:
    """One optimizer step per call of step(loss), a line of progress now and then, and the file at the end."""

    def __init__(self, sharpener, optimizer, steps: int, report_every: int) -> None:
        self.sharpener, self.optimizer, self.steps, self.report_every = sharpener, optimizer, steps, report_every
        self.begun = time.time()

    def step(self, index: int, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if index % self.report_every == 0 or index + 1 == self.steps:
            print(f"step {index + 1}/{self.steps} loss {loss.item():.4f} ({time.time() - self.begun:.0f} s)", flush=True)

    def save(self, out: str) -> None:
        from dice_pack.sharpeners import TrainingInfo, save_sharpener

        save_sharpener(out, self.sharpener.eval(), TrainingInfo(
            model_family="testbed-minilm", base_checkpoint="dice-testbed", training_steps=self.steps))
        print(f"wrote {out}")


def fit_like_main_job(testbed, sharpener, loss_of, steps: int = 1200, batch: int = 32, lr: float = 1e-3) -> None:
    """The main job's training (forward-noised data, AdamW, constant lr, batch 32) with loss_of(batch, generator) as the
    objective, so a lever changes only what loss_of and the network do."""
    from dice_pack.training.loop import make_batch

    optimizer = torch.optim.AdamW(sharpener.parameters(), lr=lr, weight_decay=0.01)
    generator, fit = torch.Generator().manual_seed(1), Fit(sharpener, optimizer, steps, report_every=200)
    for step in range(steps):
        fit.step(step, loss_of(make_batch(testbed, batch, generator, [], torch.device("cpu")), generator))
    sharpener.eval()


def score_at_budgets(testbed, scorer, label: str, context: torch.Tensor, budgets=(10, 20)) -> None:
    """Alignment and FD of one call per step on context (one row per held-out prompt), one line per budget."""
    seeds = list(range(len(context)))
    for steps in budgets:
        figures = scorer.score(testbed.generate(context, seeds, steps=steps))
        print(f"{label}, {steps} steps ({steps} calls): alignment {figures['alignment']:.1f} %, FD {figures['fd']:.1f}",
              flush=True)
