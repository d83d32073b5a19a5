"""Train a UNet variant on the build's cached stages and score it unguided and under CFG (the testbed's bar).

    python -m training.testbed.variants --channels 32,64 --steps 2500            # about 10 min on 2 CPU cores
    python -m training.testbed.variants --channels 64,128 --steps 3000 --prompts 1000

The data, text, autoencoder and feature stages are the build's own (made in --work when missing); the UNet
is trained by the build's code with only its width and steps changed, into --work/variants/<name>/. Prints
alignment and FD at each guidance scale and, on its last line, one JSON object (also appended to
--work/variants/results.jsonl), so that the search for a testbed that shows why CFG exists can be rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from . import build
from .evaluator import alignment
from .features import frechet_distance, image_features
from .model import Testbed, evaluation_prompts
from .text_encoder import TextEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description="Score a UNet variant of the testbed, unguided against CFG.")
    parser.add_argument("--channels", required=True, help="UNet widths per level, e.g. 32,64")
    parser.add_argument("--steps", type=int, required=True, help="UNet training steps")
    parser.add_argument("--prompts", type=int, default=500, help="held-out prompts to score (seeds 0…N−1)")
    parser.add_argument("--scales", default="1,2,5", help="guidance scales to score, 1 = unguided")
    parser.add_argument("--work", default="runs/testbed_build", help="the build's stage folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    channels = tuple(int(c) for c in options.channels.split(","))
    config = dict(build.CONFIG, unet_channels=channels, unet_steps=options.steps)
    name = f"unet_{'-'.join(map(str, channels))}_{options.steps}"
    work = Path(options.work)
    variant = work / "variants" / name
    variant.mkdir(parents=True, exist_ok=True)

    encoder = TextEncoder()
    stages = build.build_stages_before_unet(work, config, encoder)
    started = time.time()
    unet = build.build_unet(variant, stages.latents, stages.embeddings, stages.caption_index, config)
    trained_seconds = round(time.time() - started)

    features = stages.features
    testbed = Testbed(stages.autoencoder, unet, stages.scale, text=encoder, features=features)
    count = options.prompts
    # The same reference as the build's model card: features of at least 5,000 held-out real images.
    prompts, named, real = evaluation_prompts(max(2 * count, config["eval_real_images"]))
    real_features = image_features(features, real)
    context = testbed.encode_prompts(prompts[:count])
    figures = {"variant": name, "channels": list(channels), "steps": options.steps, "prompts": count,
               "unet_parameters": sum(p.numel() for p in unet.parameters()), "training_seconds": trained_seconds,
               "fd_real_vs_real": round(frechet_distance(image_features(features, real[:count]),
                                                         image_features(features, real[count:2 * count])), 1)}
    for guidance in (float(s) for s in options.scales.split(",")):
        generated = testbed.generate(context, list(range(count)), steps=config["eval_steps"], cfg_scale=guidance)
        score = round(alignment(generated, named[:count]), 1)
        distance = round(frechet_distance(image_features(features, generated), real_features), 1)
        figures[f"w{guidance:g}"] = {"alignment": score, "fd": distance}
        print(f"[variants] {name} w = {guidance:g}: alignment {score} %, FD {distance}", flush=True)
    with open(work / "variants" / "results.jsonl", "a") as results:
        results.write(json.dumps(figures) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
