"""Automatic1111's speed with DICE: CFG scale 5 against DICE at CFG scale 1, same steps, same seed.

    python bench/webui_speed.py --a1111 <Automatic1111 folder> --a1111-python <its Python> [--steps 8 --repeats 3]

Run with this pack's Python. The host runs on the CPU (tools/webui_host.py) with a random-weight checkpoint in
SD1.5's full layout and a random sharpener; each repetition times one 512×512 txt2img request of each kind through
the API (the whole request: sampling, VAE decode, PNG), alternating, and counts the UNet calls of each (the test-only
call counter). Prints the medians, the per-repetition ratio, and one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import load_pack

SHARPENER = "random_sd15_dice.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a1111", default=os.environ.get("A1111_PATH"), help="Automatic1111 folder ($A1111_PATH)")
    parser.add_argument("--a1111-python", default=os.environ.get("A1111_PYTHON"), help="its Python ($A1111_PYTHON)")
    parser.add_argument("--kind", choices=["a1111", "forge"], default="a1111")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    if not (options.a1111 and options.a1111_python):
        raise SystemExit("pass --a1111 and --a1111-python (or set A1111_PATH and A1111_PYTHON)")
    load_pack()
    import torch

    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
    from dice_pack.tools import webui_host

    data = Path(tempfile.mkdtemp(prefix="dice-speed-"))
    try:
        sharpeners = webui_host.prepare_data_dir(data, with_counter=True)
        torch.manual_seed(0)
        save_sharpener(sharpeners / SHARPENER, Sharpener(SharpenerConfig(embed_dim=768)), TrainingInfo())
        host = webui_host.start(options.kind, Path(options.a1111).resolve(), options.a1111_python, data, counting=True)
        request = {"prompt": "a red fox in the snow", "negative_prompt": "", "steps": options.steps,
                   "width": options.size, "height": options.size, "sampler_name": "Euler", "seed": 1}
        kinds = {"cfg 5": ({"cfg_scale": 5}, None), "DICE, cfg 1": ({"cfg_scale": 1}, [True, SHARPENER, 1.0, 0.5])}
        seconds = {name: [] for name in kinds}
        calls = {}
        try:
            host.generate(**{**request, "steps": 1, "width": 64, "height": 64})  # warm-up
            for _ in range(options.repeats):
                for name, (change, dice) in kinds.items():
                    host.call("/dice-test/calls")
                    begun = time.perf_counter()
                    host.generate(dice, **{**request, **change})
                    seconds[name].append(time.perf_counter() - begun)
                    calls[name] = host.call("/dice-test/calls")["batch_sizes"]
        finally:
            host.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    ratios = [a / b for a, b in zip(seconds["cfg 5"], seconds["DICE, cfg 1"])]
    for name in kinds:
        print(f"{name:<12} median {statistics.median(seconds[name]):7.1f} s over {options.repeats}; UNet calls "
              f"(batch sizes) of the last: {calls[name]}")
    print(f"cfg 5 / DICE per repetition: median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print(json.dumps({"host": options.kind, "steps": options.steps, "size": options.size, "seconds": seconds,
                      "ratio_median": statistics.median(ratios), "unet_calls": calls}))


if __name__ == "__main__":
    sys.exit(main())
