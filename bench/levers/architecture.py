"""Lever: the sharpener's network. The main job's training with another block, scored as bench/frontier.py does.

    python bench/levers/architecture.py --variant skip --prompt-seed 11 --prompts 500

skip: the pack's network with the token's own hidden vector added to what its attention gathers (a residual path,
so each token's output need not come only through attention). deep: two pre-norm transformer blocks (self-attention
over the prompt's and the reference's tokens, then an MLP) at --hidden width, its output layer zeroed at the start.
paper: the pack's own network, for a same-run baseline. Prints the held-out distance ratio the trainer prints
(its batch and seed) and alignment / FD at 10 and 20 calls for each α.
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
from dice_pack.sharpeners import Sharpener, SharpenerConfig, sharpen  # noqa: E402
from dice_pack.sharpeners.network import CrossAttention  # noqa: E402


class SkipSharpener(Sharpener):
    """The pack's network plus a residual path: each token's hidden vector is added to its attention output."""

    def forward(self, c: torch.Tensor, c_ref: torch.Tensor) -> torch.Tensor:
        query = F.relu(self.fc1(c))
        context = F.relu(self.fc1(torch.cat([c, c_ref], dim=1)))
        return self.fc2(F.relu(self.attention(query, context) + query))


class DeepSharpener(Sharpener):
    """Two pre-norm transformer blocks over the prompt's and the reference's tokens; returns the prompt's part."""

    def __init__(self, config: SharpenerConfig) -> None:
        super().__init__(config)
        width = config.hidden_dim
        self.attention2 = CrossAttention(width, config.num_heads)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(4))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
                                  for _ in range(2))
        nn.init.zeros_(self.fc2.weight)  # the residual starts at zero, as the pack's starts near it
        nn.init.zeros_(self.fc2.bias)

    def forward(self, c: torch.Tensor, c_ref: torch.Tensor) -> torch.Tensor:
        x = self.fc1(torch.cat([c, c_ref], dim=1))
        for index, attention in enumerate((self.attention, self.attention2)):
            normed = self.norms[2 * index](x)
            x = x + attention(normed, normed)
            x = x + self.mlps[index](self.norms[2 * index + 1](x))
        return self.fc2(x[:, :c.shape[1]])


VARIANTS = {"paper": Sharpener, "skip": SkipSharpener, "deep": DeepSharpener}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--hidden", type=int, default=None, help="hidden width (default 512; 256 for deep, ~1 M parameters)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--alphas", default="0.5,0.75,1")
    options = parser.parse_args()
    from dice_pack.training.loop import held_out_distances, make_batch, single_call, teacher_noise
    from dice_pack.training.student import Student
    from dice_pack.training.testbed.model import Testbed
    from lever_common import fit_like_main_job, score_at_budgets

    torch.manual_seed(0)
    testbed = Testbed.load()
    hidden = options.hidden or (256 if options.variant == "deep" else 512)
    sharpener = VARIANTS[options.variant](SharpenerConfig(embed_dim=testbed.embed_dim, hidden_dim=hidden,
                                                          attention_context="prompt+reference"))
    print(f"{options.variant}: {sharpener.parameter_count():,} parameters", flush=True)

    def loss_of(batch, generator):
        with torch.no_grad():
            teacher = teacher_noise(testbed, batch, 5.0)
        return F.l1_loss(single_call(testbed, batch, batch["c"] + sharpener(batch["c"], batch["c_ref"])), teacher)

    fit_like_main_job(testbed, sharpener, loss_of, options.steps)
    held_out = make_batch(testbed, 64, torch.Generator().manual_seed(999_999), [], torch.device("cpu"))
    print(f"held-out distance ratio {held_out_distances(testbed, Student(sharpener), held_out, 5.0)['ratio']:.3f}", flush=True)
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    context, null = testbed.encode_prompts(scorer.captions[:options.prompts]), testbed.null_embedding()
    for alpha in (float(a) for a in options.alphas.split(",")):
        score_at_budgets(testbed, scorer, f"{options.variant}, α {alpha:g}", sharpen(sharpener, context, null, alpha))


if __name__ == "__main__":
    main()
