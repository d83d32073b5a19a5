"""How many training samples a useful sharpener or guidance adapter needs: closure and FD against samples seen and
UNet-call equivalents, on the testbed.

    python bench/samples_needed.py --steps 250,500,1000,2000,4000 --prompt-seed 31 --prompts 500
    python bench/samples_needed.py --train adapter --inputs cfg-runs --steps 100,200,400,800,1600 --prompt-seed 2026

Trains the main job's sharpener (batch 32) or adapter (batch 64, the knob as the trainer trains it by default;
--adapter-layers all as scripts/run.sh does), lr 1e-3, constant, in stages, each resuming the last exactly (the same as
one long run), keeps the file of every stage and its run summary (the trainer's held-out distance and its UNet-call
equivalents a sample), then scores each on bench/frontier.py at the given budgets against unguided sampling and CFG
(adapters at strength 1, the knob's w = 5). With --init-adapter every stage starts from that file (the curve of a
fine-tune). Prints the frontier's table and, per stage, samples, call equivalents, the gap to CFG closed at each budget
and, for adapters, whether the pack's bar is met (bench/frontier.py); one JSON object on the last line. --also
STEPS=FILE adds a file trained elsewhere with the same settings as one more point (its summary read from runs/<its
stem>/summary.json when there).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import closure
from frontier import bar_checks, variant_names

PACK_ROOT = Path(__file__).resolve().parents[1]
BATCH = {"sharpener": 32, "adapter": 64}


def train_stages(options, stages: list[int]) -> list[Path]:
    """Each stage's file, trained (resuming the previous stage) unless it is there; its summary kept beside it."""
    batch = BATCH[options.train]
    files = []
    for index, steps in enumerate(stages):
        out = PACK_ROOT / "outputs" / f"{options.name}_{steps * batch}.safetensors"
        files.append(out)
        if out.exists():
            continue
        command = [sys.executable, str(PACK_ROOT / "training" / "train.py"), "--testbed", "--runs", options.runs,
                   "--name", options.name, "--steps", str(steps), "--batch", str(batch), "--sample-every", "0",
                   "--save-every", str(steps), "--seed", str(options.seed), "--out", str(out)]
        if options.train == "adapter":
            command += ["--train", "adapter", "--inputs", options.inputs]
            command += ["--init-adapter", options.init_adapter] if options.init_adapter else []
            command += ["--adapter-layers", options.adapter_layers] if options.adapter_layers else []
        subprocess.run(command + (["--resume"] if index else []), check=True)
        summary = Path(options.runs) / options.name / "summary.json"
        out.with_suffix(".json").write_text(summary.read_text())
    return files


def stage_summary(path: Path, runs: str) -> dict:
    """The trainer's summary of the run that wrote path, or {} where none was kept."""
    for candidate in (path.with_suffix(".json"), Path(runs) / path.stem / "summary.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", choices=list(BATCH), default="sharpener")
    parser.add_argument("--inputs", choices=["forward", "cfg-runs"], default=None, help="with an adapter (default "
                        "cfg-runs, the trainer's)")
    parser.add_argument("--init-adapter", help="with an adapter: every stage starts from this file")
    parser.add_argument("--adapter-layers", help="with an adapter: the trainer's --adapter-layers (scripts/run.sh: all)")
    parser.add_argument("--steps", default="250,500,1000,2000,4000", help="the stages' step counts, ascending")
    parser.add_argument("--also", action="append", default=[], metavar="STEPS=FILE",
                        help="a file trained elsewhere for STEPS steps with the same settings, one more point")
    parser.add_argument("--seed", type=int, default=0, help="the trainings' seed (another seed: another training)")
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--budgets", default=None, help="UNet calls (default 10,20; adapters 10,16,20, the bar's)")
    parser.add_argument("--alpha", default="0.75", help="the sharpening strength of every stage's rows")
    parser.add_argument("--runs", default=str(PACK_ROOT / "runs"))
    parser.add_argument("--name", default="samples_needed")
    options = parser.parse_args()
    if options.train != "adapter" and (options.init_adapter or options.inputs or options.adapter_layers):
        parser.error("--inputs, --init-adapter and --adapter-layers go with --train adapter")
    options.inputs = options.inputs or "cfg-runs"
    batch = BATCH[options.train]
    budgets = options.budgets or ("10,16,20" if options.train == "adapter" else "10,20")
    stages = sorted({int(s) for s in options.steps.split(",")})
    points = list(zip(stages, train_stages(options, stages)))
    for item in options.also:
        steps, _, path = item.partition("=")
        if not (steps.isdigit() and Path(path).is_file()):
            parser.error(f"--also {item}: expected STEPS=FILE with an existing file")
        points.append((int(steps), Path(path)))
    points.sort(key=lambda p: p[0])
    paths = [str(path) for _, path in points]
    kind = "adapter" if options.train == "adapter" else "dice"
    command = [sys.executable, str(PACK_ROOT / "bench" / "frontier.py"), f"--{kind if kind == 'adapter' else 'sharpener'}",
               *paths, "--prompt-seed", str(options.prompt_seed), "--prompts", str(options.prompts), "--budgets",
               budgets, "--skip", "scaling,fusion,teefusion",
               "--plot", str(PACK_ROOT / "outputs" / f"{options.name}_frontier.png")]
    command += ["--alpha", options.alpha] if options.train == "sharpener" else []
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    print(done.stdout.rstrip().rsplit("\n", 1)[0])
    rows = json.loads(done.stdout.strip().splitlines()[-1])["rows"]

    def find(method: str, calls: int, steps: int | None = None) -> dict:
        return next(r for r in rows if r["method"] == method and r["calls"] == calls
                    and (steps is None or r["steps"] == steps))

    curve = []
    print()
    for (steps, path), method in zip(points, variant_names(paths, kind)):
        summary = stage_summary(path, options.runs)
        equivalents = summary.get("unet_call_equivalents_per_sample")
        point = {"file": path.name, "samples": steps * batch, "steps": steps,
                 "call_equivalents": round(steps * batch * equivalents) if equivalents else None,
                 "held_out_ratio": summary.get("held_out_after", {}).get("ratio")}
        for calls in map(int, budgets.split(",")):
            ours, unguided, cfg = find(method, calls), find("unguided", calls), find("cfg", 2 * calls, calls)
            point[f"alignment_{calls}"], point[f"fd_{calls}"] = ours["alignment"], ours["fd"]
            point[f"closure_{calls}"] = round(closure(ours["alignment"], unguided["alignment"], cfg["alignment"]), 3)
        if options.train == "adapter":
            checks = bar_checks(rows, method)
            point["bar_met"] = len(checks) == 3 and all(met for _, met in checks)
        curve.append(point)
        print(f"{point['samples']:>7,} samples ({steps} steps" + (f", {point['call_equivalents']:,} call equivalents"
                                                                  if equivalents else "") + "): " + ", ".join(
            f"{calls} calls {point[f'alignment_{calls}']:.1f} % / FD {point[f'fd_{calls}']:.0f} "
            f"(closes {100 * point[f'closure_{calls}']:.0f} %)" for calls in map(int, budgets.split(",")))
              + (f"; held-out ratio {point['held_out_ratio']:.3f}" if point["held_out_ratio"] else "")
              + (f"; the bar {'met' if point['bar_met'] else 'NOT met'}" if "bar_met" in point else ""))
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts, "train": options.train,
                      "inputs": options.inputs if options.train == "adapter" else None, "seed": options.seed,
                      "init_adapter": Path(options.init_adapter).name if options.init_adapter else None,
                      "curve": curve}))


if __name__ == "__main__":
    main()
