"""ComfyUI's CONDITIONING type ↔ the formulas; no ComfyUI import, so it is tested everywhere.

A CONDITIONING is a list of [tensor, dict] pairs. Each output entry gets a new tensor and a
shallow copy of its dict, so pooled_output, area, mask, timestep ranges and the rest pass unchanged,
and the caller's list is never modified (ComfyUI caches node outputs).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from ..sharpeners import ConditioningError, SharpenerFile, negative_shift, sharpen
from ..sharpeners.families import family_mismatch

Conditioning = list


def check_conditioning(conditioning: object, name: str) -> Conditioning:
    """Refuse an empty list or entries that are not [tensor, dict] pairs, naming the input."""
    if not isinstance(conditioning, (list, tuple)) or len(conditioning) == 0:
        raise ConditioningError(f"{name}: the conditioning list is empty; connect a CLIP Text Encode output")
    for index, entry in enumerate(conditioning):
        if not (isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], torch.Tensor)
                and isinstance(entry[1], dict)):
            raise ConditioningError(f"{name}: entry {index} is not a [tensor, dict] pair as CONDITIONING holds")
    return conditioning


def first_embedding(conditioning: object, name: str) -> torch.Tensor:
    """The first entry's tensor, as ComfyUI's Conditioning (Concat) reads its 'from' input."""
    entries = check_conditioning(conditioning, name)
    if len(entries) > 1:
        logging.warning("DICE: %s holds %d entries; only the first one is used", name, len(entries))
    return entries[0][0]


def map_embeddings(conditioning: Conditioning, name: str,
                   transform: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
    """Apply transform to every entry's tensor, copying each dict; errors name the entry."""
    entries = check_conditioning(conditioning, name)
    out = []
    for index, (tensor, options, *rest) in enumerate(entries):
        try:
            new_tensor = transform(tensor)
        except ConditioningError as error:
            where = f"{name} entry {index}" if len(entries) > 1 else name
            raise ConditioningError(f"{where}: {error}") from None
        out.append([new_tensor, options.copy(), *rest])
    return out


def sharpen_conditioning(positive: Conditioning, reference: Conditioning, sharpener: SharpenerFile,
                         alpha: float, device: torch.device | str) -> Conditioning:
    """Every entry's c becomes c + α·r(c, c_ref), computed on device, returned where it came from."""
    if not isinstance(sharpener, SharpenerFile):
        raise ConditioningError(f"sharpener: expected a DICE sharpener, got {type(sharpener).__name__}")
    c_ref = first_embedding(reference, "reference")
    for name, entries in (("positive", positive), ("reference", reference)):
        for tensor, options, *_ in check_conditioning(entries, name):
            mismatch = family_mismatch(sharpener.info.model_family, tensor.shape[-1], options)
            if mismatch:
                raise ConditioningError(f"{name}: {mismatch}")
    network = sharpener.network.to(device)
    return map_embeddings(positive, "positive", lambda c: sharpen(network, c, c_ref, alpha))


def negative_shift_conditioning(conditioning: Conditioning, negative: Conditioning, null: Conditioning,
                                beta: float) -> Conditioning:
    """Every entry's c becomes c − β·(c_neg − c_null)."""
    c_neg = first_embedding(negative, "negative")
    c_null = first_embedding(null, "null")
    return map_embeddings(conditioning, "conditioning", lambda c: negative_shift(c, c_neg, c_null, beta))
