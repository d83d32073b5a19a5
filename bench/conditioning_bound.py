"""How close can any conditioning get to CFG? One free offset per prompt, fitted to the CFG teacher.

    python bench/conditioning_bound.py [--prompts 32 --steps 600 --lr 0.01]

DICE can only change the text embedding, and one embedding serves every noise level. This fits, for a fixed set
of testbed prompts, a free offset per prompt (no network, no sharing between prompts) to the CFG teacher on fresh
noise at every step, and reports the held-out distance ratio |eps(c + o) − eps_CFG| / |eps(c) − eps_CFG| on other
noise for the same prompts: the trainer's ratio for a sharpener that had memorised each prompt. With --images N it
then samples N seeds of every prompt (DPM-Solver++(2M), --sample-steps) with the fitted embeddings, unguided and with
CFG, and reports their alignment: how much of CFG's image quality any single embedding per prompt reaches under the
one-step noise objective. Prints the ratio as it falls and, on its last line, one JSON object.

Other objectives, to see whether any of them lets an embedding reach further: --min-timestep T draws training noise
levels from timesteps T…999 only (the noisy end, where composition forms); --objective x0 weights each error by σ (the
denoised image's error); --objective endpoint fits the offsets so that a --run-steps DPM-Solver++(2M) run from a
fresh seed ends where CFG's 20-step run from the same seed ends (L2 on the final latent, backpropagated through the
run).
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
    parser.add_argument("--objective", choices=["eps", "x0", "endpoint"], default="eps")
    parser.add_argument("--min-timestep", type=int, default=0, help="train on timesteps from this one to 999 only")
    parser.add_argument("--run-steps", type=int, default=10, help="sampling steps of the fitted run (endpoint)")
    options = parser.parse_args()
    load_pack()
    from dice_pack.training.loop import teacher_noise
    from dice_pack.training.sampler import initial_noise, sample, sampling_run
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

    def noisy_batch(seed: int, min_timestep: int = 0):
        """Fresh images of the same prompts at random noise levels (timesteps min_timestep…999)."""
        generator, draw = torch.Generator().manual_seed(seed), random.Random(seed)
        x0 = testbed.encode_images(np.stack([render(draw, realise(draw, scene)) for scene in named]))
        timesteps = torch.randint(min_timestep, len(testbed.schedule.sigmas), (len(named),), generator=generator)
        sigma = testbed.schedule.sigmas[timesteps]
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

    def one_step_loss(step: int) -> torch.Tensor:
        x, sigma = noisy_batch(step, options.min_timestep)
        with torch.no_grad():
            teacher = teacher_noise(testbed, {"x": x, "sigma": sigma, "c": c, "c_ref": null}, options.guidance)
        weight = sigma if options.objective == "x0" else torch.ones_like(sigma)
        error = (testbed.predict_noise(x, sigma, c + offset) - teacher).abs()
        return (error * (weight / weight.mean()).view(-1, 1, 1, 1)).mean()

    def endpoint_loss(step: int) -> torch.Tensor:
        seeds = torch.randint(100_000, 2 ** 31 - 1, (len(named),), generator=torch.Generator().manual_seed(step)).tolist()
        target = sample(testbed.predict_noise, c, testbed.sampling_sigmas(20), seeds, testbed.latent_shape, null,
                        options.guidance)
        sigmas, context = testbed.sampling_sigmas(options.run_steps), c + offset
        end = sampling_run(lambda x, sigma: testbed.predict_noise(x, sigma, context),
                           initial_noise(seeds, testbed.latent_shape) * sigmas[0], sigmas)
        return F.mse_loss(end, target)

    history = []
    for step in range(options.steps):
        loss = endpoint_loss(step) if options.objective == "endpoint" else one_step_loss(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == options.steps:
            history.append({"step": step + 1, "ratio": ratio(), "offset_norm_over_c": float(offset.detach().norm() / c.norm())})
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
    print(json.dumps({"prompts": options.prompts, "steps": options.steps, "lr": options.lr,
                      "objective": options.objective, "min_timestep": options.min_timestep, "history": history,
                      "final_ratio": history[-1]["ratio"], "alignment": images}))


if __name__ == "__main__":
    main()
