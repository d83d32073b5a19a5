"""Lever: a noise-level-aware sharpener, one learned offset of its hidden query per band of noise levels.

    python bench/levers/noise_bands.py --bands 4 --prompt-seed 11 --prompts 500 --alphas 0.75 1 1,0.75,0.5,0.25

Trains like the main job (forward-noised data, the paper's one-step L1 to CFG, 1,200 steps of 32, lr 1e-3) with the
band of each sample's noise level as an extra input (bands split the 1,000 timesteps evenly, band 0 the least
noisy), then samples DPM-Solver++(2M) at 10 and 20 steps with each step's embedding taken from its band, as
Sharpen Conditioning would emit one entry per band, and scores them as bench/frontier.py does. --alphas: one α
for every band, or one per band, comma-separated.
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


class BandSharpener(Sharpener):
    """The default sharpener plus a per-band offset added to its hidden query (zero at the start)."""

    def __init__(self, embed_dim: int, bands: int) -> None:
        super().__init__(SharpenerConfig(embed_dim=embed_dim, attention_context="prompt+reference"))
        self.band = nn.Embedding(bands, self.config.hidden_dim)
        nn.init.zeros_(self.band.weight)

    def forward(self, c: torch.Tensor, c_ref: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
        query = F.relu(self.fc1(c) + self.band(band)[:, None])
        context = F.relu(self.fc1(torch.cat([c, c_ref], dim=1)))
        return self.fc2(F.relu(self.attention(query, context)))


def band_of(testbed, sigma: torch.Tensor, bands: int) -> torch.Tensor:
    return (testbed.schedule.timestep(sigma) * bands / 1000).long().clamp(0, bands - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--alphas", nargs="+", default=["0.75", "1"])
    options = parser.parse_args()
    from dice_pack.training.loop import teacher_noise
    from dice_pack.training.sampler import sample
    from dice_pack.training.testbed.model import Testbed
    from lever_common import fit_like_main_job

    torch.manual_seed(0)
    testbed = Testbed.load()
    sharpener = BandSharpener(testbed.embed_dim, options.bands)

    def loss_of(batch, generator):
        with torch.no_grad():
            teacher = teacher_noise(testbed, batch, 5.0)
        residual = sharpener(batch["c"], batch["c_ref"], band_of(testbed, batch["sigma"], options.bands))
        return F.l1_loss(testbed.predict_noise(batch["x"], batch["sigma"], batch["c"] + residual), teacher)

    fit_like_main_job(testbed, sharpener, loss_of, options.steps)
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    context, null = testbed.encode_prompts(scorer.captions[:options.prompts]), testbed.null_embedding()
    for text in options.alphas:
        alphas = [float(a) for a in text.split(",")]
        alphas = alphas * options.bands if len(alphas) == 1 else alphas
        with torch.no_grad():  # one embedding per band, stacked along the tokens so the sampler batches them
            per_band = torch.cat([context + alphas[k] * sharpener(context, null.expand_as(context),
                                                                  torch.full((len(context),), k))
                                  for k in range(options.bands)], dim=1)

        def predict(x, sigma, stacked):
            band = int(band_of(testbed, sigma[:1], options.bands))
            return testbed.predict_noise(x, sigma, stacked.unflatten(1, (options.bands, -1))[:, band])

        for steps in (10, 20):
            latents = torch.cat([sample(predict, per_band[i:i + 250], testbed.sampling_sigmas(steps),
                                        list(range(i, min(i + 250, len(context)))), testbed.latent_shape)
                                 for i in range(0, len(context), 250)])
            figures = scorer.score(testbed.decode(latents))
            print(f"bands {options.bands}, α {text}, {steps} steps ({steps} calls): alignment "
                  f"{figures['alignment']:.1f} %, FD {figures['fd']:.1f}", flush=True)


if __name__ == "__main__":
    main()
