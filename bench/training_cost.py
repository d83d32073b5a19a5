"""What training a sharpener costs: UNet-call equivalents and peak memory per training sample, from the trainer itself.

    python bench/training_cost.py [--comfy-root <ComfyUI> --comfy-python <its Python>]

Runs training/train.py on the testbed, and, given a ComfyUI, on a random-weight checkpoint with SD1.5's full layout
(tools/make_random_checkpoint.py --levels 4 --blocks 2: the real UNet's shapes, so its time and memory are SD1.5's)
at 512 and 256 pixels, with activation checkpointing off and on. Each run measures, before it trains, the memory one
sample adds in the teacher's call and in the student's forward and backward (the peak of live tensors on the CPU,
CUDA's own peak on a GPU), and the time of a training sample in units of one plain UNet call on one sample
(a UNet-call equivalent: the teacher alone costs 2, cond and uncond). Prints a table and, on its last line, one JSON
object. The README turns these into hours on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PACK_ROOT = Path(__file__).resolve().parents[1]
TRAIN = PACK_ROOT / "training" / "train.py"
MIB = 1 << 20


def run(python: str, name: str, runs: Path, *args: str) -> dict:
    """One training run; its summary.json."""
    command = [python, str(TRAIN), "--runs", str(runs), "--name", name, "--sample-every", "0", "--save-every", "0",
               "--out", str(runs / f"{name}.safetensors"), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training run '{name}' failed:\n{done.stderr[-3000:]}")
    return json.loads((runs / name / "summary.json").read_text())


def image_folder(folder: Path, resolution: int) -> Path:
    """Two captioned noise images: the cost of a training sample does not depend on what the image shows."""
    sys.path.insert(0, str(PACK_ROOT / "training"))
    from train import load_pack

    load_pack()
    from dice_pack.training.png import save_png

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        save_png(folder / f"noise{index}.png", rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
        (folder / f"noise{index}.txt").write_text(f"a photograph of a mountain lake, number {index}")
    return folder


def figures(summary: dict, **extra) -> dict:
    return {**extra, "unet_call_equivalents_per_sample": summary["unet_call_equivalents_per_sample"],
            "teacher_mib_per_sample": round(summary["memory_per_sample"]["teacher"] / MIB),
            "student_mib_per_sample": round(summary["memory_per_sample"]["student"] / MIB),
            "samples_per_second": round(summary["samples_per_second"], 3), "precision": summary["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of the testbed run")
    parser.add_argument("--sd-steps", type=int, default=2, help="steps of each SD1.5-layout run")
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--comfy-python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    parser.add_argument("--resolutions", default="512,256")
    options = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="dice-cost-"))
    rows = [figures(run(sys.executable, "testbed", runs, "--testbed", "--steps", str(options.steps), "--batch", "32"),
                    model="testbed", resolution=32, batch=32, checkpointing=False)]
    if options.comfy_root:
        checkpoint = runs / "random_sd15_full.safetensors"
        subprocess.run([options.comfy_python, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root",
                        options.comfy_root, "--levels", "4", "--blocks", "2", "--out", str(checkpoint)],
                       check=True, capture_output=True)
        for resolution in (int(r) for r in options.resolutions.split(",")):
            data = image_folder(runs / f"images{resolution}", resolution)
            for checkpointing in ("off", "on"):
                summary = run(options.comfy_python, f"sd15_{resolution}_{checkpointing}", runs, "--ckpt", str(checkpoint),
                              "--comfy-root", options.comfy_root, "--data", str(data), "--steps", str(options.sd_steps),
                              "--batch", "1", "--eval-batch", "1", "--resolution", str(resolution),
                              "--checkpointing", checkpointing)
                rows.append(figures(summary, model="sd15 (full layout, random weights)", resolution=resolution,
                                    batch=1, checkpointing=summary["activation_checkpointing"]))
    print(f"{'model':<36}{'size':>6}{'checkpointing':>15}{'UNet-call eq./sample':>22}{'teacher MiB':>13}"
          f"{'student MiB':>13}{'precision':>11}")
    for row in rows:
        print(f"{row['model']:<36}{row['resolution']:>6}{'on' if row['checkpointing'] else 'off':>15}"
              f"{row['unet_call_equivalents_per_sample']:>22.2f}{row['teacher_mib_per_sample']:>13}"
              f"{row['student_mib_per_sample']:>13}{row['precision']:>11}")
    print(json.dumps({"device": "cuda" if _has_cuda() else "cpu", "rows": rows}))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
