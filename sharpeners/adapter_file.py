"""The guidance adapter's file: a LoRA in kohya's key layout (lora_unet_<layer>.lora_down.weight, .lora_up.weight,
.alpha), which ComfyUI's LoraLoader and the webuis' built-in Lora load as they are, plus metadata saying what it was
trained for. Read with safetensors only, checked, and refused by name when anything does not fit."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from torch import nn

from .adapter import LORA_PREFIX, AdapterConfig, GuidanceAdapter, layer_shape, lora_name, strength_for_guidance
from .errors import DiceError
from .safefile import sniff_safetensors, write_safetensors

FORMAT_NAME = "dice-guidance-adapter"
KNOB = "strength = ((cfg - 1) / (guidance_scale - 1)) ** knob_exponent"  # sharpeners.adapter.strength_for_guidance
FORMAT_VERSION = 1
# kohya's base-model names, which the webuis' Lora tab reads to sort LoRAs by model.
KOHYA_BASE = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


class AdapterFileError(DiceError):
    """A guidance adapter file that is missing, unreadable, not an adapter, or not for this model."""


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter was trained for; written by the trainer, checked by the loaders."""

    model_family: str = "sd15"
    base_checkpoint: str = ""
    base_checkpoint_sha256: str = ""
    guidance_scale: float = 5.0
    prediction_type: str = "eps"
    clip_skip: int = 1
    training_steps: int = 0
    sharpener: str = ""  # the sharpener file trained with it, when both were trained together
    # The CFG scales it was trained over (the knob's range); 0, 0 in files trained at guidance_scale alone.
    guidance_min: float = 0.0
    guidance_max: float = 0.0
    knob_exponent: float = 1.0
    # The exponent it was trained with, where the knob reads it with another (0: knob_exponent itself).
    knob_trained_exponent: float = 0.0
    knob: str = KNOB  # how a CFG scale becomes a strength, for people and tools reading the metadata
    # Trained to take negative prompts through NAG with these settings (0, 0, 0: not trained with negatives so).
    nag_scale: float = 0.0
    nag_tau: float = 0.0
    nag_alpha: float = 0.0
    init_adapter: str = ""  # the adapter file its training started from ("name sha256:…"), if any
    # A few of the base model's weights (sharpeners.fingerprint), so ComfyUI can tell another checkpoint from it.
    base_fingerprint: str = ""
    # The noise levels its teacher's CFG applied at ("LOW,HIGH", 1 pure noise, 0 clean); "" at every level.
    guidance_interval: str = ""


# Metadata fields a file written before they existed lacks; it reads with their defaults.
ADDED_LATER = {"guidance_min", "guidance_max", "knob_exponent", "knob", "nag_scale", "nag_tau", "nag_alpha",
               "init_adapter", "base_fingerprint", "guidance_interval", "knob_trained_exponent"}


@dataclass(frozen=True)
class AdapterFile:
    """A checked adapter file: its config, info, tensors (kohya layout) and the layers they name."""

    config: AdapterConfig
    info: AdapterInfo
    tensors: dict[str, torch.Tensor]
    path: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(k[: -len(".lora_down.weight")] for k in self.tensors if k.endswith(".lora_down.weight"))

    def summary(self) -> str:
        c, i = self.config, self.info
        return (f"{Path(self.path).name or 'adapter'}: rank {c.rank} on {len(self.names)} {c.layers} layers, {i.model_family}, "
                f"base '{i.base_checkpoint or 'unknown'}', trained at CFG {self.trained_scales()}")

    def trained_scales(self) -> str:
        """'2–9' for a file trained over a range of CFG scales, '5' for one trained at one."""
        i = self.info
        return f"{i.guidance_min:g}–{i.guidance_max:g}" if self.has_knob else f"{i.guidance_scale:g}"

    @property
    def trained_knob_exponent(self) -> float:
        """The knob's exponent during training (the one a run resuming or starting from it must train with)."""
        return self.info.knob_trained_exponent or self.info.knob_exponent

    @property
    def has_knob(self) -> bool:
        """Trained over a range of CFG scales, so its strength follows the cfg knob (files before 2026-12 were not)."""
        return self.info.guidance_max > self.info.guidance_min

    def strength_at(self, cfg: float, strength: float = 1.0) -> tuple[float, str | None]:
        """The LoRA strength for CFG scale cfg (times the user's strength), and a warning when cfg lies outside the
        scales the file was trained for (the strength is then extrapolated, which tracks CFG less well)."""
        if not math.isfinite(cfg) or cfg < 1:
            raise AdapterFileError(f"cfg {cfg!r}: a CFG scale of 1 or more (1 = the plain model)")
        i = self.info
        low, high = (i.guidance_min, i.guidance_max) if self.has_knob else (i.guidance_scale, i.guidance_scale)
        warning = None
        if not low - 1e-6 <= cfg <= high + 1e-6 and cfg != 1:
            warning = (f"{Path(self.path).name}: cfg {cfg:g} is outside the scales it was trained for "
                       f"({self.trained_scales()}); its strength is extrapolated ({KNOB})"
                       + ("" if self.has_knob else ": retrain with --guidance-range for a knob that tracks CFG"))
        return strength * strength_for_guidance(cfg, i.guidance_scale, i.knob_exponent), warning

    @property
    def base(self) -> str:
        """The checkpoint it was trained on, by name and sha256: 'name (sha256 0123456789ab)'."""
        i = self.info
        sha = i.base_checkpoint_sha256[:12]
        return f"{i.base_checkpoint or 'unknown'}" + (f" (sha256 {sha})" if sha else "")

    def other_checkpoint_note(self, same: bool | None) -> str | None:
        """What a host says when the model it runs is not the checkpoint the adapter was trained on (same is False):
        it is used all the same, since an adapter serves the checkpoints of its family, with less of CFG's effect."""
        if same is not False:
            return None
        return (f"{Path(self.path).name} was trained for another checkpoint, {self.base}; used as it is. On other "
                f"checkpoints of its family an adapter gives part of CFG's effect: for all of it, fine-tune it for this "
                f"one (train.py --ckpt <this checkpoint> --train adapter --init-adapter {Path(self.path).name})")

    def check_names(self, available: set[str], model_kind: str = "this model") -> None:
        """Refuse a model that lacks some of the adapter's layers (a LoRA loader would skip them silently)."""
        missing = [n for n in self.names if n not in available]
        if missing:
            raise AdapterFileError(f"{self.path}: {len(missing)} of its {len(self.names)} layers are not in "
                                   f"{model_kind} (first: {missing[0]}); it was trained for {self.info.model_family} "
                                   f"('{self.info.base_checkpoint}')")

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each adapter layer's (in, out) features, and a convolution's kernel after them, as its LoRA was trained for."""
        shapes = {}
        for n in self.names:
            down = self.tensors[f"{n}.lora_down.weight"]
            shapes[n] = (down.shape[1], self.tensors[f"{n}.lora_up.weight"].shape[0], *down.shape[2:])
        return shapes

    def check_shapes(self, shape_of: Callable[[str], tuple[int, ...] | None], model_kind: str = "this model") -> None:
        """Refuse a model whose layers have the adapter's names but other sizes (another model of the same layout,
        e.g. Wan 2.1 1.3B and Wan 2.2 5B), which a LoRA loader would fail on layer by layer; shape_of(name) gives a
        layer's (in, out) features (a convolution's kernel after them), or None where the model cannot say."""
        for name, shape in self.layer_shapes().items():
            found = shape_of(name)
            if found is not None and found != shape:
                raise AdapterFileError(f"{self.path}: its layers do not fit {model_kind} ({name} is {found[0]}→"
                                       f"{found[1]} there, {shape[0]}→{shape[1]} in the adapter); it was trained for "
                                       f"{self.info.model_family} ('{self.info.base_checkpoint}')")

    def attach_to(self, model: nn.Module) -> GuidanceAdapter:
        """A GuidanceAdapter holding these weights, hooked into model; refuses a model whose layers do not match."""
        layers = {lora_name(path): path for path, module in model.named_modules()
                  if isinstance(module, (nn.Linear, nn.Conv2d))}
        self.check_names(set(layers))
        self.check_shapes(lambda name: layer_shape(model.get_submodule(layers[name])))
        adapter = GuidanceAdapter({layers[n]: shape for n, shape in self.layer_shapes().items()}, self.config)
        adapter.load_lora_tensors(self.tensors)
        return adapter.requires_grad_(False).attach(model)


def adapter_metadata(config: AdapterConfig, info: AdapterInfo) -> dict[str, str]:
    values = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "key_format": "kohya-lora-unet"}
    values.update({f.name: str(getattr(config, f.name)) for f in fields(AdapterConfig)})
    values.update({f.name: str(getattr(info, f.name)) for f in fields(AdapterInfo)})
    # kohya's own keys, so the webuis' Lora tab and LoRA tools describe the file as they do any LoRA.
    values.update({"ss_network_module": "networks.lora", "ss_network_dim": str(config.rank),
                   "ss_network_alpha": str(config.alpha), "ss_base_model_version": KOHYA_BASE.get(info.model_family, info.model_family)})
    return values


def save_adapter(path: str | os.PathLike, adapter: GuidanceAdapter, info: AdapterInfo) -> None:
    """Write the adapter atomically, in kohya's LoRA layout, with its metadata."""
    write_safetensors(path, adapter.lora_tensors(), adapter_metadata(adapter.config, info))


def _number(values: dict[str, str], key: str, path: str, kind=float):
    try:
        return kind(values[key])
    except KeyError:
        raise AdapterFileError(f"{path}: metadata lacks '{key}'") from None
    except ValueError:
        raise AdapterFileError(f"{path}: metadata '{key}' should be a number, found {values[key]!r}") from None


def read_safetensors(path: str | os.PathLike, tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A .safetensors file's metadata (and tensors), after refusing pickles and truncated or damaged files by name."""
    path = str(path)
    sniff_safetensors(path, AdapterFileError)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return f.metadata() or {}, ({k: f.get_tensor(k) for k in f.keys()} if tensors else {})
    except Exception as error:  # safetensors raises its own error types for every malformed file
        raise AdapterFileError(f"{path}: is truncated or damaged: safetensors cannot read it ({error})") from None


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether a readable .safetensors file is a DICE guidance adapter (a plain LoRA is not)."""
    return read_safetensors(path, tensors=False)[0].get("format") == FORMAT_NAME


def load_adapter(path: str | os.PathLike) -> AdapterFile:
    """Read and check an adapter file; raises AdapterFileError naming the problem."""
    path = str(path)
    values, tensors = read_safetensors(path)
    if values.get("format") != FORMAT_NAME:
        raise AdapterFileError(f"{path}: is a safetensors file but not a DICE guidance adapter (its metadata has no "
                               f"format={FORMAT_NAME!r}); a plain LoRA loads with ComfyUI's own LoraLoader")
    version = _number(values, "format_version", path, int)
    if version > FORMAT_VERSION:
        raise AdapterFileError(f"{path}: was written in adapter format {version}; this pack reads up to "
                               f"{FORMAT_VERSION}: update the pack")
    try:
        config = AdapterConfig(rank=_number(values, "rank", path, int), alpha=_number(values, "alpha", path),
                               layers=values.get("layers", ""))
    except ValueError as error:
        raise AdapterFileError(f"{path}: metadata describes an impossible adapter: {error}") from None
    numbers = {"int": int, "float": float}  # the fields' annotations, as strings under postponed evaluation
    info = AdapterInfo(**{f.name: _number(values, f.name, path, numbers[f.type]) if f.type in numbers
                          else values.get(f.name, f.default) for f in fields(AdapterInfo)
                          if f.name in values or f.name not in ADDED_LATER})
    names = sorted(k[: -len(".lora_down.weight")] for k in tensors if k.endswith(".lora_down.weight"))
    if not names or any(not n.startswith(LORA_PREFIX) for n in names):
        raise AdapterFileError(f"{path}: holds no {LORA_PREFIX}… LoRA layers")
    for name in names:
        down, up = tensors[f"{name}.lora_down.weight"], tensors.get(f"{name}.lora_up.weight")
        # A linear layer's pair is 2-D; a convolution's (LoCon) is down [rank, in, kh, kw] and up [out, rank, 1, 1].
        pair = up is not None and ((down.ndim, up.ndim) == (2, 2) or (down.ndim, up.ndim) == (4, 4) and up.shape[2:] == (1, 1))
        if not pair or down.shape[0] != config.rank or up.shape[1] != config.rank:
            raise AdapterFileError(f"{path}: layer {name} is not a rank-{config.rank} LoRA pair "
                                   f"(down {list(down.shape)}, up {None if up is None else list(up.shape)})")
        if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise AdapterFileError(f"{path}: layer {name} holds NaN or infinite values; the training diverged")
    return AdapterFile(config, info, tensors, path, values)
