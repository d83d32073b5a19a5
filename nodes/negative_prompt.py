"""DICE Negative Prompt: a negative prompt inside the one UNet call of cfg 1.0, where the KSampler never runs its
negative input. Every cross-attention also attends to the negative prompt's tokens and is pushed away from that
(Normalized Attention Guidance, the pack's sharpeners.nag), through ComfyUI's own attn2 replace patch."""
from __future__ import annotations

import re

import torch
from comfy.ldm.modules.attention import BasicTransformerBlock, optimized_attention

from ..sharpeners.errors import ConditioningError
from ..sharpeners.nag import NAGSettings, normalized_attention_guidance

DEFAULTS = NAGSettings()
COND = 0  # ComfyUI's cond_or_uncond marks: 0 the prompt's rows, 1 the negative's (when CFG runs it)


def transformer_key(path: str) -> tuple[str, int, int] | None:
    """'input_blocks.1.1.transformer_blocks.0' → ('input', 1, 0): the block ComfyUI's UNet names in transformer_options
    for this transformer block ('middle_block.1.…' → ('middle', 0, k))."""
    match = re.fullmatch(r"(input|middle|output)_blocks?(?:\.(\d+))?\.\d+\.transformer_blocks\.(\d+)", path)
    if match is None:
        return None
    kind, number, index = match.groups()
    return kind, 0 if kind == "middle" else int(number), int(index)


def negative_attention(attn2, tokens, settings: NAGSettings, previous=None):
    """An attn2 replace: the usual attention for every row (or the replace already there, such as IPAdapter's), and
    NAG against tokens for the prompt's rows."""
    def attend(q, k, v, extra_options):
        heads, precision = extra_options["n_heads"], extra_options.get("attn_precision")
        z = optimized_attention(q, k, v, heads, attn_precision=precision) if previous is None else \
            previous(q, k, v, extra_options)
        kinds = extra_options.get("cond_or_uncond") or [COND]
        negative = tokens.to(device=q.device, dtype=q.dtype)
        k_neg, v_neg = attn2.to_k(negative), attn2.to_v(negative)  # the model's weights as loaded, adapter included
        chunks = list(z.chunk(len(kinds)))
        for i, (kind, q_part) in enumerate(zip(kinds, q.chunk(len(kinds)))):
            if kind == COND:
                rows = len(q_part)
                z_neg = optimized_attention(q_part, k_neg.expand(rows, -1, -1), v_neg.expand(rows, -1, -1), heads,
                                            attn_precision=precision)
                chunks[i] = normalized_attention_guidance(chunks[i], z_neg, settings)
        return torch.cat(chunks)
    return attend


class DICENegativePrompt:
    """Node: model + negative conditioning → the model whose every step also steers away from the negative prompt."""

    DESCRIPTION = (
        "Negative prompts at cfg 1.0, in the same single UNet call per step: every cross-attention also attends to the "
        "negative prompt and is pushed away from it (Normalized Attention Guidance, Chen et al. 2025). Put it after "
        "Load DICE Guidance Adapter and keep the KSampler's cfg at 1.0, where its own negative input is never run."
    )
    CATEGORY = "conditioning/DICE"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model steering away from the negative prompt: connect it to a KSampler with cfg 1.0.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model (with its DICE guidance adapter already loaded)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt, encoded by CLIP Text Encode with the same "
                                                         "CLIP. An empty prompt here pushes away from the empty "
                                                         "prompt (more guidance); leave the node out for no negative."}),
                "scale": ("FLOAT", {"default": DEFAULTS.scale, "min": 1.0, "max": 20.0, "step": 0.1, "round": 0.01,
                                    "tooltip": "How hard to push away from the negative prompt (NAG's φ); 1 = off."}),
                "tau": ("FLOAT", {"default": DEFAULTS.tau, "min": 1.0, "max": 10.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "The cap on how far each attention output may grow (NAG's τ)."}),
                "alpha": ("FLOAT", {"default": DEFAULTS.alpha, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "How much of the pushed output replaces the plain one (NAG's α); 0 = off."}),
            }
        }

    def patch(self, model, negative, scale=DEFAULTS.scale, tau=DEFAULTS.tau, alpha=DEFAULTS.alpha):
        if not negative:
            raise ConditioningError("DICE Negative Prompt: the negative conditioning is empty; connect a CLIP Text "
                                    "Encode of the negative prompt")
        try:
            settings = NAGSettings(scale, tau, alpha)
        except ValueError as error:
            raise ConditioningError(f"DICE Negative Prompt: {error}") from None
        if settings.off:
            return (model,)
        tokens = negative[0][0]
        patched = model.clone()
        existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
        for path, block in patched.model.diffusion_model.named_modules():
            key = transformer_key(path) if isinstance(block, BasicTransformerBlock) else None
            if key is not None and getattr(block, "attn2", None) is not None:
                previous = existing.get(key, existing.get(key[:2]))
                patched.set_model_attn2_replace(negative_attention(block.attn2, tokens, settings, previous), *key)
        if not patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2"):
            raise ConditioningError(f"DICE Negative Prompt: this {type(patched.model.model_config).__name__} model has no "
                                    "UNet cross-attention to patch; negative prompts at cfg 1 work on SD1.x, SD2.x and "
                                    "SDXL for now")
        return (patched,)
