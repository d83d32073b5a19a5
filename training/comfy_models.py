"""The model a --ckpt or --unet/--clip/--vae run trains for, loaded by ComfyUI's own loaders, and the families this
trainer drives (and those it refuses, by name and why)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .text_embeddings import ClipText, TextEmbeddingsFile

# ComfyUI's model classes (comfy.supported_models) this trainer drives, and the family written into the sharpener file.
# Each is proven in the real ComfyUI by tests/test_trainer_comfyui.py or tests/test_trainer_comfyui_dit.py.
SUPPORTED = {"SD15": "sd15", "SD20": "sd2", "SDXL": "sdxl", "SSD1B": "sdxl", "Segmind_Vega": "sdxl",
             "KOALA_700M": "sdxl", "KOALA_1B": "sdxl", "SD3": "sd3", "PixArtAlpha": "pixart_alpha",
             "PixArtSigma": "pixart_sigma", "WAN21_T2V": "wan21", "WAN22_T2V": "wan22_5b", "Chroma": "chroma",
             "Lumina2": "lumina2", "AuraFlow": "auraflow", "QwenImage": "qwen_image"}
# Guidance-distilled models: trained to give CFG's result from one call, so there is no CFG for DICE to learn.
GUIDANCE_DISTILLED = {"Flux": "Flux dev", "FluxSchnell": "Flux schnell", "FluxInpaint": "Flux Fill"}
# The UNet families, whose sampler tiles prompts of different lengths into one call.
UNET_FAMILIES = {"sd15", "sd2", "sdxl"}
# Families whose latents are clips (channels, frames, height, width); a training sample is a short clip, --frames long.
VIDEO_FAMILIES = {"wan21", "wan22_5b"}
DEFAULT_FRAMES = 17  # 5 latent frames after Wan's 4× temporal compression: short enough to train on, still motion
# Families whose ComfyUI forward adds its blocks' residuals in place (Chroma's addcmul_), which autograd refuses on the
# tensors it saved for the backward pass: training through them keeps copies of those tensors (more memory, same
# gradients).
IN_PLACE_FORWARD = {"chroma"}
# Models whose first layer takes the latent in 2×2 patches, so their config counts 4 input channels per latent channel.
PATCHED_INPUT = {"Chroma": 4, "QwenImage": 4}
# Training image size when --resolution is not given: the size each family and prediction type was trained at
# (PixArt's own comes from its position embedding, as ComfyUI reads it).
NATIVE_RESOLUTION = {("sd15", "eps"): 512, ("sd15", "v"): 512, ("sd2", "eps"): 512, ("sd2", "v"): 768,
                     ("sdxl", "eps"): 1024, ("sdxl", "v"): 1024, ("sd3", "flow"): 1024, ("wan21", "flow"): 480,
                     ("wan22_5b", "flow"): 704, ("chroma", "flow"): 1024, ("lumina2", "flow"): 1024,
                     ("auraflow", "flow"): 1024, ("qwen_image", "flow"): 1328}
# ComfyUI's ModelType names → the prediction type written into the sharpener file (Flux's type is flow matching
# with a resolution-dependent shift; Chroma uses it).
PREDICTION = {"EPS": "eps", "V_PREDICTION": "v", "FLOW": "flow", "FLUX": "flow"}
# The text encoders each family's diffusion model loads with, for --clip-type's default (as CLIPLoader's "type").
CLIP_TYPE = {"sd15": "stable_diffusion", "sd2": "stable_diffusion", "sdxl": "stable_diffusion", "sd3": "sd3",
             "pixart_alpha": "pixart", "pixart_sigma": "pixart", "wan21": "wan", "wan22_5b": "wan", "chroma": "chroma",
             "lumina2": "lumina2", "auraflow": "stable_diffusion",  # ComfyUI tells Pile T5-XL by its weights
             "qwen_image": "qwen_image"}


@dataclass
class LoadedModel:
    """What ComfyUI's loaders gave, and the files it came from."""

    patcher: object
    text: ClipText | TextEmbeddingsFile  # the prompts' conditioning: a text encoder, or a file encode_prompts.py wrote
    vae: object
    base: Path  # the file the diffusion model came from: the sharpener's base model
    text_files: list[Path]  # the text encoders' files (the checkpoint itself for --ckpt; or the embeddings file)


def clip_type_names(comfy_sd) -> list[str]:
    """CLIPLoader's "type" choices: ComfyUI's CLIPType names in lower case."""
    return [member.name.lower() for member in comfy_sd.CLIPType]


def resolve_model_file(name: str, folder: str, flag: str, folder_paths) -> Path:
    """A path as given, or a name in ComfyUI's models/<folder> (as its loader nodes list them)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    found = folder_paths.get_full_path(folder, name)
    if found:
        return Path(found)
    available = folder_paths.get_filename_list(folder)[:8]
    raise SystemExit(f"{flag} {name}: neither a file nor a name in models/{folder} "
                     f"(there: {', '.join(available) if available else 'nothing'})")


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_model(args, comfy: dict, dtype) -> LoadedModel:
    """--ckpt through CheckpointLoaderSimple's loader, or --unet, --clip and --vae through UNETLoader's, CLIPLoader's
    and VAELoader's; SystemExit naming the file ComfyUI cannot read."""
    sd, folder_paths = comfy["comfy.sd"], comfy["folder_paths"]
    options = {} if dtype is None else {"dtype": dtype}
    if args.ckpt:
        checkpoint = resolve_model_file(args.ckpt, "checkpoints", "--ckpt", folder_paths)
        try:
            patcher, clip, vae, _ = sd.load_checkpoint_guess_config(str(checkpoint), output_vae=True, output_clip=True,
                                                                    model_options=options)
        except Exception as error:  # ComfyUI raises RuntimeError, ValueError or safetensors errors for unreadable files
            raise SystemExit(f"--ckpt {checkpoint}: ComfyUI cannot load it ({first_line(error)})") from None
        if clip is None:
            raise SystemExit(f"--ckpt {checkpoint}: holds no text encoder; load the diffusion model with --unet and "
                             "its text encoders with --clip")
        return LoadedModel(patcher, ClipText(clip), vae, checkpoint, [checkpoint])
    if not (args.clip or args.text_embeddings) or not args.vae:
        raise SystemExit("--unet: also give its text encoder(s) with --clip (once per file), or the prompts' "
                         "conditioning with --text-embeddings, and its VAE with --vae, as ComfyUI's UNETLoader, "
                         "CLIPLoader and VAELoader take them")
    unet = resolve_model_file(args.unet, "diffusion_models", "--unet", folder_paths)
    if args.text_embeddings:
        texts = [Path(args.text_embeddings).expanduser().resolve()]
        text = TextEmbeddingsFile(texts[0])  # read (and refused if it is not one) before the model loads
    else:
        texts = [resolve_model_file(name, "text_encoders", "--clip", folder_paths) for name in args.clip]
    vae_file = resolve_model_file(args.vae, "vae", "--vae", folder_paths)
    try:
        patcher = sd.load_diffusion_model(str(unet), model_options=options)
    except Exception as error:
        raise SystemExit(f"--unet {unet}: ComfyUI cannot load it ({first_line(error)})") from None
    if not args.text_embeddings:
        family = SUPPORTED.get(type(patcher.model.model_config).__name__)
        text = ClipText(load_text_encoders(texts, args.clip_type or CLIP_TYPE.get(family, "stable_diffusion"), comfy))
    try:
        vae = sd.VAE(sd=comfy["comfy.utils"].load_torch_file(str(vae_file)))
        vae.throw_exception_if_invalid()
    except Exception as error:
        raise SystemExit(f"--vae {vae_file}: ComfyUI cannot load it ({first_line(error)})") from None
    logging.info("DICE: %s with the text of %s and VAE %s", unet.name, [t.name for t in texts], vae_file.name)
    return LoadedModel(patcher, text, vae, unet, texts)


def load_text_encoders(files: list[Path], clip_type: str, comfy: dict):
    """ComfyUI's CLIP object for these text encoder files, as CLIPLoader loads them; SystemExit naming what is wrong."""
    sd, folder_paths = comfy["comfy.sd"], comfy["folder_paths"]
    if clip_type not in clip_type_names(sd):
        raise SystemExit(f"--clip-type {clip_type}: not one of ComfyUI's ({', '.join(clip_type_names(sd))})")
    try:
        return sd.load_clip([str(f) for f in files], embedding_directory=folder_paths.get_folder_paths("embeddings"),
                            clip_type=getattr(sd.CLIPType, clip_type.upper()))
    except Exception as error:
        raise SystemExit(f"--clip {', '.join(f.name for f in files)}: ComfyUI cannot load them as {clip_type} "
                         f"text encoders ({first_line(error)})") from None


def model_family(loaded: LoadedModel, flag: str) -> str:
    """The family name of a model this trainer drives; SystemExit naming any other, and why."""
    config = loaded.patcher.model.model_config
    kind = type(config).__name__
    where = f"{flag} {loaded.base}"
    if kind in GUIDANCE_DISTILLED:
        raise SystemExit(f"{where}: a {GUIDANCE_DISTILLED[kind]} model, which is guidance-distilled: it runs without "
                         "CFG (its guidance is an input), so there is no CFG for a sharpener to learn")
    if kind not in SUPPORTED:
        raise SystemExit(f"{where}: a {kind} model; this trainer supports SD1.x, SD2.x, SDXL, SD3/SD3.5, "
                         f"PixArt-α/Σ, Wan 2.1 text-to-video (and Wan 2.2 14B, which loads as it), Wan 2.2 5B, Chroma, "
                         f"Lumina 2, AuraFlow and Qwen-Image ({', '.join(SUPPORTED)}), the families a host test "
                         "shows it on")
    # ComfyUI's inpaint_model() asks for more than 4 input channels, which SD3's 16-channel latent has anyway.
    channels = config.unet_config.get("in_channels", config.unet_config.get("in_dim", 0)) // PATCHED_INPUT.get(kind, 1)
    if channels > config.latent_format.latent_channels:
        raise SystemExit(f"{where}: an inpainting {kind} model (its UNet also takes the masked image); "
                         "this trainer supports text-to-image models")
    return SUPPORTED[kind]


def native_resolution(loaded: LoadedModel, family: str, prediction: str) -> int:
    """The image size the family was trained at."""
    if family.startswith("pixart"):
        latent_size = loaded.patcher.model.model_config.unet_config.get("input_size") or 128
        return int(latent_size) * 8
    return NATIVE_RESOLUTION[family, prediction]
