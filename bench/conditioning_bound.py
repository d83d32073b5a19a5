"""How close can any conditioning get to CFG? One free offset per prompt, fitted to the CFG teacher.

    python bench/conditioning_bound.py [--prompts 32 --steps 600 --lr 0.01]

DICE can only change the text embedding, and one embedding serves every noise level. This fits, for a fixed set
of testbed prompts, a free offset per prompt (no network, no sharing between prompts) to the CFG teacher on fresh
noise at every step, and reports the held-out distance ratio |eps(c + o) − eps_CFG| / |eps(c) − eps_CFG| on other
noise for the same prompts: the trainer's ratio for a sharpener that had memorised each prompt. With --images N it
then samples N seeds of every prompt (DPM-Solver++(2M), --sample-steps) with the fitted embeddings, unguided and with
CFG, and reports their alignment: how much of CFG's image quality any single embedding per prompt reaches under the
one-step noise objective. Prints the ratio as it falls and, on its last line, one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
import torch.nn.functional as F

from common import load_pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--images", type=int, default=0, help="seeds per prompt to sample with the fitted offsets")
    parser.add_argument("--sample-steps", type=int, default=20)
    options = parser.parse_args()
    load_pack()
    from dice_pack.training.loop import teacher_noise
    from dice_pack.training.testbed.evaluator import alignment
    from dice_pack.training.testbed.data import caption, random_named_scene, realise, render
    from dice_pack.training.testbed.model import Testbed

    torch.manual_seed(0)
    testbed = Testbed.load()
    rng = random.Random(5)
    named = [random_named_scene(rng) for _ in range(options.prompts)]
    c = testbed.encode_prompts([caption(rng, scene) for scene in named])
    null = testbed.null_embedding().expand_as(c)
    offset = torch.zeros_like(c, requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=options.lr)

    def noisy_batch(seed: int):
        """Fresh images of the same prompts at random noise levels."""
        generator, draw = torch.Generator().manual_seed(seed), random.Random(seed)
        x0 = testbed.encode_images(np.stack([render(draw, realise(draw, scene)) for scene in named]))
        sigma = testbed.sample_sigmas(len(named), generator)
        return x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=generator), sigma

    held_out = [noisy_batch(10_000 + i) for i in range(4)]

    @torch.no_grad()
    def ratio() -> float:
        near = far = 0.0
        for x, sigma in held_out:
            teacher = teacher_noise(testbed, {"x": x, "sigma": sigma, "c": c, "c_ref": null}, options.guidance)
            far += float((testbed.predict_noise(x, sigma, c) - teacher).abs().mean())
            near += float((testbed.predict_noise(x, sigma, c + offset) - teacher).abs().mean())
        return near / far

    history = []
    for step in range(options.steps):
        x, sigma = noisy_batch(step)
        with torch.no_grad():
            teacher = teacher_noise(testbed, {"x": x, "sigma": sigma, "c": c, "c_ref": null}, options.guidance)
        loss = F.l1_loss(testbed.predict_noise(x, sigma, c + offset), teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == options.steps:
            history.append({"step": step + 1, "ratio": ratio(), "offset_norm_over_c": float(offset.norm() / c.norm())})
            print(f"step {step + 1}: held-out ratio {history[-1]['ratio']:.3f}, |offset|/|c| "
                  f"{history[-1]['offset_norm_over_c']:.2f}", flush=True)
    images = {}
    if options.images:
        seeds = list(range(options.images * options.prompts))
        repeat = lambda t: t.repeat_interleave(options.images, dim=0)  # noqa: E731
        scenes = [scene for scene in named for _ in range(options.images)]
        for label, context, scale in (("unguided", c, 1.0), ("cfg", c, options.guidance),
                                      ("fitted offsets", (c + offset).detach(), 1.0)):
            generated = testbed.generate(repeat(context), seeds, steps=options.sample_steps, cfg_scale=scale)
            images[label] = alignment(generated, scenes)
            print(f"{label}: alignment {images[label]:.1f} % over {len(seeds)} images", flush=True)
    print(json.dumps({"prompts": options.prompts, "steps": options.steps, "lr": options.lr, "history": history,
                      "final_ratio": history[-1]["ratio"], "alignment": images}))


if __name__ == "__main__":
    main()
