"""KSampler time in the real ComfyUI: CFG at w = 5 against cfg 1 with the DICE nodes, on the same checkpoint: the
plain model at cfg 1, the guidance adapter at cfg 1, and the sharpener at cfg 1.

    python bench/comfyui_speed.py --comfy-root <ComfyUI folder> [--size 512 --steps 20 --repeats 3]

Run it with ComfyUI's Python. Without --ckpt it builds a random-weight checkpoint with SD1.5's full UNet
layout (tools/make_random_checkpoint.py, 4 levels of 2 blocks) in a temporary folder; without --sharpener it uses
a random-weight sharpener of SD1.5's width (timing does not depend on the weights). Each repetition times
ComfyUI's own KSampler node at cfg 5 (cond and uncond) and, on the same seed and steps, Load DICE Sharpener +
Sharpen Conditioning + KSampler at cfg 1 (ComfyUI then skips the uncond pass), the plain model at cfg 1, and the
model through Load DICE Guidance Adapter at cfg 1 (without --adapter, a random-weight adapter on the checkpoint's
transformer layers, rank 8: what it adds does not depend on its weights; ComfyUI merges it into the weights when it
loads the model, and the time includes that). Prints each repetition, the medians and, on its last line, one JSON
object holding them.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import load_pack

PACK_ROOT = Path(__file__).resolve().parents[1]


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--ckpt", help="a checkpoint file (default: a random-weight SD1.5-layout one, built here)")
    parser.add_argument("--sharpener", help="a sharpener file (default: random weights, width 768)")
    parser.add_argument("--adapter", help="a guidance adapter file (default: random weights on the checkpoint's "
                        "transformer layers, rank 8)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="run ComfyUI on the GPU (default: the CPU)")
    options = parser.parse_args()
    if not options.comfy_root:
        raise SystemExit("no ComfyUI: pass --comfy-root or set COMFYUI_PATH")
    os.environ["DICE_COMFY_GPU"] = "1" if options.gpu else ""
    fixture = load_module("make_random_checkpoint", PACK_ROOT / "tools" / "make_random_checkpoint.py")
    sd = fixture.import_comfy(options.comfy_root)
    import torch
    import comfy.model_management as mm
    import folder_paths
    import nodes

    work = Path(tempfile.mkdtemp(prefix="dice-speed-"))
    ckpt = options.ckpt
    if not ckpt:
        ckpt = str(work / "random_sd15_full.safetensors")
        print("building a random-weight SD1.5-layout checkpoint (4 levels, 2 blocks) ...", flush=True)
        fixture.build(ckpt, levels=4, blocks=2)
    load_pack()
    from dice_pack import NODE_CLASS_MAPPINGS as mapping
    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener

    folder_paths.add_model_folder_path("sharpeners", str(work))
    name = "speed.safetensors"
    if options.sharpener:
        os.symlink(Path(options.sharpener).resolve(), work / name)
    else:
        torch.manual_seed(0)
        save_sharpener(work / name, Sharpener(SharpenerConfig(embed_dim=768)), TrainingInfo(base_checkpoint="random"))
    model, clip, _vae = sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True,
                                                        embedding_directory=folder_paths.get_folder_paths("embeddings"))[:3]
    folder_paths.add_model_folder_path("loras", str(work))
    adapter_name = "speed_adapter.safetensors"
    if options.adapter:
        os.symlink(Path(options.adapter).resolve(), work / adapter_name)
    else:
        from dice_pack.sharpeners.adapter import AdapterConfig, GuidanceAdapter
        from dice_pack.sharpeners.adapter_file import AdapterInfo, save_adapter
        from dice_pack.training.comfy_backend import adapter_layers_of

        unet = model.model.diffusion_model
        adapter = GuidanceAdapter.for_layers(unet, adapter_layers_of(unet, "transformer"), AdapterConfig(layers="transformer"))
        save_adapter(work / adapter_name, adapter, AdapterInfo(base_checkpoint="random"))
    encode = nodes.CLIPTextEncode().encode
    positive = encode(clip, "a photo of a red fox sitting in the snow, detailed, sharp focus")[0]
    empty = encode(clip, "")[0]
    latent = nodes.EmptyLatentImage().generate(options.size, options.size, 1)[0]
    sampler = nodes.KSampler()

    def ksample(cond, cfg, on=None):
        begun = time.perf_counter()
        sampler.sample(on or model, 0, options.steps, cfg, "euler", "normal", cond, empty, latent)
        mm.soft_empty_cache()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - begun

    print(f"{mm.get_torch_device()}, {options.size}×{options.size}, {options.steps} steps, euler; warming up ...", flush=True)
    ksample(positive, 1.0)  # loads the model onto the device, compiles nothing
    rows = []
    for repeat in range(options.repeats):
        cfg_seconds = ksample(positive, options.cfg)
        begun = time.perf_counter()
        sharpener = mapping["DICESharpenerLoader"]().load(name)[0]
        sharpened = mapping["DICESharpenConditioning"]().apply(positive, empty, sharpener, 1.0)[0]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sharpen_seconds = time.perf_counter() - begun
        dice_seconds = ksample(sharpened, 1.0)
        plain_seconds = ksample(positive, 1.0)
        adapted = mapping["DICEAdapterLoader"]().load(model, adapter_name, 1.0)[0]
        adapter_seconds = ksample(positive, 1.0, on=adapted)
        rows.append({"cfg_seconds": cfg_seconds, "dice_sampling_seconds": dice_seconds, "sharpen_seconds": sharpen_seconds,
                     "ratio": cfg_seconds / (dice_seconds + sharpen_seconds), "plain_cfg1_seconds": plain_seconds,
                     "adapter_cfg1_seconds": adapter_seconds, "adapter_over_plain": adapter_seconds / plain_seconds})
        print(f"repeat {repeat + 1}: KSampler cfg {options.cfg:g} {cfg_seconds:.2f} s; DICE nodes {sharpen_seconds * 1000:.1f} ms "
              f"+ KSampler cfg 1 {dice_seconds:.2f} s; ratio {rows[-1]['ratio']:.3f}; plain cfg 1 {plain_seconds:.2f} s, "
              f"adapter at cfg 1 {adapter_seconds:.2f} s ({rows[-1]['adapter_over_plain']:.3f} of plain)", flush=True)
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    median["sharpen_fraction_of_sampling"] = median["sharpen_seconds"] / median["dice_sampling_seconds"]
    print(f"median: cfg {median['cfg_seconds']:.2f} s, DICE {median['dice_sampling_seconds'] + median['sharpen_seconds']:.2f} s, "
          f"ratio {median['ratio']:.3f}; sharpening {median['sharpen_fraction_of_sampling']:.3%} of sampling; adapter at cfg 1 "
          f"{median['adapter_cfg1_seconds'] / options.steps:.3f} s a step against plain cfg 1's "
          f"{median['plain_cfg1_seconds'] / options.steps:.3f} s ({median['adapter_over_plain']:.3f})")
    print(json.dumps({"device": str(mm.get_torch_device()), "size": options.size, "steps": options.steps, "cfg": options.cfg,
                      "repeats": rows, "median": median, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
