"""A checkpoint loaded through ComfyUI's own comfy package, so the sharpener learns the KSampler's predictions."""
from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..sharpeners.adapter import linear_layers
from ..sharpeners.formulas import repeat_to_common_length
from .checkpoint import write_atomic
from .comfy_locate import find_comfy_root
from .datasets import DatasetError, Example, load_examples
from .loop import RunInfo
from .memory import checkpoint_layers
from .precision import PRECISIONS
from .progress import Progress
from .sampler import sample

# Prompts for --ckpt without --data: written for the pack, the way people prompt SD1.5 and SDXL checkpoints.
SHIPPED_PROMPTS = Path(__file__).resolve().parent / "prompts" / "sd_prompts.txt"
# ComfyUI's model classes this trainer drives, and the family name written into the sharpener file.
SUPPORTED = {"SD15": "sd15", "SD20": "sd2", "SDXL": "sdxl", "SSD1B": "sdxl", "Segmind_Vega": "sdxl",
             "KOALA_700M": "sdxl", "KOALA_1B": "sdxl"}
# Training image size when --resolution is not given: the size each family and prediction type was trained at.
NATIVE_RESOLUTION = {("sd15", "eps"): 512, ("sd15", "v"): 512, ("sd2", "eps"): 512, ("sd2", "v"): 768,
                     ("sdxl", "eps"): 1024, ("sdxl", "v"): 1024}
# Families whose UNet also takes a vector y: the pooled text (unchanged by the sharpener) and the image size.
VECTOR_INPUT = {"sdxl"}
PREDICTION = {"EPS": "eps", "V_PREDICTION": "v"}


def import_comfy(root: Path):
    """ComfyUI's comfy package from root, on the CPU when there is no GPU (comfy needs to be told)."""
    sys.path.insert(0, str(root))  # ComfyUI is a folder, not an installed package
    options = importlib.import_module("comfy.options")
    options.enable_args_parsing(False)
    importlib.import_module("comfy.cli_args").args.cpu = not torch.cuda.is_available()
    return {name: importlib.import_module(name) for name in
            ("comfy.sd", "comfy.model_management", "comfy.samplers", "folder_paths")}


def unet_adapter_layers(diffusion_model: torch.nn.Module, selection: str) -> list[str]:
    """Each transformer block's self- and cross-attention projections (to_q, to_k, to_v, to_out.0) in ComfyUI's UNet,
    and for "transformer" its feed-forward layers and the linear proj_in / proj_out around the blocks (SD2, SDXL)."""
    attention = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
    paths = linear_layers(diffusion_model, selection, attention, ("ff.net.0.proj", "ff.net.2"), "BasicTransformerBlock")
    if selection == "transformer":
        paths += linear_layers(diffusion_model, selection, (), ("proj_in", "proj_out"), "SpatialTransformer")
    return sorted(paths)


def resolve_checkpoint(name: str, folder_paths) -> Path:
    """A path as given, or a name in ComfyUI's models/checkpoints."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    found = folder_paths.get_full_path("checkpoints", name)
    if found:
        return Path(found)
    available = folder_paths.get_filename_list("checkpoints")[:8]
    raise SystemExit(f"--ckpt {name}: neither a file nor a name in models/checkpoints "
                     f"(there: {', '.join(available) if available else 'nothing'})")


def load_image(path: Path, resolution: int) -> np.ndarray | None:
    """RGB float [resolution, resolution, 3] in 0..1, resized on the short side and centre-cropped; None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = resolution / min(image.size)
            image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)
            left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
            return np.asarray(image.crop((left, top, left + resolution, top + resolution)), np.float32) / 255
    except (OSError, UnidentifiedImageError, ValueError) as error:
        logging.warning("DICE: skipping %s: not a readable image (%s)", path, error)
        return None


def clip_skip_key(clip) -> str:
    """The CLIP layer in use, so cached images made with another clip skip are not reused."""
    return str(getattr(clip, "layer_idx", None))


class ComfyBackend:
    """DiffusionBackend over a ComfyUI model patcher, CLIP and VAE."""

    def __init__(self, comfy: dict, patcher, clip, vae, examples: list[Example], cache: Path, resolution: int,
                 guidance: float, clip_skip: int, model_key: str, vector_input: bool = False) -> None:
        self.comfy, self.patcher, self.clip, self.vae = comfy, patcher, clip, vae
        comfy["comfy.model_management"].load_models_gpu([patcher])
        self.model = patcher.model
        self.model.requires_grad_(False)
        self.device = comfy["comfy.model_management"].get_torch_device()
        if clip_skip > 1:
            self.clip.clip_layer(-clip_skip)
        self.cache, self.resolution, self.guidance, self.model_key = cache, resolution, guidance, model_key
        self.vector_input = vector_input
        self._embeddings: dict[str, dict[str, torch.Tensor]] = {}
        self.embed_dim = self.null_embedding().shape[-1]
        channels = self.model.latent_format.latent_channels
        self.latent_shape = (channels, resolution // 8, resolution // 8)
        self.draw_steps, self.draw_batch = 20, 4  # a prompt's latent: 20 DPM-Solver++(2M) steps, 4 prompts a call
        self.latents_drawn, self.drawing_seconds = 0, 0.0
        self.compute_dtype = self.model.manual_cast_dtype or self.model.get_dtype()
        self.examples, self.latents = self._prepare(examples)

    def _cached(self, key: str, make, kind: str = "latents") -> dict[str, torch.Tensor] | None:
        """make()'s tensors, kept in cache/<kind>/ under a hash of key; None (a bad file) is not kept."""
        path = self._cache_path(key, kind)
        if path.exists():
            return load_file(path)
        tensors = make()
        if tensors is not None:
            write_atomic(path, lambda temporary: save_file({k: v.contiguous() for k, v in tensors.items()}, temporary))
        return tensors

    @torch.no_grad()
    def _prepare(self, examples: list[Example]) -> tuple[list[Example], list[torch.Tensor | None]]:
        """Every image's latent, from the disk cache or VAE-encoded now; prompts' latents are drawn when first used."""
        kept, latents = [], []
        images = [e for e in examples if e.image is not None]
        progress = Progress(len(images), "caching latents", "images") if images else None
        done = 0
        for example in examples:
            if example.image is None:
                kept.append(example)
                latents.append(None)
                continue
            status = example.image.stat() if example.image.exists() else None
            key = f"image|{example.image}|{status and status.st_mtime_ns}|{status and status.st_size}|{self.resolution}"
            cached = self._cached(key, lambda: self._encode_image(example.image))
            if cached is not None:
                kept.append(example)
                latents.append(cached["tensor"])
            done += 1
            progress.update(done)
        if not kept:
            raise DatasetError("no usable training examples: every image failed to load (see the warnings above)")
        return kept, latents

    def _prompt_key(self, caption: str) -> tuple[str, int]:
        seed = int(hashlib.sha1(caption.encode()).hexdigest()[:8], 16)
        return (f"prompt|{caption}|{seed}|{self.resolution}|{self.guidance}|{self.model_key}|{clip_skip_key(self.clip)}",
                seed)

    def _cache_path(self, key: str, kind: str = "latents") -> Path:
        return self.cache / kind / f"{hashlib.sha1(key.encode()).hexdigest()}.safetensors"

    @torch.no_grad()
    def _latents(self, picks: list[int]) -> torch.Tensor:
        """The picked examples' latents: in memory, in the disk cache, or drawn now with CFG (a few at a time)."""
        missing = []
        for index in dict.fromkeys(picks):
            if self.latents[index] is not None:
                continue
            path = self._cache_path(self._prompt_key(self.examples[index].caption)[0])
            if path.exists():
                self.latents[index] = load_file(path)["tensor"]
            else:
                missing.append(index)
        for first in range(0, len(missing), self.draw_batch):
            self._draw([*missing[first:first + self.draw_batch]])
        return torch.stack([self.latents[i] for i in picks])

    def _draw(self, indices: list[int]) -> None:
        """Each prompt's training latent, drawn by the checkpoint itself with CFG, then cached on disk."""
        begun = time.perf_counter()
        captions = [self.examples[i].caption for i in indices]
        keys, seeds = zip(*(self._prompt_key(c) for c in captions))
        # Long prompts' 77·k tokens and the empty prompt's 77, tiled to one length as ComfyUI batches them.
        context, null = repeat_to_common_length([self.encode_prompts(captions), self.null_embedding()])
        drawn = sample(self.predict_noise, context, self.sampling_sigmas(self.draw_steps), list(seeds),
                       self.latent_shape, null, self.guidance, y=self.encode_vectors(captions),
                       null_y=self.encode_vectors([""])).cpu()
        for index, key, latent in zip(indices, keys, drawn):
            self.latents[index] = latent.clone()
            write_atomic(self._cache_path(key), lambda temporary: save_file({"tensor": self.latents[index]}, temporary))
        self.latents_drawn += len(indices)
        self.drawing_seconds += time.perf_counter() - begun

    def latents_to_draw(self, samples: int) -> float:
        """How many prompts' latents a run of this many samples is expected to draw (the rest are cached)."""
        missing = sum(1 for e, latent in zip(self.examples, self.latents) if latent is None
                      and not self._cache_path(self._prompt_key(e.caption)[0]).exists())
        return missing * (1 - (1 - 1 / len(self.examples)) ** samples)

    def adapter_model(self) -> torch.nn.Module:
        return self.model.diffusion_model

    def adapter_layers(self, selection: str) -> list[str]:
        return unet_adapter_layers(self.model.diffusion_model, selection)

    def checkpoint_layers(self) -> int:
        return checkpoint_layers(self.model.diffusion_model, {"ResBlock", "SpatialTransformer"})

    def _encode_image(self, path: Path) -> dict[str, torch.Tensor] | None:
        pixels = load_image(path, self.resolution)
        if pixels is None:
            return None
        latent = self.vae.encode(torch.from_numpy(pixels)[None])
        return {"tensor": self.model.process_latent_in(latent)[0].float().cpu()}

    def _text(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Each prompt's token embeddings ("tensor") and pooled output, from memory, the disk cache, or CLIP."""
        for prompt in dict.fromkeys(prompts):
            if prompt not in self._embeddings:
                key = f"text|{prompt}|{self.model_key}|{clip_skip_key(self.clip)}|pooled"
                self._embeddings[prompt] = self._cached(key, lambda: self._encode_text(prompt), kind="text")
        return [self._embeddings[p] for p in prompts]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        # Long prompts give 77·k tokens; tile them to a common length as ComfyUI does when batching.
        return torch.cat(repeat_to_common_length([t["tensor"] for t in self._text(prompts)])).to(self.device)

    def encode_vectors(self, prompts: list[str]) -> torch.Tensor | None:
        """SDXL's y as the KSampler builds it: pooled text, then the size, no crop, target size = size."""
        if not self.vector_input:
            return None
        pooled = torch.cat([t["pooled"] for t in self._text(prompts)])
        size = self.resolution
        return self.model.encode_adm(pooled_output=pooled, width=size, height=size, crop_w=0, crop_h=0,
                                     target_width=size, target_height=size).float().to(self.device)

    @torch.no_grad()
    def _encode_text(self, prompt: str) -> dict[str, torch.Tensor]:
        cond, pooled = self.clip.encode_from_tokens(self.clip.tokenize(prompt), return_pooled=True)
        return {"tensor": cond.float().cpu(), "pooled": pooled.float().cpu()}

    def null_embedding(self) -> torch.Tensor:
        return self.encode_prompts([""])

    def sample_training_latents(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        picks = torch.randint(0, len(self.examples), (count,), generator=generator).tolist()
        return self._latents(picks).to(self.device), [self.examples[i].caption for i in picks]

    def sample_captions(self, count: int, generator: torch.Generator) -> list[str]:
        """Training captions alone (for CFG sampling runs): no latent is drawn or encoded for them."""
        return [self.examples[i].caption for i in torch.randint(0, len(self.examples), (count,), generator=generator).tolist()]

    def sample_sigmas(self, count: int, generator: torch.Generator) -> torch.Tensor:
        sigmas = self.model.model_sampling.sigmas
        return sigmas[torch.randint(0, len(sigmas), (count,), generator=generator)].float().to(self.device)

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        return self.comfy["comfy.samplers"].calculate_sigmas(self.model.model_sampling, "normal", steps).float().to(self.device)

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      y: torch.Tensor | None = None) -> torch.Tensor:
        x, sigma = x.to(self.device), sigma.to(self.device)
        vector = {} if y is None else {"y": y.to(self.device)}
        denoised = self.model.apply_model(x, sigma, c_crossattn=context.to(self.device), **vector)
        # apply_model returns the denoised latent for every prediction type; eps follows from x = x0 + σ·eps.
        return (x - denoised) / sigma.view(-1, 1, 1, 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        images = self.vae.decode(self.model.process_latent_out(latents.to(self.device)))
        return (images.clamp(0, 1) * 255).round().byte().cpu().numpy()


def comfy_run(args):
    """Backend, run info, run name and sample prompts for --ckpt; SystemExit with a clear message on bad input."""
    root = find_comfy_root(args.comfy_root, Path(__file__).resolve().parents[1])
    if root is None:
        raise SystemExit("no ComfyUI found: run train.py from ComfyUI/custom_nodes/<this pack>, "
                         "or pass --comfy-root, or set COMFYUI_PATH")
    comfy = import_comfy(root)
    checkpoint = resolve_checkpoint(args.ckpt, comfy["folder_paths"])
    dtype = PRECISIONS[args.mixed_precision]
    try:
        patcher, clip, vae, _ = comfy["comfy.sd"].load_checkpoint_guess_config(
            str(checkpoint), output_vae=True, output_clip=True, model_options={} if dtype is None else {"dtype": dtype})
    except Exception as error:  # ComfyUI raises RuntimeError, ValueError or safetensors errors for unreadable files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SystemExit(f"--ckpt {checkpoint}: ComfyUI cannot load it ({first_line})") from None
    kind = type(patcher.model.model_config).__name__
    if kind not in SUPPORTED:
        raise SystemExit(f"--ckpt {checkpoint}: a {kind} model; this trainer supports SD1.x, SD2.x and SDXL "
                         f"checkpoints ({', '.join(SUPPORTED)})")
    if patcher.model.model_config.inpaint_model():
        raise SystemExit(f"--ckpt {checkpoint}: an inpainting {kind} model (its UNet also takes the masked image); "
                         "this trainer supports text-to-image checkpoints")
    data = args.data or SHIPPED_PROMPTS
    if not args.data:
        print(f"[DICE] no --data: training on the pack's own prompts ({SHIPPED_PROMPTS.name}); the checkpoint draws "
              "each prompt's training image with CFG the first time a step uses it, and caches it", flush=True)
    try:
        examples = load_examples(data)
    except DatasetError as error:
        raise SystemExit(str(error)) from None
    prediction = PREDICTION.get(getattr(patcher.model.model_type, "name", ""), "eps")
    family = SUPPORTED[kind]
    resolution = args.resolution or NATIVE_RESOLUTION[family, prediction]
    if resolution % 8:
        raise SystemExit(f"--resolution {resolution}: must be a multiple of 8")
    from .cli import file_sha256

    sha256 = file_sha256(checkpoint)
    name = args.name or f"{checkpoint.stem}_dice"
    cache = Path(args.runs) / name / "cache"
    backend = ComfyBackend(comfy, patcher, clip, vae, examples, cache, resolution, args.guidance, args.clip_skip,
                           sha256, vector_input=family in VECTOR_INPUT)
    info = RunInfo(model_family=family, base_checkpoint=checkpoint.name, base_checkpoint_sha256=sha256,
                   clip_skip=args.clip_skip, prediction_type=prediction)
    prompts = list(dict.fromkeys(e.caption for e in backend.examples))[:4]
    return backend, info, name, prompts
