"""How many UNet calls does a KSampler at cfg 1 make on Sharpen Conditioning's output, or with a guidance adapter
loaded? Run with ComfyUI's Python.

    python tests/host_checks/calls_per_step.py --comfy-root <ComfyUI> --ckpt <file> --sharpener <file>
    python tests/host_checks/calls_per_step.py --comfy-root <ComfyUI> --ckpt <file> --adapter <file>

Encodes a prompt and the empty prompt with ComfyUI's CLIPTextEncode node, sharpens the prompt with the pack's
Sharpen Conditioning node (with --sharpener), loads the adapter onto the model with the pack's Load DICE Guidance
Adapter node, which applies it through ComfyUI's own LoRA loading (with --adapter, at --adapter-cfg), patches the
model with the pack's DICE Negative Prompt node (with --negative), and samples with ComfyUI's own common_ksampler at cfg 1 (or --cfg) for each sampler and scheduler
asked, counting the diffusion model's forward calls and their batch sizes with a forward pre-hook. Prints one JSON
line: per case, the steps, the calls and the batch sizes; with --adapter also how many of the model's weights the
adapter patched and how many layers it holds. The nodes' log lines go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--sharpener")
    parser.add_argument("--adapter", help="a DICE guidance adapter (a LoRA), loaded onto the model")
    parser.add_argument("--adapter-cfg", type=float, default=5.0, help="the adapter loader's cfg knob")
    parser.add_argument("--negative", help="a negative prompt, through the pack's DICE Negative Prompt node")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cfg", type=float, default=1.0, help="the KSampler's cfg (above 1 it batches the negative)")
    parser.add_argument("--cases", default="euler:normal,dpmpp_2m:normal,dpmpp_2m:karras,euler:karras",
                        help="sampler:scheduler pairs, comma-separated")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the nodes' log lines, as ComfyUI's console shows them

    sys.path.insert(0, str(PACK_ROOT / "training"))
    from train import load_pack

    load_pack()
    import torch

    from dice_pack.sharpeners import load_sharpener
    from dice_pack.training.comfy_backend import import_comfy

    comfy = import_comfy(Path(options.comfy_root))
    import nodes

    from dice_pack.nodes.adapter_loader import FOLDER_NAME, LoadDICEAdapter
    from dice_pack.nodes.negative_prompt import DICENegativePrompt
    from dice_pack.nodes.sharpen import SharpenConditioning
    from dice_pack.sharpeners.adapter_file import load_adapter

    model, clip, _, _ = comfy["comfy.sd"].load_checkpoint_guess_config(options.ckpt, output_vae=True, output_clip=True)
    positive = nodes.CLIPTextEncode().encode(clip, "a red fox in the snow")[0]
    empty = nodes.CLIPTextEncode().encode(clip, "")[0]
    sharpened = positive
    if options.sharpener:
        sharpened = SharpenConditioning().apply(positive, empty, load_sharpener(options.sharpener), 1.0)[0]
    report = {}
    if options.adapter:
        adapter = Path(options.adapter).resolve()
        comfy["folder_paths"].add_model_folder_path(FOLDER_NAME, str(adapter.parent))
        model = LoadDICEAdapter().load(model, adapter.name, 1.0, options.adapter_cfg)[0]
        report = {"patched_weights": len(model.patches), "adapter_layers": len(load_adapter(adapter).names)}
    if options.negative:
        model = DICENegativePrompt().patch(model, nodes.CLIPTextEncode().encode(clip, options.negative)[0])[0]
        report["negative_patches"] = len(model.model_options["transformer_options"]["patches_replace"]["attn2"])
    batches: list[int] = []
    model.model.diffusion_model.register_forward_pre_hook(lambda module, args: batches.append(int(args[0].shape[0])))
    cases = []
    for case in options.cases.split(","):
        sampler, scheduler = case.split(":")
        batches.clear()
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        nodes.common_ksampler(model, 0, options.steps, options.cfg, sampler, scheduler, sharpened, empty, latent)
        cases.append({"sampler": sampler, "scheduler": scheduler, "steps": options.steps, "calls": len(batches),
                      "batch_sizes": sorted(set(batches))})
    print(json.dumps({"cases": cases, **report}))


if __name__ == "__main__":
    main()
