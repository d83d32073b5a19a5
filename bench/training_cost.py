"""What training a sharpener costs: samples/s and UNet-call equivalents per sample, from the trainer's own summary.

    python bench/training_cost.py [--comfy-root <ComfyUI> --comfy-python <its Python>]

Runs training/train.py on the testbed, and, given a ComfyUI, on a random-weight SD1.5-layout checkpoint built
with tools/make_random_checkpoint.py (prompts only, so the checkpoint draws its own training latents). One UNet-call
equivalent is the time of one plain UNet call on one sample, measured by the trainer on the same batch; the
teacher alone costs 2 (cond and uncond), the student a forward and a backward. Prints each run's figures and, on
its last line, one JSON object holding them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
TRAIN = PACK_ROOT / "training" / "train.py"


def run(python: str, name: str, runs: Path, *args: str) -> dict:
    """One training run; its summary.json."""
    command = [python, str(TRAIN), "--runs", str(runs), "--name", name, "--sample-every", "0", "--save-every", "0",
               "--out", str(runs / f"{name}.safetensors"), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training run '{name}' failed:\n{done.stderr[-3000:]}")
    return json.loads((runs / name / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of each run")
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--comfy-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    parser.add_argument("--resolution", type=int, default=128, help="training image size on the SD1.5-layout checkpoint")
    options = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="dice-cost-"))
    figures = {}
    summary = run(sys.executable, "testbed", runs, "--testbed", "--steps", str(options.steps), "--batch", "32")
    figures["testbed"] = {"batch": 32, "samples_per_second": summary["samples_per_second"],
                          "unet_call_equivalents_per_sample": summary["unet_call_equivalents_per_sample"]}
    if options.comfy_root:
        checkpoint = runs / "random_sd15.safetensors"
        subprocess.run([options.comfy_python, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root",
                        options.comfy_root, "--out", str(checkpoint)], check=True, capture_output=True)
        prompts = runs / "prompts.txt"
        prompts.write_text("a red fox in the snow\na lighthouse at dusk\na bowl of fruit on a table\na city street at night\n")
        steps = str(max(options.steps // 10, 2))
        summary = run(options.comfy_python, "random_sd15", runs, "--ckpt", str(checkpoint), "--comfy-root", options.comfy_root,
                      "--data", str(prompts), "--steps", steps, "--batch", "2", "--eval-batch", "4",
                      "--resolution", str(options.resolution))
        figures["random_sd15"] = {"batch": 2, "resolution": options.resolution, "steps": int(steps),
                                  "samples_per_second": summary["samples_per_second"],
                                  "unet_call_equivalents_per_sample": summary["unet_call_equivalents_per_sample"]}
    for name, f in figures.items():
        print(f"{name}: {f['samples_per_second']:.1f} samples/s, {f['unet_call_equivalents_per_sample']:.1f} "
              f"UNet-call equivalents per sample (batch {f['batch']})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
