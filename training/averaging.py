"""A moving average of the trained weights (EMA), written as the run's file in place of the last step's weights.

Between checkpoints of one constant-rate run the bench moves by more than a long stretch of training gains, and an
average over the last steps drops that step-to-step noise; on the testbed's knob it also lagged the trend and was not
better than the last step (docs/research.md), so it is an option, off by default.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightAverage:
    """The mean of every update so far until 1 / (1 − decay) updates, an exponential average with that horizon after:
    no bias towards the start (LoRA's zero), and the last ~1 / (1 − decay) steps' weights once the run is longer."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"a weight average's decay must be above 0 and below 1, not {decay:g}")
        self.decay = decay
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        keep = min(self.decay, 1 - 1 / self.updates)  # the first update takes the weights as they are
        for average, parameter in zip(self.average, self.parameters):
            average.lerp_(parameter.detach(), 1 - keep)

    @contextlib.contextmanager
    def swapped_in(self):
        """The averaged weights in the module for this block (saving, sampling, scoring), the trained ones after."""
        trained = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for parameter, average in zip(self.parameters, self.average):
                parameter.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, weights in zip(self.parameters, trained):
                    parameter.copy_(weights)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError(f"the saved weight average has {len(state['average'])} tensors, this run's student "
                             f"{len(self.average)}")
        self.updates = int(state["updates"])
        for average, saved in zip(self.average, state["average"]):
            average.copy_(saved)
