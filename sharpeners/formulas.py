"""DICE's formulas on text embeddings: sharpen c + α·r(c, c_ref) and negative shift c − β·(c_neg − c_null)."""
from __future__ import annotations

import math
import numbers

import torch

from .errors import ConditioningError
from .network import Sharpener

# Embedding widths of the model families users meet, to name them in error messages.
FAMILY_BY_WIDTH = {
    768: "SD1.x (CLIP-L)",
    1024: "SD2.x (OpenCLIP-H)",
    1280: "SDXL refiner (OpenCLIP-G)",
    2048: "SDXL (CLIP-L + OpenCLIP-G)",
    4096: "T5-XXL (PixArt, SD3, Flux)",
}


def describe_width(width: int) -> str:
    """'768 (SD1.x (CLIP-L))' or just '1536' for a width no known family uses."""
    family = FAMILY_BY_WIDTH.get(width)
    return f"{width} ({family})" if family else str(width)


def check_embedding(tensor: object, name: str) -> torch.Tensor:
    """Refuse anything but a finite floating tensor shaped [batch, tokens, width]."""
    if not isinstance(tensor, torch.Tensor):
        raise ConditioningError(f"{name}: expected a tensor, got {type(tensor).__name__}")
    if tensor.ndim != 3:
        raise ConditioningError(
            f"{name}: expected a text embedding shaped [batch, tokens, width], got shape {tuple(tensor.shape)}"
        )
    if not tensor.is_floating_point():
        raise ConditioningError(f"{name}: expected a floating-point tensor, got {tensor.dtype}")
    if 0 in tensor.shape:
        raise ConditioningError(f"{name}: the embedding is empty (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ConditioningError(f"{name}: contains {bad} NaN or infinite values; check the text encoder or the node before")
    return tensor


def check_strength(value: object, name: str) -> float:
    """A finite real number, for α and β."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConditioningError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def broadcast_batch(tensors: list[torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    """Expand batch-1 tensors to the common batch size; refuse two different sizes above 1."""
    sizes = {t.shape[0] for t in tensors} - {1}
    if len(sizes) > 1:
        listing = ", ".join(f"{n} has {t.shape[0]}" for n, t in zip(names, tensors))
        raise ConditioningError(f"batch sizes differ and none of them is 1: {listing}")
    batch = sizes.pop() if sizes else 1
    return [t.expand(batch, *t.shape[1:]) for t in tensors]


def repeat_to_common_length(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tile each to the least common multiple of the token counts, as ComfyUI's cond concat does.

    Cross-attention gives the same result for a sequence and the same sequence repeated whole,
    so this changes no image; it only makes 77·k and 77·m token embeddings addable.
    """
    common = math.lcm(*(t.shape[1] for t in tensors))
    return [t.repeat(1, common // t.shape[1], 1) if t.shape[1] != common else t for t in tensors]


def check_same_width(tensors: list[torch.Tensor], names: list[str]) -> int:
    """The shared embedding width, or an error naming each input's width."""
    widths = {t.shape[-1] for t in tensors}
    if len(widths) > 1:
        listing = ", ".join(f"{n} is {describe_width(t.shape[-1])} wide" for n, t in zip(names, tensors))
        raise ConditioningError(f"embedding widths differ: {listing}; encode them all with the same CLIP")
    return widths.pop()


def sharpening_residual(sharpener: Sharpener, c: torch.Tensor, c_ref: torch.Tensor) -> torch.Tensor:
    """r(c, c_ref) in float32 on the sharpener's device, after checking shapes and values."""
    check_embedding(c, "conditioning")
    check_embedding(c_ref, "reference")
    expected = sharpener.config.embed_dim
    for name, tensor in (("conditioning", c), ("reference", c_ref)):
        if tensor.shape[-1] != expected:
            raise ConditioningError(
                f"{name} is {describe_width(tensor.shape[-1])} wide but this sharpener was trained for "
                f"{describe_width(expected)} embeddings: load a sharpener made for this checkpoint's family"
            )
    parameter = next(sharpener.parameters())
    c_in, ref_in = (t.to(device=parameter.device, dtype=parameter.dtype) for t in (c, c_ref))
    # Token counts may differ (77·k against 77): attention takes any number of keys as it is.
    c_in, ref_in = broadcast_batch([c_in, ref_in], ["conditioning", "reference"])
    with torch.no_grad():
        return sharpener(c_in, ref_in)


def sharpen(sharpener: Sharpener, c: torch.Tensor, c_ref: torch.Tensor, alpha: float) -> torch.Tensor:
    """c + α·r(c, c_ref), on c's device and dtype; α = 0 gives c back exactly."""
    alpha = check_strength(alpha, "alpha")
    residual = sharpening_residual(sharpener, c, c_ref)
    base = c.to(device=residual.device, dtype=residual.dtype)
    return (base + alpha * residual).to(device=c.device, dtype=c.dtype)


def negative_shift(c: torch.Tensor, c_neg: torch.Tensor, c_null: torch.Tensor, beta: float) -> torch.Tensor:
    """c − β·(c_neg − c_null), on c's device and dtype; token counts are tiled to their common multiple."""
    beta = check_strength(beta, "beta")
    names = ["conditioning", "negative", "null"]
    tensors = [check_embedding(t, n) for t, n in zip((c, c_neg, c_null), names)]
    check_same_width(tensors, names)
    tensors = [t.to(device=c.device, dtype=torch.float32) for t in tensors]
    base, negative, null = repeat_to_common_length(broadcast_batch(tensors, names))
    return (base - beta * (negative - null)).to(dtype=c.dtype)
