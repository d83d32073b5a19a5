"""Build a random-weight SD1.5- or SDXL-layout checkpoint with ComfyUI's own classes, for plumbing tests and timings.

sd15: the UNet has SD1.5's width (model_channels 320, context_dim 768, 8 heads) but fewer levels and blocks;
CLIP-L and the VAE are full size.
sdxl: the smallest UNet ComfyUI recognises as the SDXL family (KOALA-700M's layout: 3 levels of 1 block,
context_dim 2048, the 2816-wide vector input of pooled CLIP-G and sizes) with fewer decoder transformers;
CLIP-L, CLIP-G and the VAE are full size (a 3.1 GB file).
sd15-inpaint: the sd15 layout with the 9 input channels of an inpainting model (for the trainer's refusal).
The file is saved by comfy.sd.save_checkpoint, exactly as ComfyUI's Save Checkpoint node writes one, and loads
with CheckpointLoaderSimple.

    python tools/make_random_checkpoint.py --comfy-root <ComfyUI folder> --out tiny_sd15.safetensors
    python tools/make_random_checkpoint.py --layout sdxl --comfy-root <ComfyUI folder> --out tiny_sdxl.safetensors
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def import_comfy(comfy_root: str):
    """Import ComfyUI's comfy package from comfy_root, on the CPU unless a GPU is asked for."""
    root = Path(comfy_root).resolve()
    if not (root / "comfy" / "sd.py").is_file():
        raise SystemExit(f"--comfy-root {root}: no ComfyUI there (comfy/sd.py is missing)")
    sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = os.environ.get("DICE_COMFY_GPU", "") != "1"
    return importlib.import_module("comfy.sd")


def unet_config(levels: int, blocks: int, in_channels: int = 4) -> dict:
    """SD1.5's UNet settings with `levels` resolution levels of `blocks` res-blocks each (9 inputs: inpainting)."""
    attention = [1] * levels
    attention[-1] = 0 if levels > 2 else 1  # SD1.5's deepest level has no attention
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": in_channels, "out_channels": 4,
        "model_channels": 320, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
        "channel_mult": [1, 2, 4, 4][:levels], "num_res_blocks": [blocks] * levels,
        "transformer_depth": [d for d in attention for _ in range(blocks)],
        "transformer_depth_output": [d for d in attention for _ in range(blocks + 1)],
        "transformer_depth_middle": 1, "use_spatial_transformer": True, "use_linear_in_transformer": False,
        "legacy": False, "adm_in_channels": None, "use_temporal_resblock": False, "use_temporal_attention": False,
    }


def sdxl_unet_config() -> dict:
    """KOALA-700M's encoder (ComfyUI matches the family on it) with one transformer per decoder level that has any."""
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": 320, "context_dim": 2048, "num_heads": -1, "num_head_channels": 64,
        "channel_mult": [1, 2, 4], "num_res_blocks": [1, 1, 1], "transformer_depth": [0, 2, 5],
        "transformer_depth_output": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
        "use_spatial_transformer": True, "use_linear_in_transformer": True, "legacy": False,
        "adm_in_channels": 2816, "num_classes": "sequential", "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }


def initialise(module) -> None:
    """Give every layer torch's default random init; ComfyUI's ops skip it and leave memory uninitialised."""
    import torch

    for layer in module.modules():
        for cls in type(layer).__mro__:
            if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(layer)
                break
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not torch.isfinite(parameter).all():
                raise RuntimeError(f"parameter {name} was left uninitialised")


def build(out: str, levels: int = 2, blocks: int = 1, seed: int = 0, layout: str = "sd15") -> None:
    """Write the checkpoint to out (a temporary name first, then a rename)."""
    import torch

    sd = sys.modules["comfy.sd"]
    supported_models = importlib.import_module("comfy.supported_models")
    model_patcher = importlib.import_module("comfy.model_patcher")
    autoencoder = importlib.import_module("comfy.ldm.models.autoencoder")

    torch.manual_seed(seed)
    if layout == "sdxl":
        model_config = supported_models.KOALA_700M(sdxl_unet_config())
    else:
        model_config = supported_models.SD15(unet_config(levels, blocks, 9 if layout == "sd15-inpaint" else 4))
    model_config.set_inference_dtype(torch.float16, None)
    model = model_config.get_model({})
    initialise(model)
    model.to(torch.float16)
    patcher = model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    clip = sd.CLIP(target=model_config.clip_target({}), tokenizer_data={}, parameters=0)
    initialise(clip.cond_stage_model)
    clip.cond_stage_model.to(torch.float16)
    vae_config = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                  "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae_network = autoencoder.AutoencoderKL(ddconfig=vae_config, embed_dim=4)
    initialise(vae_network)
    vae = sd.VAE(sd=vae_network.half().state_dict())
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    sd.save_checkpoint(str(temporary), patcher, clip, vae, metadata={"dice.fixture": f"random-weight {layout} layout"})
    os.replace(temporary, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--out", required=True, help="where to write the .safetensors checkpoint")
    parser.add_argument("--layout", choices=["sd15", "sdxl", "sd15-inpaint"], default="sd15",
                        help="sd15-inpaint: the sd15 layout with the 9 input channels of inpainting models")
    parser.add_argument("--levels", type=int, default=2, help="sd15 UNet resolution levels (SD1.5 has 4)")
    parser.add_argument("--blocks", type=int, default=1, help="sd15 res-blocks per level (SD1.5 has 2)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    if not options.comfy_root:
        raise SystemExit("no ComfyUI: pass --comfy-root or set COMFYUI_PATH")
    import_comfy(options.comfy_root)
    build(options.out, options.levels, options.blocks, options.seed, options.layout)
    print(options.out)


if __name__ == "__main__":
    main()
