"""Lever: the one-step noise objective on the states a sampling run visits, not on forward-noised data.

    python bench/levers/sampler_states.py --source cfg --out outputs/lever_cfg_states.safetensors

Each step runs DPM-Solver++(2M) for 10 or 20 steps (alternating) on --trajectories pool captions with fresh seeds,
driven by CFG (--source cfg, as guidance-distillation work does) or by the sharpened single call (--source student,
the sampler's own states), and fits the sharpener to CFG's noise prediction at every visited state. --weight x0
weights each state's error by σ (the error of the denoised image rather than of the noise). Evaluate the file with
bench/frontier.py. One of the README's lever experiments; the trainer keeps the paper's forward-noised data.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import load_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--trajectories", type=int, default=8, help="sampling runs per step (10–20 states each)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--source", choices=["cfg", "student"], default="cfg")
    parser.add_argument("--weight", choices=["eps", "x0"], default="eps")
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    load_pack()
    from dice_pack.sharpeners import Sharpener, SharpenerConfig
    from dice_pack.training.sampler import initial_noise, sampling_run
    from dice_pack.training.loop import teacher_noise
    from lever_common import Fit, caption_pool

    torch.manual_seed(0)
    testbed, pool, null = caption_pool()
    sharpener = Sharpener(SharpenerConfig(embed_dim=testbed.embed_dim, attention_context="prompt+reference"))
    optimizer = torch.optim.AdamW(sharpener.parameters(), lr=options.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(1)
    fit = Fit(sharpener, optimizer, options.steps, report_every=100)
    for step in range(options.steps):
        c = pool[torch.randint(0, len(pool), (options.trajectories,), generator=generator)]
        seeds = torch.randint(0, 2 ** 31 - 1, (options.trajectories,), generator=generator).tolist()
        sigmas = testbed.sampling_sigmas(10 if step % 2 == 0 else 20)
        states, levels, teachers = [], [], []
        with torch.no_grad():
            driver = None if options.source == "cfg" else c + sharpener(c, null.expand_as(c))

            def visit(x, sigma):
                """Record the state and CFG's prediction there; move on with CFG's or the student's."""
                teacher = teacher_noise(testbed, {"x": x, "sigma": sigma, "c": c, "c_ref": null.expand_as(c)}, 5.0)
                states.append(x), levels.append(sigma), teachers.append(teacher)
                return teacher if driver is None else testbed.predict_noise(x, sigma, driver)

            sampling_run(visit, initial_noise(seeds, testbed.latent_shape) * sigmas[0], sigmas)
        x, sigma, teacher = torch.cat(states), torch.cat(levels), torch.cat(teachers)
        context = c.repeat(len(states), 1, 1)
        student = testbed.predict_noise(x, sigma, context + sharpener(context, null.expand_as(context)))
        weight = torch.ones_like(sigma) if options.weight == "eps" else sigma
        loss = ((student - teacher).abs() * (weight / weight.mean()).view(-1, 1, 1, 1)).mean()
        fit.step(step, loss)
    fit.save(options.out)


if __name__ == "__main__":
    main()
