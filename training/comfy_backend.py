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

from ..sharpeners.adapter import block_layers
from ..sharpeners.families import FAMILIES
from ..sharpeners.formulas import repeat_to_common_length
from .checkpoint import write_atomic
from .comfy_locate import find_comfy_root
from .comfy_models import (CLIP_TYPE, DEFAULT_FRAMES, IN_PLACE_FORWARD, PREDICTION, UNET_FAMILIES, VIDEO_FAMILIES, load_model,
                           model_family, native_resolution)
from .datasets import DatasetError, Example, load_examples
from .hashing import file_sha256
from .loop import RunInfo
from .memory import checkpoint_layers
from .precision import PRECISIONS
from .progress import Progress
from .sampler import sample
from .text_embeddings import ClipText, TextEmbeddingsFile

# Prompts for --ckpt without --data: written for the pack, the way people prompt SD1.5 and SDXL checkpoints.
SHIPPED_PROMPTS = Path(__file__).resolve().parent / "prompts" / "sd_prompts.txt"


def import_comfy(root: Path):
    """ComfyUI's comfy package from root, on the CPU when there is no GPU (comfy needs to be told)."""
    sys.path.insert(0, str(root))  # ComfyUI is a folder, not an installed package
    options = importlib.import_module("comfy.options")
    options.enable_args_parsing(False)
    importlib.import_module("comfy.cli_args").args.cpu = not torch.cuda.is_available()
    return {name: importlib.import_module(name) for name in
            ("comfy.sd", "comfy.model_management", "comfy.samplers", "comfy.conds", "comfy.utils", "folder_paths")}


# The linear layers a guidance adapter holds in each family's blocks, by the block's class in ComfyUI: the attention
# projections, and for "transformer" the feed-forward layers too.
ADAPTER_BLOCKS = {
    # SD1.x, SD2.x, SDXL: the UNet's self- and cross-attention.
    "BasicTransformerBlock": (tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")),
                              ("ff.net.0.proj", "ff.net.2")),
    # SD3/SD3.5: both streams of every joint block (image and context; attn2 is MMDiT-X's second image attention; the
    # last context block has neither a projection nor an MLP).
    "DismantledBlock": (("attn.qkv", "attn.proj", "attn2.qkv", "attn2.proj"), ("mlp.fc1", "mlp.fc2")),
    # PixArt-α/Σ: self-attention, cross-attention over the T5 tokens.
    "PixArtMSBlock": (("attn.qkv", "attn.proj", "cross_attn.q_linear", "cross_attn.kv_linear", "cross_attn.proj"),
                      ("mlp.fc1", "mlp.fc2")),
    # Wan 2.1 (and 2.2 14B): self-attention over the clip's tokens, cross-attention over UMT5's.
    "WanAttentionBlock": (tuple(f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"), ("ffn.0", "ffn.2")),
    # Chroma: both streams of the double blocks; a single block's linear1 also holds the MLP's input, linear2 its output.
    "DoubleStreamBlock": (("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj"),
                          ("img_mlp.0", "img_mlp.2", "txt_mlp.0", "txt_mlp.2")),
    "SingleStreamBlock": (("linear1", "linear2"), ()),
    # Lumina 2: the joint attention over image and Gemma tokens, and the gated MLP (also in the refiner blocks).
    "JointTransformerBlock": (("attention.qkv", "attention.out"), ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3")),
    # AuraFlow: both streams of the joint blocks (w1 the image's, w2 the Pile T5 tokens'; the last context stream has
    # no MLP), then the single blocks.
    "MMDiTBlock": (tuple(f"attn.w{s}{p}" for s in "12" for p in "qkvo"),
                   tuple(f"{m}.{p}" for m in ("mlpX", "mlpC") for p in ("c_fc1", "c_fc2", "c_proj"))),
    "DiTBlock": (tuple(f"attn.w1{p}" for p in "qkvo"), ("mlp.c_fc1", "mlp.c_fc2", "mlp.c_proj")),
    # Qwen-Image: both streams of the joint attention (to_* the image's, add_* the Qwen2.5-VL tokens'), both MLPs.
    "QwenImageTransformerBlock": (tuple(f"attn.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
                                                                "add_k_proj", "add_v_proj", "to_add_out")),
                                  tuple(f"{m}.net.{p}" for m in ("img_mlp", "txt_mlp") for p in ("0.proj", "2"))),
}


def adapter_layers_of(diffusion_model: torch.nn.Module, selection: str) -> list[str]:
    """The paths of the layers an adapter of this selection holds in ComfyUI's diffusion model, for every family in
    ADAPTER_BLOCKS; for "transformer" and "all" also the UNets' linear proj_in / proj_out around the blocks (SD2,
    SDXL), and for "all" the UNets' res-blocks' two 2-D convolutions (the transformers have none)."""
    paths = []
    for block_type, (attention, others) in ADAPTER_BLOCKS.items():
        paths += block_layers(diffusion_model, selection, attention, others, block_type)
    if selection != "attention":
        paths += block_layers(diffusion_model, selection, (), ("proj_in", "proj_out"), "SpatialTransformer")
    if selection == "all":
        paths += block_layers(diffusion_model, selection, (), ("in_layers.2", "out_layers.3"), "ResBlock",
                              kinds=(torch.nn.Conv2d,))
    return sorted(paths)


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


class ComfyBackend:
    """DiffusionBackend over a ComfyUI model patcher, CLIP and VAE."""

    def __init__(self, comfy: dict, patcher, text: ClipText | TextEmbeddingsFile, vae, examples: list[Example],
                 cache: Path, resolution: int, guidance: float, clip_skip: int, model_key: str,
                 text_key: str | None = None, frames: int | None = None, copy_saved_tensors: bool = False) -> None:
        self.comfy, self.patcher, self.text, self.vae = comfy, patcher, text, vae
        self.clip = getattr(text, "clip", None)  # None where the prompts' conditioning comes from a file
        comfy["comfy.model_management"].load_models_gpu([patcher])
        self.model = patcher.model
        self.model.requires_grad_(False)
        self.device = comfy["comfy.model_management"].get_torch_device()
        if clip_skip > 1:
            self.clip.clip_layer(-clip_skip)
        self.cache, self.resolution, self.guidance, self.model_key = cache, resolution, guidance, model_key
        self.text_key = text_key or model_key  # the text encoders' identity, for the text cache
        self.copy_saved_tensors = copy_saved_tensors
        self._embeddings: dict[str, dict[str, torch.Tensor]] = {}
        null = self._text([""])[0]
        # A masked encoder (Lumina 2's Gemma): its prompts are never padded (checked when encoding), so a call's mask is
        # all ones over its context's tokens, as one conditioning gives it to the model.
        self.token_masks = "attention_mask" in null
        channels = self.model.latent_format.latent_channels
        self.spatial = vae.spacial_compression_encode()  # 8 for every family here
        side = resolution // self.spatial
        self.latent_shape = (channels, side, side)
        if frames is not None:  # a clip: the VAE's temporal compression as ComfyUI's empty video latents count it
            self.latent_shape = (channels, int(vae.downscale_ratio[0](frames)), side, side)
        elif self.model.latent_format.latent_dimensions == 3:  # an image in a video latent (Qwen-Image): one frame
            self.latent_shape = (channels, 1, side, side)
        # What the model's own extra_conds builds from the empty prompt: whether the pooled output reaches the model
        # (SDXL's and SD3's y) and whether its sampler may tile two contexts into one call (CONDCrossAttn).
        probe = self._model_conds(torch.zeros(1, *self.latent_shape), null["tensor"], null.get("pooled"))
        self.takes_pooled = "y" in probe
        self.tiles_contexts = isinstance(probe.get("c_crossattn"), comfy["comfy.conds"].CONDCrossAttn)
        self.embed_dim = null["tensor"].shape[-1]
        self.draw_steps, self.draw_batch = 20, 4  # a prompt's latent: 20 DPM-Solver++(2M) steps, 4 prompts a call
        self.latents_drawn, self.drawing_seconds = 0, 0.0
        self.compute_dtype = self.model.manual_cast_dtype or self.model.get_dtype()
        self.examples, self.latents = self._prepare(examples)
        self.groups = self._token_groups()
        self._caption_group = None if self.groups is None else {e.caption: self.groups[i][0] for i, e in enumerate(self.examples)}

    def _token_groups(self) -> list[list[int]] | None:
        """For models that cannot tile contexts: each example's group of examples with the same token counts (from
        the tokenizers alone, which is quick), so a batch's prompts go into one call; None where contexts tile."""
        if self.tiles_contexts:
            return None
        by_shape: dict[tuple, list[int]] = {}
        for index, example in enumerate(self.examples):
            by_shape.setdefault(self.text.token_shape(example.caption), []).append(index)
        group_of = {index: group for group in by_shape.values() for index in group}
        return [group_of[index] for index in range(len(self.examples))]

    def _picks(self, count: int, generator: torch.Generator) -> list[int]:
        """count random examples; where contexts cannot tile, the rest from the first one's token-count group (each
        example is still drawn equally often)."""
        if self.groups is None:
            return torch.randint(0, len(self.examples), (count,), generator=generator).tolist()
        first = int(torch.randint(0, len(self.examples), (1,), generator=generator))
        group = self.groups[first]
        return [first] + [group[i] for i in torch.randint(0, len(group), (count - 1,), generator=generator).tolist()]

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
        text = "" if self.text_key == self.model_key else f"{self.text_key}|"  # a checkpoint's text is its own
        return (f"prompt|{caption}|{seed}|{self.resolution}|{self.guidance}|{self.model_key}|{text}"
                f"{self.text.layer_key()}", seed)

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
        batches: dict[int, list[int]] = {}
        for index in missing:  # prompts of one token count together where the model cannot tile contexts
            batches.setdefault(0 if self.groups is None else id(self.groups[index]), []).append(index)
        for indices in batches.values():
            for first in range(0, len(indices), self.draw_batch):
                self._draw([*indices[first:first + self.draw_batch]])
        return torch.stack([self.latents[i] for i in picks])

    def _draw(self, indices: list[int]) -> None:
        """Each prompt's training latent, drawn by the checkpoint itself with CFG, then cached on disk."""
        begun = time.perf_counter()
        captions = [self.examples[i].caption for i in indices]
        keys, seeds = zip(*(self._prompt_key(c) for c in captions))
        drawn = sample(self.predict_noise, self.encode_prompts(captions), self.sampling_sigmas(self.draw_steps),
                       list(seeds), self.latent_shape, self.null_embedding(), self.guidance,
                       y=self.encode_vectors(captions), null_y=self.encode_vectors([""]), join=self.join_contexts).cpu()
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
        paths = adapter_layers_of(self.model.diffusion_model, selection)
        if not paths:  # a family whose blocks ADAPTER_BLOCKS does not name
            raise SystemExit(f"--train adapter: no {selection} layers known in this "
                             f"{type(self.model.model_config).__name__} model; train a sharpener for it")
        return paths

    def checkpoint_layers(self) -> int:
        return checkpoint_layers(self.model.diffusion_model, {"ResBlock", "SpatialTransformer"})

    def _encode_image(self, path: Path) -> dict[str, torch.Tensor] | None:
        pixels = load_image(path, self.resolution)
        if pixels is None:
            return None
        latent = self.vae.encode(torch.from_numpy(pixels)[None])
        return {"tensor": self.model.process_latent_in(latent)[0].float().cpu()}

    def _text(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Each prompt's token embeddings ("tensor") and pooled output, from memory, the disk cache, or the encoder."""
        for prompt in dict.fromkeys(prompts):
            if prompt not in self._embeddings:
                key = f"text|{prompt}|{self.text_key}|{self.text.layer_key()}|pooled"
                self._embeddings[prompt] = self._cached(key, lambda: self.text.encode(prompt), kind="text")
        return [self._embeddings[p] for p in prompts]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        contexts = [t["tensor"] for t in self._text(prompts)]
        joined = self.join_contexts(contexts)
        if joined is None:
            raise ValueError(f"prompts of {sorted({c.shape[1] for c in contexts})} tokens cannot go into one call "
                             "of this model; batch prompts of one token count")
        return torch.cat(joined).to(self.device)

    def join_contexts(self, contexts: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """As ComfyUI's sampler batches conditionings: tiled to a common length where the model's cross-attention
        gives the same result for a tiled sequence (CONDCrossAttn; ComfyUI stops at 4 repeats for speed, the result
        is the same), else only contexts of one length (SD3's joint attention, PixArt's CONDRegular)."""
        if len({c.shape[1] for c in contexts}) == 1:
            return contexts
        return repeat_to_common_length(contexts) if self.tiles_contexts else None

    def encode_vectors(self, prompts: list[str]) -> torch.Tensor | None:
        """The pooled text output, for models whose extra_conds turns it into y (SDXL with the sizes, SD3 as it is)."""
        if not self.takes_pooled:
            return None
        return torch.cat([t["pooled"] for t in self._text(prompts)]).to(self.device)

    def null_embedding(self) -> torch.Tensor:
        return self.encode_prompts([""])

    def sample_training_latents(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        picks = self._picks(count, generator)
        return self._latents(picks).to(self.device), [self.examples[i].caption for i in picks]

    def sample_captions(self, count: int, generator: torch.Generator) -> list[str]:
        """Training captions alone (for CFG sampling runs): no latent is drawn or encoded for them."""
        return [self.examples[i].caption for i in self._picks(count, generator)]

    def context_group(self, prompt: str) -> int | None:
        """The training prompt's token-count group (its first example's index), None where contexts tile."""
        return None if self._caption_group is None else self._caption_group[prompt]

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The model sampling's own noise_scaling: x_0 + σ·ε for eps and v, (1 − σ)·x_0 + σ·ε for flow (CONST)."""
        return self.model.model_sampling.noise_scaling(sigma, noise, x0)

    def sample_sigmas(self, count: int, generator: torch.Generator) -> torch.Tensor:
        sigmas = self.model.model_sampling.sigmas
        return sigmas[torch.randint(0, len(sigmas), (count,), generator=generator)].float().to(self.device)

    def noise_level(self, sigma: torch.Tensor) -> torch.Tensor:
        sampling = self.model.model_sampling
        return sampling.timestep(sigma) / sampling.timestep(torch.as_tensor(sampling.sigma_max, device=sigma.device))

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        return self.comfy["comfy.samplers"].calculate_sigmas(self.model.model_sampling, "normal", steps).float().to(self.device)

    def _model_conds(self, x: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor | None) -> dict:
        """The model's inputs as the KSampler builds them: its extra_conds on the conditioning (and the latent's size;
        a masked encoder's mask, all ones over the context's tokens, in integers as the encoder gives it: Lumina 2
        counts its tokens from it)."""
        mask = ({"attention_mask": torch.ones(1, context.shape[1], dtype=torch.long, device=x.device)}
                if self.token_masks else {})
        return self.model.extra_conds(cross_attn=context, pooled_output=pooled, device=x.device, noise=x,
                                      width=x.shape[-1] * self.spatial, height=x.shape[-2] * self.spatial, **mask)

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                      y: torch.Tensor | None = None) -> torch.Tensor:
        x, sigma = x.to(self.device), sigma.to(self.device)
        conds = self._model_conds(x, context.to(self.device), None if y is None else y.to(self.device))
        inputs = {name: cond.process_cond(batch_size=len(x), device=self.device, area=None).cond
                  for name, cond in conds.items()}
        if self.copy_saved_tensors and torch.is_grad_enabled():
            with torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda saved: saved):
                denoised = self.model.apply_model(x, sigma, **inputs)
        else:
            denoised = self.model.apply_model(x, sigma, **inputs)
        # apply_model returns the denoised latent for every prediction type; the step direction is (x − x̂_0) / σ.
        return (x - denoised) / sigma.view(-1, *[1] * (x.ndim - 1))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        images = self.vae.decode(self.model.process_latent_out(latents.to(self.device)))
        if images.ndim == 5:  # clips [batch, frames, height, width, RGB]: the grid shows each one's middle frame
            images = images[:, images.shape[1] // 2]
        return (images.clamp(0, 1) * 255).round().byte().cpu().numpy()


def text_encoders_key(files: list[Path], clip_type: str) -> str:
    """The split text encoders' identity for the text cache: names, sizes and times (hashing gigabytes of T5 at every
    start would cost more than it protects)."""
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha1(repr((stats, clip_type)).encode()).hexdigest()


def check_text_embeddings(text: TextEmbeddingsFile, family: str, captions: list[str]) -> None:
    """SystemExit where the file's conditioning is not this family's width or lacks prompts the run needs."""
    missing = [p for p in dict.fromkeys(["", *captions]) if p not in text.index]
    if missing:
        raise SystemExit(f"--text-embeddings {text.path}: lacks {len(missing)} of the prompts this run needs (the "
                         f"first: {missing[0][:60]!r}; the empty prompt is CFG's reference); encode them with "
                         "python training/encode_prompts.py --data <this run's --data>")
    width, expected = int(text.encode("")["tensor"].shape[-1]), FAMILIES[family].width
    if width != expected:
        raise SystemExit(f"--text-embeddings {text.path}: {width}-wide conditioning (from {text.clip_type} text "
                         f"encoders), but {FAMILIES[family].name} takes {expected}: encode the prompts with this "
                         "model's own text encoder")


def comfy_run(args):
    """Backend, run info, run name and sample prompts for --ckpt or --unet; SystemExit with a clear message on bad
    input."""
    root = find_comfy_root(args.comfy_root, Path(__file__).resolve().parents[1])
    if root is None:
        raise SystemExit("no ComfyUI found: run train.py from ComfyUI/custom_nodes/<this pack>, "
                         "or pass --comfy-root, or set COMFYUI_PATH")
    if args.frames is not None and (args.frames < 1 or (args.frames - 1) % 4):
        raise SystemExit(f"--frames {args.frames}: must be 1 + a multiple of 4 (1, 5, 9, 13, 17 ...), as the VAE packs "
                         "4 frames into each latent frame after the first")
    comfy = import_comfy(root)
    loaded = load_model(args, comfy, PRECISIONS[args.mixed_precision])
    flag = "--ckpt" if args.ckpt else "--unet"
    family = model_family(loaded, flag)
    if args.negatives and family not in UNET_FAMILIES:
        raise SystemExit(f"--negatives: not for {family} yet (its sampler runs prompts of different token counts "
                         "as separate calls, which random negative prompts would make of every batch)")
    data = args.data or SHIPPED_PROMPTS
    if not args.data:
        print(f"[DICE] no --data: training on the pack's own prompts ({SHIPPED_PROMPTS.name}); the model draws "
              "each prompt's training image with CFG the first time a step uses it, and caches it", flush=True)
    try:
        examples = load_examples(data)
    except DatasetError as error:
        raise SystemExit(str(error)) from None
    prediction = PREDICTION.get(getattr(loaded.patcher.model.model_type, "name", ""), "eps")
    resolution = args.resolution or native_resolution(loaded, family, prediction)
    compression = int(loaded.vae.spacial_compression_encode())  # 8, or 16 for Wan 2.2 5B's VAE
    if resolution % compression:
        raise SystemExit(f"--resolution {resolution}: must be a multiple of {compression}, the VAE's compression "
                         f"for {family}")
    frames = None
    if family in VIDEO_FAMILIES:
        frames = args.frames or DEFAULT_FRAMES
        if any(e.image is not None for e in examples):
            raise SystemExit(f"--data {data}: holds images; a {family} run trains on clips the model draws from the "
                             "prompts, so give it a prompts file (or no --data)")
    elif args.frames:
        raise SystemExit(f"--frames goes with a video model (Wan); {loaded.base.name} is {family}, which makes images")
    sha256 = file_sha256(loaded.base)
    if args.text_embeddings:
        check_text_embeddings(loaded.text, family, [e.caption for e in examples])
    text_key = None if args.ckpt else text_encoders_key(
        loaded.text_files, "embeddings" if args.text_embeddings else args.clip_type or CLIP_TYPE[family])
    name = args.name or f"{loaded.base.stem}_dice"
    cache = Path(args.runs) / name / "cache"
    backend = ComfyBackend(comfy, loaded.patcher, loaded.text, loaded.vae, examples, cache, resolution, args.guidance,
                           args.clip_skip, sha256, text_key, frames, family in IN_PLACE_FORWARD)
    info = RunInfo(model_family=family, base_checkpoint=loaded.base.name, base_checkpoint_sha256=sha256,
                   clip_skip=args.clip_skip, prediction_type=prediction)
    prompts = list(dict.fromkeys(e.caption for e in backend.examples))[:4]
    return backend, info, name, prompts
