"""Lever (a sampling recipe, not a sharpener): CFG for the first k steps, then the sharpened single call.

    python bench/levers/cfg_then_dice.py --sharpener outputs/testbed.safetensors --prompt-seed 11 --prompts 500 \\
        --budgets 10,20 --cfg-steps 0,1,2,4,all-but-2

A budget of B calls runs B − k steps of one noise schedule: k CFG steps (2 calls each) then B − 2k sharpened steps (1
call each), as two KSampler (Advanced) nodes with the same step count and start/end steps would: the second sampler
starts DPM-Solver++(2M)'s history afresh. --cfg-steps "all-but-2" is k = B/2 − 1 (the last two steps sharpened).
Prints alignment and FD per budget and k, and one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import Scorer, load_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharpener", required=True)
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--budgets", default="10,20")
    parser.add_argument("--cfg-steps", default="0,1,2,4,all-but-2", help="k values, comma-separated")
    parser.add_argument("--cfg", type=float, default=5.0)
    options = parser.parse_args()
    load_pack()
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.training.testbed.model import Testbed

    testbed = Testbed.load()
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    context, null = testbed.encode_prompts(scorer.captions[:options.prompts]), testbed.null_embedding()
    sharpened = sharpen(load_sharpener(options.sharpener).network, context, null, options.alpha)
    seeds = list(range(options.prompts))

    rows, seen = [], set()
    for budget in (int(b) for b in options.budgets.split(",")):
        for text in options.cfg_steps.split(","):
            cfg_steps = budget // 2 - 1 if text == "all-but-2" else int(text)
            steps = budget - cfg_steps
            if not 0 <= cfg_steps < steps or (budget, cfg_steps) in seen:
                continue
            seen.add((budget, cfg_steps))
            figures = scorer.score(testbed.generate_cfg_then(context, sharpened, seeds, steps, cfg_steps, options.cfg))
            rows.append({"calls": budget, "cfg_steps": cfg_steps, "dice_steps": steps - cfg_steps,
                         "alignment": round(figures["alignment"], 1), "fd": round(figures["fd"], 1)})
            print(f"{budget} calls: CFG {cfg_steps} steps then DICE {steps - cfg_steps} steps: alignment "
                  f"{figures['alignment']:.1f} %, FD {figures['fd']:.1f}", flush=True)
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts, "alpha": options.alpha,
                      "rows": rows}))


if __name__ == "__main__":
    main()
