"""Automatic1111 / Forge ↔ the sharpener core. No host import, so it is tested everywhere; scripts/dice.py is the
host's side (gradio, callbacks) and calls only this.

The host hands the extension each step's text conditioning after it has picked it (prompt editing, AND-parts,
hires fix, img2img): a tensor [rows, 77·k, width], or SDXL's dict whose "crossattn" is that tensor and whose
"vector" (pooled CLIP-G and sizes) stays as it is. Every row becomes c + α·r(c, c_ref) − β·(c_neg − c_null), with
the formulas of the core.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..sharpeners import ConditioningError, SharpenerFile, negative_shift, sharpen, sharpening_residual
from ..sharpeners.adapter import lora_name
from ..sharpeners.adapter_file import AdapterFile, is_adapter, load_adapter
from ..sharpeners.cache import SharpenerCache
from ..sharpeners.nag import NAGSettings, normalized_attention_guidance

TITLE = "DICE: CFG at cfg 1"  # the key of alwayson_scripts in the API; never changes
FOLDER_NAME = "sharpeners"  # models/sharpeners, as in ComfyUI
NONE = "None"
# Infotext keys, written into every image and read back when it is pasted.
KEY_SHARPENER, KEY_ALPHA, KEY_BETA = "DICE sharpener", "DICE alpha", "DICE beta"
KEY_ADAPTER = "DICE adapter"  # the guidance adapters among the prompt's <lora:…>, written for the record
KEY_GUIDANCE = "DICE guidance"  # the adapters' cfg knob, in CFG's own units
DEFAULT_GUIDANCE = 5.0  # the trainer's default scale: adapters trained at it give at 5 what they gave before the knob
KEY_NAG = "DICE negative strength"  # NAG's scale for the negative prompt with an adapter
KEY_BASE = "DICE adapter trained for"  # an adapter's own checkpoint, written when it is not the one that made the image
KEY_WARNING = "DICE warning"  # the knob set outside an adapter's trained scales: kept with the image, since the API drops comments
NAG_DEFAULTS = NAGSettings()
# The host's setting that drops the negative pass ("Ignore negative prompt during early sampling"): 1.0 drops it
# on every step, so CFG 1 costs one UNet call a step in Automatic1111 as it does in Forge and ComfyUI.
SKIP_NEGATIVE_SETTING, SKIP_NEGATIVE_INFOTEXT = "skip_early_cond", "Skip Early CFG"

_cache = SharpenerCache()
# The webuis' extra-network syntax for a LoRA in the prompt: <lora:name> or <lora:name:weight[:...]>.
LORA_IN_PROMPT = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")


def sharpener_folder(models_path: str, override: str | None = None) -> Path:
    """--dice-sharpeners-dir, else <models>/sharpeners (which follows the host's --models-dir and --data-dir)."""
    return Path(override).expanduser() if override else Path(models_path) / FOLDER_NAME


def list_sharpeners(folder: Path) -> list[str]:
    """The .safetensors files under folder, as relative names; never anything that could be a pickle."""
    if not folder.is_dir():
        return []
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors") if p.is_file()]
    return sorted(names, key=str.lower)


def resolve_sharpener(folder: Path, name: str) -> Path:
    """The file a dropdown name (or a pasted infotext value) stands for; a clear error when it is not there."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents or path.suffix != ".safetensors" or not path.is_file():
        available = ", ".join(list_sharpeners(folder)[:8]) or "none"
        raise ConditioningError(f"DICE: no sharpener '{name}' in {folder} (there: {available})")
    return path


def load(folder: Path, name: str) -> SharpenerFile:
    """The named sharpener, loaded once and reloaded when its file changes; bad files are refused by name."""
    return _cache.get(os.fspath(resolve_sharpener(folder, name)))


def loras_in(prompts: list[str]) -> list[str]:
    """The LoRA names the prompts call for with <lora:name:weight>, each once, in order."""
    return list(dict.fromkeys(m.group(1).strip() for prompt in prompts for m in LORA_IN_PROMPT.finditer(prompt)))


def find_lora(folder: Path, name: str) -> Path | None:
    """The .safetensors file a <lora:name> stands for (the webuis search their Lora folder's subfolders too)."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.rglob("*.safetensors")) if p.stem == name), None)


def dice_adapters(folder: Path, prompts: list[str], layer_paths) -> list[AdapterFile]:
    """The DICE guidance adapters among the prompts' <lora:…>, each checked against the model's layers (layer_paths():
    the diffusion model's module paths). A .safetensors LoRA file that is truncated or a pickle is refused by name,
    since the host would skip it and generate without it; other LoRAs pass as they are."""
    adapters, available = [], None
    for name in loras_in(prompts):
        path = find_lora(folder, name)
        if path is None:
            continue  # not ours to find: the host reports LoRAs it cannot find
        if not is_adapter(path):
            continue
        adapter = load_adapter(path)
        available = available if available is not None else {lora_name(p) for p in layer_paths()}
        adapter.check_names(available, "this checkpoint's UNet")
        adapters.append(adapter)
    return adapters


def adapter_factors(adapters: list[AdapterFile], guidance: float) -> tuple[dict[str, float], list[str]]:
    """{<lora:name> of each adapter: the factor its cfg knob puts on the prompt's multiplier at guidance}, and the
    warnings of adapters asked for a scale outside the ones they were trained for."""
    factors, warnings = {}, []
    for adapter in adapters:
        factors[Path(adapter.path).stem], warning = adapter.strength_at(guidance)
        if warning:
            warnings.append(f"DICE: {warning}")
    return factors, warnings


def other_checkpoint_notes(adapters: list[AdapterFile], checkpoint_sha256: str | None) -> tuple[list[str], str | None]:
    """The notes on adapters trained for another checkpoint than the loaded one (told by the files' sha256, which the
    webuis compute when they load a checkpoint), and the infotext naming those checkpoints; none where a hash is unknown."""
    loaded = (checkpoint_sha256 or "").lower()
    others = [a for a in adapters if loaded and a.info.base_checkpoint_sha256
              and a.info.base_checkpoint_sha256.lower() != loaded]
    notes = [f"DICE: {a.other_checkpoint_note(False)}" for a in others]
    # No comma or colon, which the webuis would quote: the adapters themselves are named under KEY_ADAPTER.
    return notes, " / ".join(a.base for a in others) or None


def scale_adapter_networks(params_list: list, factors: dict[str, float]) -> None:
    """The host's parsed <lora:name:te:unet> params (its ExtraNetworkParams), with each DICE adapter's UNet multiplier
    times its factor; the adapters change only the UNet, and other LoRAs are left as they are."""
    for params in params_list:
        name = params.positional[0] if params.positional else None
        if name not in factors:
            continue
        given = params.positional[1:3]
        unet = float(params.named.get("unet", given[-1] if given else 1.0))
        value = f"{unet * factors[name]:.6g}"
        params.named["unet"] = value
        params.items = [i for i in params.items if not (isinstance(i, str) and i.startswith("unet="))] + [f"unet={value}"]


class NegativeAttention:
    """A negative prompt inside the UNet's one call: every cross-attention (a module named …attn2 with to_q, to_k,
    to_v, to_out and heads, as Automatic1111's and Forge's UNets have) also attends to the negative prompt's tokens,
    and its output is pushed away from that one (NAG) before the output projection. Hooks only: the model's modules
    and weights are never changed, and detach() leaves it as it was."""

    def __init__(self, tokens: torch.Tensor, settings: NAGSettings) -> None:
        self.tokens, self.settings = tokens, settings
        self._handles: list = []

    def attach(self, unet: torch.nn.Module) -> int:
        """Hook every cross-attention of unet; returns how many."""
        self.detach()
        for name, module in unet.named_modules():
            if name.endswith("attn2") and all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out", "heads")):
                queries: list[torch.Tensor] = []
                self._handles.append(module.to_q.register_forward_hook(
                    lambda _, inputs, output, queries=queries: queries.append(output)))
                self._handles.append(module.to_out[0].register_forward_pre_hook(self._guide(module, queries)))
        return len(self._handles) // 2

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _guide(self, attn2: torch.nn.Module, queries: list):
        def pre_hook(_, inputs):
            if not queries:
                return None
            q, z = queries.pop(), inputs[0]
            queries.clear()
            negative = self.tokens.to(device=q.device, dtype=q.dtype)
            k, v = (layer(negative).expand(len(q), -1, -1) for layer in (attn2.to_k, attn2.to_v))
            heads = attn2.heads
            split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731 [b, n, h·d] → [b, h, n, d]
            z_neg = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
            z_neg = z_neg.transpose(1, 2).flatten(2).to(z.dtype)
            return (normalized_attention_guidance(z, z_neg, self.settings), *inputs[1:])
        return pre_hook


def negative_settings(adapters: list[AdapterFile], scale: float) -> NAGSettings:
    """NAG's settings for the negative prompt with these adapters: the slider's scale, and the τ and α the first
    adapter trained with NAG was trained at (else the pack's defaults)."""
    trained = next((a.info for a in adapters if a.info.nag_scale), None)
    tau, alpha = (trained.nag_tau, trained.nag_alpha) if trained else (NAG_DEFAULTS.tau, NAG_DEFAULTS.alpha)
    try:
        return NAGSettings(scale, tau, alpha)
    except ValueError as error:
        raise ConditioningError(f"DICE: negative prompt strength: {error}") from None


def guidance_warning(cfg_scale: float) -> str | None:
    """DICE replaces CFG: with the CFG scale above 1 as well, guidance would apply twice."""
    if abs(cfg_scale - 1.0) > 1e-6:
        return (f"DICE is on with CFG scale {cfg_scale:g}: guidance applies twice (the sharpener's and CFG's), and "
                "each step costs two UNet calls; set CFG scale to 1")
    return None


def skip_negative_pass(opts_data: dict, default: float, override_settings: dict) -> None:
    """Ask Automatic1111 to drop the negative pass for this generation. The host restores after a generation only
    the settings already in opts.data, so the setting is put there first: otherwise 1.0 would stay for every
    later generation."""
    opts_data.setdefault(SKIP_NEGATIVE_SETTING, default)
    override_settings[SKIP_NEGATIVE_SETTING] = 1.0


def first_cond(encoded) -> torch.Tensor:
    """The cross-attention tensor, batch first, of an encoded prompt (tensor or SDXL dict, batched or not)."""
    tensor = encoded["crossattn"] if isinstance(encoded, dict) else encoded
    if not isinstance(tensor, torch.Tensor):
        raise ConditioningError(f"DICE: the host's conditioning is a {type(tensor).__name__}, not a tensor")
    return tensor[None] if tensor.ndim == 2 else tensor


@dataclass
class Generation:
    """What one generation sharpens with: the sharpener, its strengths, and the encoded prompts it needs."""

    sharpener: SharpenerFile
    alpha: float
    beta: float
    negative_prompt: str
    encoded: dict[str, torch.Tensor] = field(default_factory=dict)

    def prompts_to_encode(self) -> list[str]:
        """The empty prompt, and the negative prompt when there is one (the reference and the shift)."""
        return [""] + ([self.negative_prompt] if self.negative_prompt.strip() else [])

    def check_width(self) -> None:
        """This checkpoint's embedding width against the sharpener's, before any step (the core names both)."""
        sharpening_residual(self.sharpener.network, self.encoded[""], self.encoded[""])

    def apply(self, text_cond):
        """The host's text_cond with every row sharpened (and shifted away from the negative prompt); SDXL's
        vector input unchanged. A new object: the host's own (cached across generations) is never changed."""
        if isinstance(text_cond, dict):
            return {**text_cond, "crossattn": self._sharpen(text_cond["crossattn"])}
        return self._sharpen(text_cond)

    def _sharpen(self, c: torch.Tensor) -> torch.Tensor:
        null = self.encoded[""]
        negative = self.encoded.get(self.negative_prompt) if self.negative_prompt.strip() else None
        # The paper's r(c, c_neg): with a negative prompt, it is the reference; else the empty prompt is.
        reference = negative if negative is not None else null
        network = self.sharpener.network.to(c.device)
        out = sharpen(network, c, reference.to(c.device), self.alpha)
        if negative is not None and self.beta:
            out = negative_shift(out, negative.to(c.device), null.to(c.device), self.beta)
        return out


def infotext(name: str, alpha: float, beta: float, negative_prompt: str) -> dict[str, str]:
    """The generation parameters written into the image (β only when a negative prompt used it)."""
    params = {KEY_SHARPENER: name, KEY_ALPHA: f"{alpha:g}"}
    if negative_prompt.strip():
        params[KEY_BETA] = f"{beta:g}"
    return params


def from_infotext(params: dict, key: str, fallback):
    """A pasted image's value for one control: its DICE fields when it has them, else the control's fallback."""
    if key == "enabled":
        return KEY_SHARPENER in params or KEY_ADAPTER in params
    value = params.get(key)
    if value is None:
        # An adapter's image from before the knob was made at its own scale, the knob's default.
        return DEFAULT_GUIDANCE if key == KEY_GUIDANCE and KEY_ADAPTER in params else fallback
    if key == KEY_SHARPENER:
        return value
    try:
        return float(value)
    except ValueError:
        return fallback
