"""Build random-weight transformer model files that ComfyUI detects as SD3/SD3.5, PixArt-α/Σ, Wan 2.1, Wan 2.2 5B,
Lumina 2, AuraFlow, Qwen-Image or Chroma, with their text encoders, by ComfyUI's own classes, into a models folder laid
out as ComfyUI's (diffusion_models/, text_encoders/, vae/, checkpoints/).

sd3: an SD3.5-medium-shaped MMDiT (RMS q/k norm, the MMDiT-X self-attention block on layer 0) of depth 2 (hidden
128; ComfyUI reads the depth from the weights), as diffusion_models/tiny_sd3.safetensors and, with full-size CLIP-L
and CLIP-G and the 16-channel VAE, as the single file checkpoints/tiny_sd3.safetensors; the text encoders also as
text_encoders/clip_l.safetensors and clip_g.safetensors.
pixart_alpha, pixart_sigma: PixArt's width (1152, 16 heads) at depth 2, with α's size and aspect-ratio embedders,
as diffusion_models/tiny_pixart_alpha.safetensors (or _sigma), and the 4-channel VAE.
t5xxl: a full-size T5-XXL encoder (ComfyUI builds it from a fixed config: 4.8 billion weights) in fp8 e4m3fn, as
text_encoders/t5xxl_fp8_e4m3fn.safetensors (4.9 GB), written without ever holding it in fp32.
umt5xxl: Wan's full-size UMT5-XXL encoder the same way (5.7 billion weights, 5.8 GB), as
text_encoders/umt5_xxl_fp8_e4m3fn.safetensors, with a small sentencepiece tokenizer trained on the pack's prompts in
its "spiece_model" tensor, where ComfyUI's Wan files keep theirs (the real one is not on this machine).
wan21: Wan 2.1 text-to-video at the 1.3B model's width (1536, 12 heads, FFN 8960) and depth 2, as
diffusion_models/tiny_wan21.safetensors, and Wan 2.1's full-size causal 3D VAE as vae/tiny_wan21_vae.safetensors.
wan22_5b: Wan 2.2 TI2V 5B at its width (3072, 24 heads, FFN 14336, 48 latent channels) and depth 2, as
diffusion_models/tiny_wan22_5b.safetensors, and Wan 2.2's full-size VAE (16× spatial compression, 48 channels) as
vae/tiny_wan22_vae.safetensors.
gemma2_2b: Lumina 2's full-size Gemma 2 2B text encoder (2.6 billion weights, 2.6 GB) in fp8 e4m3fn, its norms in bf16
(ComfyUI builds the encoder in their dtype), as text_encoders/gemma_2_2b_fp8_e4m3fn.safetensors, with a small
sentencepiece tokenizer as for umt5xxl.
lumina2: Lumina 2's NextDiT at its width (2304, 24 heads) with one main layer (and its two noise and two context
refiner layers), as diffusion_models/tiny_lumina2.safetensors; its VAE is Flux's, the layout of tiny_sd3_vae.
auraflow: AuraFlow's MMDiT at its width (3072, 12 heads) with one joint and one single block, its adaLN modulation
drawn 20× larger than torch's init so that the prompt reaches the prediction, as
diffusion_models/tiny_auraflow.safetensors; its VAE is SDXL's, vae/tiny_sd_vae.safetensors (as for PixArt).
pile_t5xl: AuraFlow's full-size Pile T5-XL encoder (1.2 billion weights) in fp8 e4m3fn, as
text_encoders/pile_t5xl_fp8_e4m3fn.safetensors (ComfyUI ships its tokenizer).
qwen_image: Qwen-Image's MMDiT at its width (3072, 24 heads, text 3584 wide) with one joint block, as
diffusion_models/tiny_qwen_image.safetensors, and Wan 2.1's VAE as for wan21 (Qwen-Image's has its layout). Its text
encoder, Qwen2.5-VL 7B, is not built: ComfyUI builds it from a fixed config (7.75 billion weights); the host tests give
the model conditioning of its shape through train.py --text-embeddings.
chroma: Chroma at its width (3072, 24 heads, the guidance approximator) with one double and one single block, as
diffusion_models/tiny_chroma.safetensors; its VAE is Flux's 16-channel one, the layout of vae/tiny_sd3_vae.safetensors.

    python tools/make_random_transformer.py --comfy-root <ComfyUI> --family sd3 --models <folder>
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_checkpoint import import_comfy, initialise  # noqa: E402

# T5 encoders by family: ComfyUI's config file, the file written, and the special ids of a tokenizer stored in the file
# (None: ComfyUI ships the tokenizer).
T5_ENCODERS = {"t5xxl": ("t5_config_xxl.json", "t5xxl_fp8_e4m3fn", None),
               "umt5xxl": ("umt5_config_xxl.json", "umt5_xxl_fp8_e4m3fn", {"pad_id": 0, "eos_id": 1, "unk_id": 2,
                                                                           "bos_id": -1}),
               "pile_t5xl": ("t5_pile_config_xl.json", "pile_t5xl_fp8_e4m3fn", None)}


def sd3_unet_config(depth: int = 2) -> dict:
    """The config ComfyUI's model detection reads back from SD3.5 medium's weights, at `depth` blocks."""
    hidden = 64 * depth
    return {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": depth, "input_size": None,
            "adm_in_channels": 2048, "num_patches": 192 * 192, "pos_embed_max_size": 192, "qk_norm": "rms",
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
            "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [0]}


def pixart_unet_config(model: str, depth: int = 2) -> dict:
    """PixArt-α (512 px: a 32×32 position grid) or Σ, as ComfyUI's detection reads them, at `depth` blocks."""
    alpha = model == "pixart_alpha"
    return {"num_heads": 16, "patch_size": 2, "hidden_size": 1152, "in_channels": 4, "depth": depth,
            "model_max_length": 120 if alpha else 300, "input_size": 64, "pe_interpolation": 1,
            "image_model": model, "micro_condition": alpha}


def wan21_unet_config(depth: int = 2) -> dict:
    """Wan 2.1 1.3B text-to-video as ComfyUI's detection reads it back, at `depth` blocks."""
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": 1536, "out_dim": 16, "num_heads": 12,
            "ffn_dim": 8960, "num_layers": depth, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
            "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}


def wan22_5b_unet_config(depth: int = 2) -> dict:
    """Wan 2.2 TI2V 5B as ComfyUI's detection reads it back (48 channels in and out), at `depth` blocks."""
    return {**wan21_unet_config(depth), "dim": 3072, "num_heads": 24, "ffn_dim": 14336, "in_dim": 48, "out_dim": 48}


def chroma_unet_config(depth: int = 1, single: int = 1) -> dict:
    """Chroma as ComfyUI's detection reads it back (its width is fixed there), at `depth` double and `single` single
    blocks."""
    return {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2, "context_in_dim": 4096,
            "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": depth, "depth_single_blocks": single,
            "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True, "in_dim": 64, "out_dim": 3072,
            "hidden_dim": 5120, "n_layers": 5}


def auraflow_unet_config(double: int = 1, single: int = 1, positions: int = 4096) -> dict:
    """AuraFlow's MMDiT as ComfyUI's detection reads it back (its width is fixed there: 3072, 12 heads), at `double`
    joint and `single` single blocks, `positions` image tokens at most."""
    return {"max_seq": positions, "cond_seq_dim": 2048, "n_double_layers": double, "n_layers": double + single}


def lumina2_unet_config(depth: int = 1) -> dict:
    """Lumina 2's NextDiT as ComfyUI's detection reads it back (its width is fixed there), at `depth` main layers."""
    return {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 2304, "cap_feat_dim": 2304,
            "n_layers": depth, "n_heads": 24, "n_kv_heads": 8, "qk_norm": True, "axes_dims": [32, 32, 32],
            "axes_lens": [300, 512, 512]}


def save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors under a temporary name, then renamed."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def vae_state_dict(channels: int) -> dict:
    """The SD VAE's full-size layout with `channels` latent channels (4: SD1.5/SDXL, PixArt; 16: SD3), random."""
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    config = {"double_z": True, "z_channels": channels, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    network = AutoencoderKL(ddconfig=config, embed_dim=channels)
    initialise(network)
    return {k: v.to(torch.float16) for k, v in network.state_dict().items()}


def randomise(module) -> None:
    """Every weight and buffer drawn (ComfyUI's ops leave memory uninitialised, which may look finite), then torch's
    own init for its layers, and scale 1 for the norms ComfyUI defines itself (MMDiT's RMSNorm)."""
    import torch

    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.normal_(0, 0.02)
        initialise(module)
        for layer in module.modules():
            weight = getattr(layer, "weight", None)
            if "Norm" in type(layer).__name__ and not type(layer).__module__.startswith("torch") and weight is not None:
                weight.fill_(1.0)


def diffusion_model(config_class, unet_config: dict):
    import torch

    model_config = config_class(unet_config)
    model_config.set_inference_dtype(torch.float16, None)
    model = model_config.get_model({})
    randomise(model)
    return model_config, model.to(torch.float16)


def build_sd3(models: Path, seed: int) -> None:
    import torch
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip as sd3_clip

    torch.manual_seed(seed)
    model_config, model = diffusion_model(comfy.supported_models.SD3, sd3_unet_config())
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / "tiny_sd3.safetensors")
    target = comfy.supported_models_base.ClipTarget(sd3_clip.SD3Tokenizer, sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False))
    clip = comfy.sd.CLIP(target=target, tokenizer_data={}, parameters=0)
    initialise(clip.cond_stage_model)
    clip.cond_stage_model.to(torch.float16)
    text = clip.cond_stage_model.state_dict()
    for name in ("clip_l", "clip_g"):
        prefix = f"{name}.transformer."
        save({k[len(prefix):]: v for k, v in text.items() if k.startswith(prefix)},
             models / "text_encoders" / f"{name}.safetensors")
    vae = comfy.sd.VAE(sd=vae_state_dict(16))
    save(vae.get_sd(), models / "vae" / "tiny_sd3_vae.safetensors")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    checkpoint = models / "checkpoints" / "tiny_sd3.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    temporary = checkpoint.with_name(f".{checkpoint.name}.tmp")
    comfy.sd.save_checkpoint(str(temporary), patcher, clip, vae, metadata={"dice.fixture": "random-weight sd3.5 layout"})
    os.replace(temporary, checkpoint)


def build_pixart(models: Path, family: str, seed: int) -> None:
    import torch
    import comfy.supported_models

    torch.manual_seed(seed)
    config_class = comfy.supported_models.PixArtAlpha if family == "pixart_alpha" else comfy.supported_models.PixArtSigma
    _, model = diffusion_model(config_class, pixart_unet_config(family))
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / f"tiny_{family}.safetensors")
    write_sd_vae(models)


def write_sd_vae(models: Path) -> None:
    """The 4-channel SD VAE (PixArt's and AuraFlow's) as vae/tiny_sd_vae.safetensors, unless it is there."""
    import comfy.sd

    vae = models / "vae" / "tiny_sd_vae.safetensors"
    if not vae.exists():
        save(comfy.sd.VAE(sd=vae_state_dict(4)).get_sd(), vae)


def wan21_vae():
    """The VAE layout comfy.sd.VAE builds for a Wan 2.1 VAE file (it tells it by decoder.middle.0.residual.0.gamma)."""
    from comfy.ldm.wan.vae import WanVAE

    return WanVAE(dim=96, z_dim=16, **WAN_VAE)


def build_wan21(models: Path, seed: int) -> None:
    import comfy.supported_models

    build_wan(models, seed, "wan21", comfy.supported_models.WAN21_T2V, wan21_unet_config(), wan21_vae())


def build_wan22_5b(models: Path, seed: int) -> None:
    import comfy.supported_models
    from comfy.ldm.wan.vae2_2 import WanVAE

    # Wan 2.2's VAE layout (comfy.sd.VAE also finds decoder.upsamples.0.upsamples.0.residual in it).
    build_wan(models, seed, "wan22_5b", comfy.supported_models.WAN22_T2V, wan22_5b_unet_config(),
              WanVAE(dim=160, z_dim=48, **WAN_VAE), vae_name="wan22")


WAN_VAE = {"dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True],
           "dropout": 0.0}


def build_wan(models: Path, seed: int, name: str, config_class, unet_config: dict, vae, vae_name: str = "") -> None:
    """A Wan VAE (random, RMS norms at scale 1) as vae/tiny_<vae_name or name>_vae where it is missing (Qwen-Image's
    builder writes Wan 2.1's), then the diffusion model as diffusion_models/tiny_<name>, written last."""
    import torch

    torch.manual_seed(seed)
    _, model = diffusion_model(config_class, unet_config)
    vae_path = models / "vae" / f"tiny_{vae_name or name}_vae.safetensors"
    if not vae_path.is_file():
        write_wan_vae(vae, vae_path)
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / f"tiny_{name}.safetensors")


def write_wan_vae(vae, path: Path) -> None:
    """A Wan VAE, random with its RMS norms at scale 1, in fp16."""
    import torch

    randomise(vae)
    with torch.no_grad():
        for key, parameter in vae.named_parameters():
            if key.endswith("gamma"):  # its RMS norms' scale
                parameter.fill_(1.0)
    save({k: v.to(torch.float16) for k, v in vae.state_dict().items()}, path)


def build_chroma(models: Path, seed: int) -> None:
    import torch
    import comfy.supported_models

    torch.manual_seed(seed)
    _, model = diffusion_model(comfy.supported_models.Chroma, chroma_unet_config())
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / "tiny_chroma.safetensors")


def build_lumina2(models: Path, seed: int) -> None:
    import torch
    import comfy.supported_models

    torch.manual_seed(seed)
    _, model = diffusion_model(comfy.supported_models.Lumina2, lumina2_unet_config())
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / "tiny_lumina2.safetensors")


def spiece_model(vocabulary: int = 800, **ids: int):
    """A sentencepiece tokenizer trained on the pack's prompts, serialised as the uint8 tensor ComfyUI reads."""
    import io
    import sentencepiece
    import torch

    prompts = Path(__file__).resolve().parents[1] / "training" / "prompts" / "sd_prompts.txt"
    written = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(prompts.read_text().splitlines()),
                                             model_writer=written, vocab_size=vocabulary, hard_vocab_limit=False,
                                             minloglevel=2, **ids)
    return torch.frombuffer(bytearray(written.getvalue()), dtype=torch.uint8)


# torch's init leaves AuraFlow's adaLN gates near 0.04, and its joint block passes the attention's output through two
# of them (the MLP's input, then its output), so a prompt moved the fixture's prediction by 2e-6; ×20 gives gates of
# order 1, as a trained model's are, and a prompt then moves it by about 1e-3, as on the other fixtures.
AURAFLOW_MODULATION_GAIN = 20.0


def build_auraflow(models: Path, seed: int) -> None:
    """AuraFlow's MMDiT as diffusion_models/tiny_auraflow.safetensors (written last), after SDXL's VAE layout as
    vae/tiny_sd_vae.safetensors where it is missing."""
    import torch
    import comfy.supported_models

    torch.manual_seed(seed)
    _, model = diffusion_model(comfy.supported_models.AuraFlow, auraflow_unet_config())
    with torch.no_grad():
        for name, module in model.diffusion_model.named_modules():
            if name.rsplit(".", 1)[-1] in ("modC", "modX", "modCX", "modF"):  # SiLU, then the Linear that modulates
                module[1].weight.mul_(AURAFLOW_MODULATION_GAIN)
    write_sd_vae(models)
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / "tiny_auraflow.safetensors")


def qwen_image_unet_config(depth: int = 1) -> dict:
    """Qwen-Image's MMDiT as ComfyUI's detection reads it back (its width is fixed there: 3072, 24 heads, text 3584
    wide), at `depth` joint blocks."""
    return {"image_model": "qwen_image", "in_channels": 64, "num_layers": depth}


def build_qwen_image(models: Path, seed: int) -> None:
    """Qwen-Image's MMDiT as diffusion_models/tiny_qwen_image.safetensors (written last), after Wan 2.1's VAE (Qwen-Image's
    own has its layout) as vae/tiny_wan21_vae.safetensors where it is missing."""
    import torch
    import comfy.supported_models

    torch.manual_seed(seed)
    _, model = diffusion_model(comfy.supported_models.QwenImage, qwen_image_unet_config())
    vae = models / "vae" / "tiny_wan21_vae.safetensors"
    if not vae.is_file():
        write_wan_vae(wan21_vae(), vae)
    save(model.diffusion_model.state_dict(), models / "diffusion_models" / "tiny_qwen_image.safetensors")


def build_t5(models: Path, seed: int, family: str) -> None:
    """Shapes from ComfyUI's T5 (T5-XXL, UMT5-XXL, Pile T5-XL) built on the meta device; each weight drawn in fp32 one
    at a time and stored in fp8."""
    import torch
    import comfy.ops
    import comfy.text_encoders.sd3_clip as sd3_clip
    import json

    config_name, file_name, special_ids = T5_ENCODERS[family]
    config = json.loads((Path(sd3_clip.__file__).parent / config_name).read_text())
    with torch.device("meta"):
        network = sys.modules["comfy.text_encoders.t5"].T5(config, torch.float8_e4m3fn, "meta", comfy.ops.manual_cast)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, parameter in network.state_dict().items():
        if name.endswith("layer_norm.weight") or name.endswith("final_layer_norm.weight"):
            value = torch.ones(parameter.shape)
        elif parameter.ndim == 2 and "relative_attention_bias" not in name and name != "shared.weight":
            value = torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[1])
        else:  # embeddings: token table and relative-position bias
            value = torch.randn(parameter.shape, generator=generator)
        tensors[name] = value.to(torch.float8_e4m3fn)
    if special_ids is not None:
        tensors["spiece_model"] = spiece_model(**special_ids)
    save(tensors, models / "text_encoders" / f"{file_name}.safetensors",
         metadata={"dice.fixture": f"random-weight {family} encoder"})


def build_gemma2_2b(models: Path, seed: int) -> None:
    """Gemma 2 2B as ComfyUI builds it for Lumina 2, on the meta device; weights drawn one at a time, stored in fp8
    (the norms in bf16)."""
    import torch
    import comfy.ops
    from comfy.text_encoders.llama import Gemma2_2B

    with torch.device("meta"):
        network = Gemma2_2B({}, torch.float8_e4m3fn, "meta", comfy.ops.manual_cast)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, parameter in network.state_dict().items():
        if "norm" in name:  # Gemma's RMS norms scale by 1 + weight; ComfyUI builds the encoder in their dtype
            tensors[name] = torch.zeros(parameter.shape, dtype=torch.bfloat16)
            continue
        if name.endswith("embed_tokens.weight"):
            value = torch.randn(parameter.shape, generator=generator)
        else:
            value = torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1])
        tensors[name] = value.to(torch.float8_e4m3fn)
    tensors["spiece_model"] = spiece_model(pad_id=0, eos_id=1, bos_id=2, unk_id=3)  # Gemma's special ids
    save(tensors, models / "text_encoders" / "gemma_2_2b_fp8_e4m3fn.safetensors",
         metadata={"dice.fixture": "random-weight gemma 2 2b encoder"})


BUILDERS = {"sd3": build_sd3, "wan21": build_wan21, "wan22_5b": build_wan22_5b, "chroma": build_chroma, "gemma2_2b": build_gemma2_2b,
            "lumina2": build_lumina2, "auraflow": build_auraflow, "qwen_image": build_qwen_image}
FAMILIES = ("pixart_alpha", "pixart_sigma", *T5_ENCODERS, *BUILDERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--models", required=True, help="the models folder to write into (ComfyUI's layout)")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    if not options.comfy_root:
        raise SystemExit("no ComfyUI: pass --comfy-root or set COMFYUI_PATH")
    import_comfy(options.comfy_root)
    import comfy.text_encoders.t5  # noqa: F401  (T5's module, for build_t5)

    models = Path(options.models)
    if options.family in T5_ENCODERS:
        build_t5(models, options.seed, options.family)
    elif options.family.startswith("pixart"):
        build_pixart(models, options.family, options.seed)
    else:
        BUILDERS[options.family](models, options.seed)
    print(models)


if __name__ == "__main__":
    main()
