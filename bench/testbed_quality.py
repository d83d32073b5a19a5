"""Quality on the offline testbed: unguided, CFG, CFG at half the steps, and DICE, over held-out prompts.

    python bench/testbed_quality.py --sharpener outputs/testbed.safetensors [--prompts 1000]

Prints a table and, on its last line, one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch


def load_pack():
    """Import the pack as a package, as ComfyUI does."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("dice_pack", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["dice_pack"] = module
    spec.loader.exec_module(module)


def closure(value: float, unguided: float, cfg: float) -> float:
    """The fraction of the unguided-to-CFG gap that value closes (1 = as good as CFG)."""
    return (value - unguided) / (cfg - unguided) if cfg != unguided else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharpener", required=True, help="a sharpener trained on the testbed")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--grid", default="outputs/testbed_methods.png", help="where the same-seed grid goes")
    options = parser.parse_args()
    load_pack()
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.training.png import grid, save_png
    from dice_pack.training.testbed.evaluator import alignment
    from dice_pack.training.testbed.features import frechet_distance, image_features
    from dice_pack.training.testbed.model import Testbed, evaluation_prompts

    testbed = Testbed.load()
    sharpener = load_sharpener(options.sharpener).network
    count = options.prompts
    captions, named, real = evaluation_prompts(max(count, 5000))
    real_features = image_features(testbed.features, real)
    context = testbed.encode_prompts(captions[:count])
    null = testbed.null_embedding()
    seeds = list(range(count))
    methods = {
        "unguided": dict(context=context, steps=options.steps, cfg_scale=1.0, calls=options.steps),
        f"cfg{options.cfg:g}": dict(context=context, steps=options.steps, cfg_scale=options.cfg, calls=2 * options.steps),
        f"cfg{options.cfg:g}_half_steps": dict(context=context, steps=options.steps // 2, cfg_scale=options.cfg,
                                               calls=options.steps),
        "dice": dict(context=sharpen(sharpener, context, null, options.alpha), steps=options.steps, cfg_scale=1.0,
                     calls=options.steps),
    }
    figures, rows = {}, [real[:12]]
    for name, method in methods.items():
        started = time.time()
        images = testbed.generate(method["context"], seeds, steps=method["steps"], cfg_scale=method["cfg_scale"])
        figures[name] = {"alignment": alignment(images, named[:count]),
                         "fd": frechet_distance(image_features(testbed.features, images), real_features),
                         "unet_calls": method["calls"], "seconds": round(time.time() - started, 1)}
        rows.append(images[:12])
    cfg = figures[f"cfg{options.cfg:g}"]
    unguided = figures["unguided"]
    for name in figures:
        figures[name]["closure_alignment"] = closure(figures[name]["alignment"], unguided["alignment"], cfg["alignment"])
        figures[name]["closure_fd"] = closure(figures[name]["fd"], unguided["fd"], cfg["fd"])
    figures["dice"]["alpha"] = options.alpha
    save_png(options.grid, grid(torch.cat([torch.from_numpy(r) for r in rows]).numpy(), 12, scale=3))
    print(f"{count} held-out prompts, {options.steps}-step DPM-Solver++(2M), seeds 0..{count - 1}; grid: {options.grid}")
    print(f"{'method':<22}{'UNet calls':>11}{'alignment %':>13}{'FD':>9}{'gap closed (align/FD)':>24}")
    for name, f in figures.items():
        print(f"{name:<22}{f['unet_calls']:>11}{f['alignment']:>13.1f}{f['fd']:>9.2f}"
              f"{f['closure_alignment']:>12.0%}{f['closure_fd']:>12.0%}")
    print(json.dumps({"prompts": count, "steps": options.steps, "methods": figures,
                      "closure_alignment": figures["dice"]["closure_alignment"],
                      "closure_fd": figures["dice"]["closure_fd"]}))


if __name__ == "__main__":
    main()
