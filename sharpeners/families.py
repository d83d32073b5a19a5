"""The text conditioning each model family's sampler gets, so a sharpener is refused on another family's."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConditioningShape:
    """A family's conditioning as ComfyUI's text encoders give it: token width and pooled-output width (None: none)."""

    name: str
    width: int
    pooled: int | None


# By the family name a sharpener file records (the trainer's SUPPORTED values).
FAMILIES = {
    "sd15": ConditioningShape("SD1.x (CLIP-L)", 768, 768),
    "sd2": ConditioningShape("SD2.x (OpenCLIP-H)", 1024, 1024),
    "sdxl": ConditioningShape("SDXL (CLIP-L + OpenCLIP-G)", 2048, 1280),
    "sd3": ConditioningShape("SD3/SD3.5 (CLIP-L + CLIP-G + T5-XXL, pooled CLIP)", 4096, 2048),
    "pixart_alpha": ConditioningShape("PixArt-α (T5-XXL, no pooled output)", 4096, None),
    "pixart_sigma": ConditioningShape("PixArt-Σ (T5-XXL, no pooled output)", 4096, None),
    "wan21": ConditioningShape("Wan 2.1 (UMT5-XXL, no pooled output)", 4096, None),
    "wan22_5b": ConditioningShape("Wan 2.2 5B (UMT5-XXL, no pooled output)", 4096, None),
    "chroma": ConditioningShape("Chroma (T5-XXL, no pooled output)", 4096, None),
    "lumina2": ConditioningShape("Lumina 2 (Gemma 2 2B, no pooled output)", 2304, None),
    "auraflow": ConditioningShape("AuraFlow (Pile T5-XL, no pooled output)", 2048, None),
    "qwen_image": ConditioningShape("Qwen-Image (Qwen2.5-VL 7B, no pooled output)", 3584, None),
}
# Families whose conditioning shares a width with another one, told apart by the pooled output; and the guidance-
# distilled Flux, whose conditioning DICE refuses to train for but which users may wire in by mistake.
OTHERS = {"flux": ConditioningShape("Flux (T5-XXL, pooled CLIP-L)", 4096, 768)}


def conditioning_families(width: int, pooled: int | None) -> list[str]:
    """The names of the families whose conditioning has this token width and pooled width."""
    return [s.name for s in (*FAMILIES.values(), *OTHERS.values()) if s.width == width and s.pooled == pooled]


def family_mismatch(family: str, width: int, options: dict) -> str | None:
    """Why a conditioning entry (its tensor's width, its options dict) is not the family's, or None. Only where the
    width is shared (T5's 4096) does the pooled output decide, and only when the entry says what it is."""
    shape = FAMILIES.get(family)
    if shape is None or width != shape.width or "pooled_output" not in options:
        return None  # unknown family (the width check names it), or nothing to tell it by
    if sum(s.width == width for s in (*FAMILIES.values(), *OTHERS.values())) < 2:
        return None
    pooled = options["pooled_output"]
    pooled_width = None if pooled is None else int(pooled.shape[-1])
    if pooled_width == shape.pooled:
        return None
    seen = conditioning_families(width, pooled_width)
    what = " or ".join(seen) if seen else f"{width} wide with a {pooled_width}-wide pooled output"
    return (f"this sharpener was trained for {shape.name}, but the conditioning is {what}'s: load a sharpener "
            "made for this model's family")
