"""How large a guidance adapter is for SD1.5's and SDXL's full UNets and for the real-size SD3.5 medium and large
MMDiTs, PixArt-α/Σ XL, Wan 2.1 1.3B and 14B, Wan 2.2 5B, Chroma, Lumina 2, AuraFlow and Qwen-Image transformers, by rank and layer selection.
Run with ComfyUI's Python:

    python bench/adapter_size.py --comfy-root <ComfyUI>

Builds each model from ComfyUI's own model classes on the meta device (no weights, no memory), picks the adapter's
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
    from dice_pack.training.comfy_backend import import_comfy, adapter_layers_of

    import_comfy(Path(options.comfy_root))
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    from dice_pack.tools.make_random_checkpoint import unet_config

    # SDXL base 1.0's UNet as ComfyUI detects it: 3 levels of 2 blocks, 0/2/10 transformers, the 2816-wide vector.
    sdxl = {**unet_config(3, 2), "context_dim": 2048, "num_heads": -1, "num_head_channels": 64,
            "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
            "transformer_depth_middle": 10, "use_linear_in_transformer": True, "adm_in_channels": 2816,
            "num_classes": "sequential"}
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ldm.pixart.pixartms as pixartms
    from dice_pack.tools.make_random_transformer import pixart_unet_config, sd3_unet_config

    def unet(config: dict):
        return openaimodel.UNetModel(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)

    def sd3(depth: int, self_attention_layers: list[int], positions: int):
        config = {**sd3_unet_config(depth), "x_block_self_attn_layers": self_attention_layers,
                  "pos_embed_max_size": positions, "num_patches": positions ** 2}
        return mmdit.MMDiT(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)

    import comfy.ldm.aura.mmdit as aura_mmdit
    import comfy.ldm.chroma.model as chroma_model
    import comfy.ldm.lumina.model as lumina_model
    import comfy.ldm.wan.model as wan_model
    from dice_pack.tools.make_random_transformer import (auraflow_unet_config, chroma_unet_config, lumina2_unet_config,
                                                         wan21_unet_config)

    def wan(**sizes):
        config = {k: v for k, v in {**wan21_unet_config(), **sizes}.items() if k != "image_model"}
        return wan_model.WanModel(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)

    def chroma():  # Chroma1-HD: 19 double and 38 single blocks
        return chroma_model.Chroma(**chroma_unet_config(19, 38), dtype=torch.float32, device="meta",
                                   operations=comfy.ops.disable_weight_init)

    def lumina2():  # Lumina Image 2.0: 26 main layers
        config = {k: v for k, v in lumina2_unet_config(26).items() if k != "image_model"}
        return lumina_model.NextDiT(**config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)

    def auraflow():  # AuraFlow 0.3: 4 joint and 28 single blocks; its position grid, taken as 96², is 0.4 % of it
        return aura_mmdit.MMDiT(**auraflow_unet_config(4, 28, 96 ** 2), dtype=torch.float32, device="meta",
                                operations=comfy.ops.disable_weight_init)

    import comfy.ldm.qwen_image.model as qwen_model
    from dice_pack.tools.make_random_transformer import qwen_image_unet_config

    def qwen_image():  # Qwen-Image: 60 joint blocks
        config = {k: v for k, v in qwen_image_unet_config(60).items() if k != "image_model"}
        return qwen_model.QwenImageTransformer2DModel(**config, dtype=torch.float32, device="meta",
                                                      operations=comfy.ops.disable_weight_init)

    def pixart():
        return pixartms.PixArtMS(**pixart_unet_config("pixart_sigma", 28), dtype=torch.float32, device="meta",
                                 operations=comfy.ops.disable_weight_init)

    # SD3.5 medium: 24 blocks of 1536 with MMDiT-X's second attention on blocks 0-12 and a 384² position grid; large:
    # 38 of 2432, without it, 192².
    models = (("sd15", lambda: unet(unet_config(4, 2)), 768), ("sdxl", lambda: unet(sdxl), 2048),
              ("sd3.5-medium", lambda: sd3(24, list(range(13)), 384), 4096),
              ("sd3.5-large", lambda: sd3(38, [], 192), 4096),
              ("pixart", pixart, 4096),
              ("wan2.1-1.3b", lambda: wan(num_layers=30), 4096),
              ("wan2.1-14b", lambda: wan(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40), 4096),
              ("wan2.2-5b", lambda: wan(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48), 4096),
              ("chroma", chroma, 4096),
              ("lumina2", lumina2, 2304),
              ("auraflow", auraflow, 2048),
              ("qwen-image", qwen_image, 3584))
    rows = []
    for family, build, width in models:
        model = build()  # its layers on the meta device (PixArt's stochastic-depth rule needs a real linspace)
        with torch.device("meta"):
            sharpener = Sharpener(SharpenerConfig(embed_dim=width)).parameter_count()
        model_parameters = sum(p.numel() for p in model.parameters())
        for layers in LAYER_SELECTIONS:
            paths = adapter_layers_of(model, layers)
            if layers == "all" and paths == adapter_layers_of(model, "transformer"):
                continue  # a transformer has no convolutions in its blocks: "all" is "transformer" there
            for rank in (int(r) for r in options.ranks.split(",")):
                with torch.device("meta"):
                    count = GuidanceAdapter.for_layers(model, paths, AdapterConfig(rank=rank, layers=layers)).parameter_count()
                rows.append({"family": family, "layers": layers, "rank": rank, "layer_count": len(paths),
                             "parameters": count, "share_of_model": count / model_parameters,
                             "mb_fp32": count * 4 / 1e6, "mb_fp16": count * 2 / 1e6,
                             "sharpener_mb_fp32": sharpener * 4 / 1e6})
                print(f"{family:<12} {layers:<12} rank {rank:>3}: {len(paths):>4} layers, {count:>11,} parameters "
                      f"({count / model_parameters:.2%} of the model's {model_parameters:,}), {count * 4 / 1e6:6.1f} MB "
                      f"fp32, {count * 2 / 1e6:6.1f} MB fp16; with the sharpener ({sharpener * 4 / 1e6:.1f} MB) "
                      f"{(count + sharpener) * 4 / 1e6:.1f} MB", flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
