"""Quality on the offline testbed: the paper's Table 1 methods over held-out prompts, and a same-seed grid.

    python bench/testbed_quality.py --sharpener outputs/testbed.safetensors [--prompts 1000]

Prints a table and, on its last line, one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from common import TestbedBench, add_testbed_arguments, closure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_arguments(parser)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--scales", default="1.25,1.5,2,3", help="the grid of embedding scaling factors s (s·c)")
    parser.add_argument("--negatives-sharpener", help="a testbed sharpener trained with --negatives, for the rows "
                        "with a negative prompt")
    parser.add_argument("--negative-prompt", default="a picture on a gray background",
                        help="the negative prompt of those rows (CFG's uncond, DICE's reference)")
    parser.add_argument("--grid", default="outputs/testbed_methods.png", help="where the same-seed grid goes")
    options = parser.parse_args()
    bench = TestbedBench(options)
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.training.png import grid, save_png

    testbed, sharpener, scorer = bench.testbed, bench.sharpener, bench.scorer
    count, steps, context, null, seeds = bench.count, bench.steps, bench.context, bench.null, bench.seeds
    cfg_name = f"cfg{options.cfg:g}"
    methods = {
        "unguided": dict(context=context, steps=steps, cfg_scale=1.0, calls=steps),
        cfg_name: dict(context=context, steps=steps, cfg_scale=options.cfg, calls=2 * steps),
        f"{cfg_name}_half_steps": dict(context=context, steps=steps // 2, cfg_scale=options.cfg, calls=steps),
        # CFG's extrapolation applied to the embedding instead of the noise: c_null + w(c − c_null) = c + (w−1)(c − c_null).
        "fusion": dict(context=context + (options.cfg - 1) * (context - null), steps=steps, cfg_scale=1.0, calls=steps),
        "dice": dict(context=sharpen(sharpener, context, null, options.alpha), steps=steps, cfg_scale=1.0, calls=steps),
    }
    if options.negatives_sharpener:
        negative = testbed.encode_prompts([options.negative_prompt])
        with_negatives = load_sharpener(options.negatives_sharpener).network
        methods[f"{cfg_name}_negative"] = dict(context=context, steps=steps, cfg_scale=options.cfg, calls=2 * steps,
                                               null=negative)
        methods["dice_negatives_negative"] = dict(context=sharpen(with_negatives, context, negative, options.alpha),
                                                  steps=steps, cfg_scale=1.0, calls=steps)
    figures, rows = {}, [scorer.real[:12]]
    for name, method in methods.items():
        started = time.time()
        images = testbed.generate(method["context"], seeds, steps=method["steps"], cfg_scale=method["cfg_scale"],
                                  null=method.get("null"))
        figures[name] = dict(scorer.score(images), unet_calls=method["calls"], seconds=round(time.time() - started, 1))
        print(f"{name}: alignment {figures[name]['alignment']:.1f} %, FD {figures[name]['fd']:.2f}", flush=True)
        rows.append(images[:12])
    best_scale = None
    for factor in (float(f) for f in options.scales.split(",")):
        images = testbed.generate(context * factor, seeds, steps=steps)
        found = dict(scorer.score(images), unet_calls=steps, scale=factor)
        print(f"embedding scaling s={factor:g}: alignment {found['alignment']:.1f} %, FD {found['fd']:.2f}", flush=True)
        if best_scale is None or found["alignment"] > best_scale[0]["alignment"]:
            best_scale = (found, images)
    figures["scaling_best"], scaled_images = best_scale
    rows.append(scaled_images[:12])
    cfg = figures[f"cfg{options.cfg:g}"]
    unguided = figures["unguided"]
    for name in figures:
        figures[name]["closure_alignment"] = closure(figures[name]["alignment"], unguided["alignment"], cfg["alignment"])
        figures[name]["closure_fd"] = closure(figures[name]["fd"], unguided["fd"], cfg["fd"])
    figures["dice"]["alpha"] = options.alpha
    save_png(options.grid, grid(torch.cat([torch.from_numpy(r) for r in rows]).numpy(), 12, scale=3))
    print(f"{count} held-out prompts, {steps}-step DPM-Solver++(2M), seeds 0..{count - 1}; grid: {options.grid}, rows: "
          "real, " + ", ".join(figures))
    print(f"{'method':<22}{'UNet calls':>11}{'alignment %':>13}{'FD':>9}{'gap closed (align/FD)':>24}")
    for name, f in figures.items():
        print(f"{name:<22}{f['unet_calls']:>11}{f['alignment']:>13.1f}{f['fd']:>9.2f}"
              f"{f['closure_alignment']:>12.0%}{f['closure_fd']:>12.0%}")
    print(json.dumps({"prompts": count, "steps": steps, "methods": figures,
                      "closure_alignment": figures["dice"]["closure_alignment"],
                      "closure_fd": figures["dice"]["closure_fd"]}))


if __name__ == "__main__":
    main()
