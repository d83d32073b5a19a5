"""Build a random-weight checkpoint with SD1.5's full layout in the original (LDM) format that Automatic1111, Forge
and reForge load, for their host tests and speed figures. Needs only torch and safetensors.

    python tools/make_webui_checkpoint.py --out <data-dir>/models/Stable-diffusion/random_sd15.safetensors

The tensor names and shapes come from tools/sd15_ldm_layout.json, which `--write-layout --a1111 <folder>
--clip-config <CLIP-L config.json>` (run with Automatic1111's Python) rewrites from Automatic1111's own
configs/v1-inference.yaml and CLIP-L's config. Weights are drawn as torch's layers initialise themselves (uniform within ±1/√fan-in; norms at 1 and 0): the LDM code starts its
output layers at zero, and a UNet whose output is all zeros tells a test nothing. Saved as fp16, about 2.1 GB.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

LAYOUT = Path(__file__).resolve().parent / "sd15_ldm_layout.json"


def write_layout(a1111: Path, clip_config: Path) -> None:
    """Record every tensor's name and shape of SD1.5 as Automatic1111 builds it (UNet, VAE, CLIP-L)."""
    sys.path[:0] = [str(a1111), str(a1111 / "repositories" / "stable-diffusion-stability-ai")]
    import torch
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf
    from transformers import CLIPTextConfig, CLIPTextModel

    config = OmegaConf.load(a1111 / "configs" / "v1-inference.yaml")
    config.model.params.cond_stage_config = {"target": "torch.nn.Identity"}
    model = instantiate_from_config(config.model)  # on the CPU: the noise schedule is computed with numpy
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("cond_stage_model")}
    with torch.device("meta"):
        clip = CLIPTextModel(CLIPTextConfig.from_json_file(clip_config))
    shapes.update({f"cond_stage_model.transformer.{k}": list(v.shape) for k, v in clip.state_dict().items()})
    shapes["cond_stage_model.transformer.text_model.embeddings.position_ids"] = [1, 77]
    lines = [f"{json.dumps(name)}: {json.dumps(shape)}" for name, shape in sorted(shapes.items())]
    LAYOUT.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {LAYOUT}: {len(shapes)} tensors")


def random_tensor(name: str, shape: list[int], generator):
    import torch

    if name.endswith("position_ids"):
        return torch.arange(shape[-1]).expand(*shape).clone()
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("embedding.weight") or "embeddings" in name:
        return torch.randn(shape, generator=generator) * 0.02
    if len(shape) == 1 and leaf == "weight":  # every 1-d weight here is a GroupNorm's or LayerNorm's scale
        return torch.ones(shape)
    if leaf in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "log_one_minus_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"):
        return None  # the schedule: the host computes it from the config
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    bound = 1 / math.sqrt(max(fan_in, 1))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def build(out: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    shapes = json.loads(LAYOUT.read_text())
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        tensor = random_tensor(name, shape, generator)
        if tensor is not None:
            tensors[name] = tensor if tensor.dtype == torch.int64 else tensor.half()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temporary))
    os.replace(temporary, out)
    print(f"wrote {out}: {len(tensors)} tensors, {out.stat().st_size / 1e9:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="the checkpoint to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-layout", action="store_true", help="rewrite the layout file from --a1111's code")
    parser.add_argument("--a1111", help="an Automatic1111 folder (with --write-layout)")
    parser.add_argument("--clip-config", help="CLIP-L's config.json (with --write-layout; Forge ships one in "
                        "backend/huggingface/runwayml/stable-diffusion-v1-5/text_encoder/)")
    options = parser.parse_args()
    if options.write_layout:
        if not (options.a1111 and options.clip_config):
            parser.error("--write-layout needs --a1111 and --clip-config")
        write_layout(Path(options.a1111), Path(options.clip_config))
    elif options.out:
        build(Path(options.out), options.seed)
    else:
        parser.error("--out is needed")


if __name__ == "__main__":
    main()
