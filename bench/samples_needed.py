"""How many training samples a useful sharpener needs: the frontier's closure against samples seen, on the testbed.

    python bench/samples_needed.py --steps 250,500,1000,2000,4000 --prompt-seed 31 --prompts 500

Trains the main job's sharpener (batch 32, lr 1e-3, constant) in stages, each resuming the last exactly (the same
as one long run), keeps the sharpener of every stage, then scores each on bench/frontier.py at the given budgets
against unguided sampling and CFG. Prints the frontier's table and, per stage, samples seen and the fraction of the
unguided-to-CFG alignment gap closed at each budget; one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import closure

PACK_ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000,2000,4000", help="the stages' step counts, ascending")
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--budgets", default="10,20")
    parser.add_argument("--alpha", default="0.75", help="the sharpening strength of every stage's rows")
    parser.add_argument("--runs", default=str(PACK_ROOT / "runs"))
    parser.add_argument("--name", default="samples_needed")
    options = parser.parse_args()
    stages = sorted({int(s) for s in options.steps.split(",")})
    files = []
    for index, steps in enumerate(stages):
        out = PACK_ROOT / "outputs" / f"{options.name}_{steps * BATCH}.safetensors"
        files.append(out)
        if out.exists():
            continue
        command = [sys.executable, str(PACK_ROOT / "training" / "train.py"), "--testbed", "--runs", options.runs,
                   "--name", options.name, "--steps", str(steps), "--batch", str(BATCH), "--sample-every", "0",
                   "--save-every", str(steps), "--out", str(out)]
        subprocess.run(command + (["--resume"] if index else []), check=True)
    done = subprocess.run([sys.executable, str(PACK_ROOT / "bench" / "frontier.py"), "--sharpener", *map(str, files),
                           "--prompt-seed", str(options.prompt_seed), "--prompts", str(options.prompts),
                           "--budgets", options.budgets, "--alpha", options.alpha, "--skip", "scaling,fusion,teefusion",
                           "--plot", str(PACK_ROOT / "outputs" / f"{options.name}_frontier.png")],
                          check=True, capture_output=True, text=True)
    print(done.stdout.rstrip().rsplit("\n", 1)[0])
    rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]

    def find(method: str, calls: int, steps: int | None = None) -> dict:
        return next(r for r in rows if r["method"] == method and r["calls"] == calls
                    and (steps is None or r["steps"] == steps))

    curve = []
    for steps, path in zip(stages, files):
        point = {"samples": steps * BATCH, "steps": steps}
        for calls in map(int, options.budgets.split(",")):
            dice = find(f"dice:{path.stem}", calls)
            unguided, cfg = find("unguided", calls), find("cfg", 2 * calls, calls)
            point[f"alignment_{calls}"] = dice["alignment"]
            point[f"fd_{calls}"] = dice["fd"]
            point[f"closure_{calls}"] = round(closure(dice["alignment"], unguided["alignment"], cfg["alignment"]), 3)
        curve.append(point)
        print(f"{point['samples']:>7,} samples ({steps} steps): " + ", ".join(
            f"{calls} calls {point[f'alignment_{calls}']:.1f} % / FD {point[f'fd_{calls}']:.0f} "
            f"(closes {100 * point[f'closure_{calls}']:.0f} % of the gap to CFG at the same steps)"
            for calls in map(int, options.budgets.split(","))))
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts, "curve": curve}))


if __name__ == "__main__":
    main()
