"""Where DICE's images fall short of CFG's: how often each named attribute is right, by kind of prompt.

    python bench/attribute_breakdown.py --sharpener outputs/testbed.safetensors --prompt-seed 11 --prompts 500

For unguided sampling and DICE at 20 steps (20 calls) and CFG at 10 steps (the same 20 calls), the share of images
aligned among one-object and two-object prompts, and the share of each attribute the evaluator checks (present,
shape, size, position, relation, background) that is right. --captions training scores the trainer's own caption
pool instead of held-out prompts, to tell a sharpener that did not learn from one that learned only its captions.
Prints a table and one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

from common import load_pack


def breakdown(images, scenes) -> dict:
    """Percent aligned per kind of prompt and percent right per attribute."""
    from dice_pack.training.testbed.evaluator import check

    kinds, attributes = defaultdict(list), defaultdict(list)
    for image, scene in zip(images, scenes):
        results = check(image, scene)
        kinds["two objects" if scene.relation else "one object"].append(all(results.values()))
        for key, right in results.items():
            attributes[key.split(".")[-1]].append(right)
    percent = lambda values: round(100.0 * sum(values) / len(values), 1)  # noqa: E731
    return {"aligned": {k: percent(v) for k, v in sorted(kinds.items())},
            "attributes": {k: percent(v) for k, v in sorted(attributes.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharpener", required=True)
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--captions", choices=["held-out", "training"], default="held-out")
    options = parser.parse_args()
    load_pack()
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.training.testbed.model import Testbed, evaluation_prompts, training_pool

    testbed = Testbed.load()
    if options.captions == "training":
        pool = training_pool(options.prompts)
        scenes, captions = [named for named, _ in pool], [text for _, text in pool]
    else:
        captions, scenes, _ = evaluation_prompts(options.prompts, options.prompt_seed)
    context, null, seeds = testbed.encode_prompts(captions), testbed.null_embedding(), list(range(options.prompts))
    sharpened = sharpen(load_sharpener(options.sharpener).network, context, null, options.alpha)
    runs = {"unguided, 20 steps": testbed.generate(context, seeds, steps=20),
            "CFG w = 5, 10 steps": testbed.generate(context, seeds, steps=10, cfg_scale=5.0),
            f"DICE α = {options.alpha:g}, 20 steps": testbed.generate(sharpened, seeds, steps=20)}
    figures = {name: breakdown(images, scenes) for name, images in runs.items()}
    columns = list(next(iter(figures.values()))["aligned"]) + list(next(iter(figures.values()))["attributes"])
    print("| method (20 calls) | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, values in figures.items():
        merged = {**values["aligned"], **values["attributes"]}
        print(f"| {name} | " + " | ".join(f"{merged[c]:.1f}" for c in columns) + " |")
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts, "captions": options.captions,
                      "sharpener": options.sharpener, "alpha": options.alpha, "figures": figures}))


if __name__ == "__main__":
    main()
