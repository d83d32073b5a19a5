"""How large a guidance adapter is for SD1.5's and SDXL's full UNets, by rank and layer selection. Run with ComfyUI's
Python:

    python bench/adapter_size.py --comfy-root <ComfyUI>

Builds each UNet from ComfyUI's own model configs on the meta device (no weights, no memory), picks the adapter's
layers as the trainer does, and prints parameters and the file's size in fp32 (as the trainer writes it) and fp16;
one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", required=True)
    parser.add_argument("--ranks", default="4,8,16")
    options = parser.parse_args()
    load_pack()
    import torch

    from dice_pack.sharpeners import Sharpener, SharpenerConfig
    from dice_pack.sharpeners.adapter import LAYER_SELECTIONS, AdapterConfig, GuidanceAdapter
    from dice_pack.training.comfy_backend import import_comfy, unet_adapter_layers

    import_comfy(Path(options.comfy_root))
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    from dice_pack.tools.make_random_checkpoint import unet_config

    # SDXL base 1.0's UNet as ComfyUI detects it: 3 levels of 2 blocks, 0/2/10 transformers, the 2816-wide vector.
    sdxl = {**unet_config(3, 2), "context_dim": 2048, "num_heads": -1, "num_head_channels": 64,
            "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
            "transformer_depth_middle": 10, "use_linear_in_transformer": True, "adm_in_channels": 2816,
            "num_classes": "sequential"}
    rows = []
    for family, config, width in (("sd15", unet_config(4, 2), 768), ("sdxl", sdxl, 2048)):
        with torch.device("meta"):
            unet = openaimodel.UNetModel(**config, dtype=torch.float32, device="meta",
                                         operations=comfy.ops.disable_weight_init)
            sharpener = Sharpener(SharpenerConfig(embed_dim=width)).parameter_count()
        unet_parameters = sum(p.numel() for p in unet.parameters())
        for layers in LAYER_SELECTIONS:
            paths = unet_adapter_layers(unet, layers)
            for rank in (int(r) for r in options.ranks.split(",")):
                with torch.device("meta"):
                    count = GuidanceAdapter.for_layers(unet, paths, AdapterConfig(rank=rank, layers=layers)).parameter_count()
                rows.append({"family": family, "layers": layers, "rank": rank, "layer_count": len(paths),
                             "parameters": count, "share_of_unet": count / unet_parameters,
                             "mb_fp32": count * 4 / 1e6, "mb_fp16": count * 2 / 1e6,
                             "sharpener_mb_fp32": sharpener * 4 / 1e6})
                print(f"{family:<5} {layers:<12} rank {rank:>3}: {len(paths):>4} layers, {count:>11,} parameters "
                      f"({count / unet_parameters:.2%} of the UNet's {unet_parameters:,}), {count * 4 / 1e6:6.1f} MB "
                      f"fp32, {count * 2 / 1e6:6.1f} MB fp16; with the sharpener ({sharpener * 4 / 1e6:.1f} MB) "
                      f"{(count + sharpener) * 4 / 1e6:.1f} MB", flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
