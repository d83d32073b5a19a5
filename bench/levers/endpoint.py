"""Lever: an objective on the image, not one step's noise: where the sharpened sampling run ends against CFG's.

    python bench/levers/endpoint.py --init outputs/testbed.safetensors --out outputs/lever_endpoint.safetensors

Each step samples --batch pool captions with fresh seeds twice: CFG at 20 DPM-Solver++(2M) steps (the target, no
gradient) and the sharpened single call at 10 or 20 steps (alternating), and fits the sharpener, through the whole
sampling run, to the L2 distance between the two final latents. Starts from a trained sharpener (--init): from
scratch it costs 1.5 s a step at batch 32 here. Evaluate the file with bench/frontier.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import load_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", required=True, help="the testbed sharpener to start from")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    load_pack()
    from dice_pack.sharpeners import load_sharpener
    from dice_pack.training.sampler import initial_noise, sample, sampling_run
    from lever_common import Fit, caption_pool

    torch.manual_seed(0)
    testbed, pool, null = caption_pool()
    sharpener = load_sharpener(options.init).network.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(sharpener.parameters(), lr=options.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(1)
    fit = Fit(sharpener, optimizer, options.steps, report_every=25)
    for step in range(options.steps):
        c = pool[torch.randint(0, len(pool), (options.batch,), generator=generator)]
        seeds = torch.randint(0, 2 ** 31 - 1, (options.batch,), generator=generator).tolist()
        target = sample(testbed.predict_noise, c, testbed.sampling_sigmas(20), seeds, testbed.latent_shape, null, 5.0)
        sigmas = testbed.sampling_sigmas(10 if step % 2 == 0 else 20)
        sharpened = c + sharpener(c, null.expand_as(c))
        end = sampling_run(lambda x, sigma: testbed.predict_noise(x, sigma, sharpened),
                           initial_noise(seeds, testbed.latent_shape) * sigmas[0], sigmas)
        loss = F.mse_loss(end, target)
        fit.step(step, loss)
    fit.save(options.out)


if __name__ == "__main__":
    main()
