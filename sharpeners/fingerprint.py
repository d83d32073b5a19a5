"""A handful of a model's weights, kept in an adapter's metadata, so a host that cannot name the checkpoint it runs
(ComfyUI's MODEL carries neither its file nor its hash) can still tell whether the adapter was trained on these weights
or on another checkpoint of the family, which it still serves (docs/research.md, transfer)."""
from __future__ import annotations

from typing import Callable

import torch

# 64 weights at fixed spots of four layers spread over the model: a fine-tune or a merge moves every one of them, a copy
# of the same checkpoint in another dtype none (compared in the coarser of the two dtypes).
LAYERS, VALUES = 4, 16

WeightReader = Callable[[str], "torch.Tensor | None"]  # an adapter layer's path → its weight as the checkpoint has it


def spread(paths: list[str], count: int) -> list[str]:
    """count paths evenly spaced over the list, first and last included."""
    if len(paths) <= count:
        return list(paths)
    return list(dict.fromkeys(paths[round(i * (len(paths) - 1) / (count - 1))] for i in range(count)))


def sampled(weight: torch.Tensor, count: int) -> torch.Tensor:
    flat = weight.detach().reshape(-1)
    # float32 linspace rounds the last index up past the end above 2^24 weights; clamping keeps every other index (and
    # so the fingerprints already written) as it was.
    indices = torch.linspace(0, flat.numel() - 1, count).long().clamp_(max=flat.numel() - 1)
    return flat[indices.to(flat.device)].float().cpu()


def weight_fingerprint(read_weight: WeightReader, paths: list[str]) -> str:
    """'<dtype>;<path>:<v>,<v>,…;…': VALUES weights of LAYERS of these layers (the adapter's), as text for metadata."""
    parts, dtype = [], None
    for path in spread(paths, LAYERS):
        weight = read_weight(path)
        dtype = weight.dtype
        parts.append(f"{path}:" + ",".join(f"{v:.9g}" for v in sampled(weight, VALUES).tolist()))
    return ";".join([str(dtype).removeprefix("torch."), *parts])


def same_weights(fingerprint: str, read_weight: WeightReader) -> bool | None:
    """Whether read_weight gives the weights the fingerprint was taken of, up to one step of the coarser dtype; None
    when it cannot tell (a file written before fingerprints, a malformed one, a layer this model lacks)."""
    if not fingerprint:
        return None
    try:
        dtype_name, *parts = fingerprint.split(";")
        stored = getattr(torch, dtype_name)
        torch.finfo(stored)
        for part in parts:
            path, values = part.rsplit(":", 1)
            expected = torch.tensor([float(v) for v in values.split(",")])
            weight = read_weight(path)
            if weight is None:
                return None
            coarse = max(stored, weight.dtype, key=lambda d: torch.finfo(d).eps)
            limits = torch.finfo(coarse)
            actual, expected = sampled(weight, len(expected)).to(coarse).float(), expected.to(coarse).float()
            if not bool(((actual - expected).abs() <= limits.eps * expected.abs() + limits.tiny).all()):
                return False
        return bool(parts)
    except (AttributeError, TypeError, ValueError, RuntimeError):  # quantised or unusual weights: it cannot tell
        return None
