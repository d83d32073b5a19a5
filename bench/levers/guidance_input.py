"""Lever: a guidance-conditioned sharpener, w as an input, trained over a range of w (TeEFusion's encoding of w).

    python bench/levers/guidance_input.py --prompt-seed 11 --prompts 500 --guidances 2,3,5,8

The pack's network with w's sinusoidal embedding, through a small MLP (last layer zeroed at the start), added to
its hidden query; each training sample draws w uniformly from --range and is taught CFG at that w, otherwise as the
main job (forward-noised data, one-step L1, 1,200 steps of 32, lr 1e-3). At sampling the knob is w itself (α = 1):
scored at 10 and 20 calls for each of --guidances, as bench/frontier.py scores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import Scorer, load_pack  # noqa: E402

load_pack()
from dice_pack.sharpeners import Sharpener, SharpenerConfig  # noqa: E402

from dice_pack.training.testbed.models import timestep_embedding  # noqa: E402
from dice_pack.training.testbed.teefusion import GUIDANCE_RANGE, GUIDANCE_TO_TIMESTEP  # noqa: E402

EMBEDDING_WIDTH = 64


def guidance_embedding(w: torch.Tensor) -> torch.Tensor:
    """w embedded as the TeEFusion-style student embeds it: the UNet's sinusoidal timestep embedding on w × 100."""
    return timestep_embedding(w * GUIDANCE_TO_TIMESTEP, EMBEDDING_WIDTH)


class GuidanceSharpener(Sharpener):
    """The pack's network; w's embedding shifts every token's hidden query."""

    def __init__(self, config: SharpenerConfig) -> None:
        super().__init__(config)
        self.guidance = nn.Sequential(nn.Linear(EMBEDDING_WIDTH, config.hidden_dim), nn.SiLU(),
                                      nn.Linear(config.hidden_dim, config.hidden_dim))
        nn.init.zeros_(self.guidance[2].weight)
        nn.init.zeros_(self.guidance[2].bias)

    def forward(self, c: torch.Tensor, c_ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        query = F.relu(self.fc1(c) + self.guidance(guidance_embedding(w))[:, None])
        context = F.relu(self.fc1(torch.cat([c, c_ref], dim=1)))
        return self.fc2(F.relu(self.attention(query, context)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--range", default=",".join(f"{w:g}" for w in GUIDANCE_RANGE), help="lowest and highest w "
                        "trained on (default: the TeEFusion-style student's)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--guidances", default="2,3,5,8")
    options = parser.parse_args()
    from dice_pack.training.loop import single_call, teacher_noise
    from dice_pack.training.testbed.model import Testbed
    from lever_common import fit_like_main_job, score_at_budgets

    low, high = (float(v) for v in options.range.split(","))
    torch.manual_seed(0)
    testbed = Testbed.load()
    sharpener = GuidanceSharpener(SharpenerConfig(embed_dim=testbed.embed_dim, attention_context="prompt+reference"))

    def loss_of(batch, generator):
        w = low + (high - low) * torch.rand(len(batch["x"]), generator=generator)
        with torch.no_grad():  # CFG's formula takes a per-sample scale as well as one number
            teacher = teacher_noise(testbed, batch, w.view(-1, 1, 1, 1))
        residual = sharpener(batch["c"], batch["c_ref"], w)
        return F.l1_loss(single_call(testbed, batch, batch["c"] + residual), teacher)

    fit_like_main_job(testbed, sharpener, loss_of, options.steps)
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    context = testbed.encode_prompts(scorer.captions[:options.prompts])
    null = testbed.null_embedding().expand_as(context)
    for w in (float(v) for v in options.guidances.split(",")):
        with torch.no_grad():
            sharpened = context + sharpener(context, null, torch.full((len(context),), w))
        score_at_budgets(testbed, scorer, f"guidance-conditioned, w {w:g}", sharpened)


if __name__ == "__main__":
    main()
