"""The sharpener file: .safetensors weights plus metadata saying what the network is and what it was trained for.

Nothing is ever unpickled: a file is read with safetensors, checked against its own metadata,
and refused with a message naming the problem when anything does not fit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import SharpenerFileError
from .network import Sharpener, SharpenerConfig
from .safefile import sniff_safetensors, write_safetensors

FORMAT_NAME = "dice-sharpener"
FORMAT_VERSION = 1
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PREDICTION_TYPES = ("eps", "v", "x0", "flow")


@dataclass(frozen=True)
class TrainingInfo:
    """What a sharpener was distilled from; the nodes show it, the trainer writes it."""

    model_family: str = "sd15"
    base_checkpoint: str = ""
    base_checkpoint_sha256: str = ""
    guidance_scale: float = 5.0
    clip_skip: int = 1
    prediction_type: str = "eps"
    trained_with_negatives: bool = False
    default_alpha: float = 1.0
    training_steps: int = 0


@dataclass(frozen=True)
class SharpenerFile:
    """A loaded sharpener: the network in eval mode, its training info, and where it came from."""

    network: Sharpener
    info: TrainingInfo
    path: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and tooltips."""
        c, i = self.network.config, self.info
        return (
            f"{Path(self.path).name or 'sharpener'}: width {c.embed_dim}, {i.model_family}, "
            f"base '{i.base_checkpoint or 'unknown'}', trained at CFG {i.guidance_scale:g}"
            f"{' with negatives' if i.trained_with_negatives else ''}, default α {i.default_alpha:g}"
        )


def _metadata_for(config: SharpenerConfig, info: TrainingInfo) -> dict[str, str]:
    values = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    values.update({f.name: str(getattr(config, f.name)) for f in fields(SharpenerConfig)})
    for f in fields(TrainingInfo):
        value = getattr(info, f.name)
        values[f.name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return values


def save_sharpener(path: str | os.PathLike, network: Sharpener, info: TrainingInfo) -> None:
    """Write network and info to path atomically: a temporary file in the same folder, then a rename."""
    _parse_training_info(_metadata_for(network.config, info), str(path))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    write_safetensors(path, tensors, _metadata_for(network.config, info))


def _parse_int(values: dict[str, str], key: str, path: str, minimum: int) -> int:
    try:
        number = int(values[key])
    except ValueError:
        raise SharpenerFileError(f"{path}: metadata '{key}' should be an integer, found {values[key]!r}") from None
    if number < minimum:
        raise SharpenerFileError(f"{path}: metadata '{key}' should be at least {minimum}, found {number}")
    return number


def _parse_float(values: dict[str, str], key: str, path: str) -> float:
    try:
        number = float(values[key])
    except ValueError:
        raise SharpenerFileError(f"{path}: metadata '{key}' should be a number, found {values[key]!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SharpenerFileError(f"{path}: metadata '{key}' should be finite, found {values[key]!r}")
    return number


def _require_keys(values: dict[str, str], keys: list[str], path: str) -> None:
    missing = [k for k in keys if k not in values]
    if missing:
        raise SharpenerFileError(f"{path}: metadata lacks {', '.join(repr(k) for k in missing)}")


def _parse_config(values: dict[str, str], path: str) -> SharpenerConfig:
    sizes = ["embed_dim", "hidden_dim", "num_heads"]
    _require_keys(values, sizes, path)
    parsed = {name: _parse_int(values, name, path, minimum=1) for name in sizes}
    # Files written before the key existed hold the paper's network.
    parsed["attention_context"] = values.get("attention_context", "reference")
    try:
        return SharpenerConfig(**parsed)
    except ValueError as error:
        raise SharpenerFileError(f"{path}: metadata describes an impossible network: {error}") from None


def _parse_training_info(values: dict[str, str], path: str) -> TrainingInfo:
    _require_keys(values, [f.name for f in fields(TrainingInfo)], path)
    negatives = values["trained_with_negatives"].lower()
    if negatives not in ("true", "false"):
        raise SharpenerFileError(f"{path}: metadata 'trained_with_negatives' should be true or false, found {negatives!r}")
    prediction = values["prediction_type"]
    if prediction not in PREDICTION_TYPES:
        raise SharpenerFileError(
            f"{path}: metadata 'prediction_type' should be one of {', '.join(PREDICTION_TYPES)}, found {prediction!r}"
        )
    guidance = _parse_float(values, "guidance_scale", path)
    if guidance < 1:
        raise SharpenerFileError(f"{path}: metadata 'guidance_scale' should be at least 1, found {guidance:g}")
    return TrainingInfo(
        model_family=values["model_family"],
        base_checkpoint=values["base_checkpoint"],
        base_checkpoint_sha256=values["base_checkpoint_sha256"],
        guidance_scale=guidance,
        clip_skip=_parse_int(values, "clip_skip", path, minimum=1),
        prediction_type=prediction,
        trained_with_negatives=negatives == "true",
        default_alpha=_parse_float(values, "default_alpha", path),
        training_steps=_parse_int(values, "training_steps", path, minimum=0),
    )


def expected_shapes(config: SharpenerConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape a sharpener of this config holds."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Sharpener(config).state_dict().items()}


def _check_tensors(shapes: dict[str, tuple[int, ...]], config: SharpenerConfig, path: str) -> None:
    expected = expected_shapes(config)
    problems = [f"missing '{k}'" for k in expected if k not in shapes]
    problems += [f"unexpected '{k}'" for k in shapes if k not in expected]
    problems += [
        f"'{k}' is {list(shapes[k])}, expected {list(v)}" for k, v in expected.items() if k in shapes and shapes[k] != v
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise SharpenerFileError(
            f"{path}: its tensors do not match the network its metadata describes "
            f"(width {config.embed_dim}, hidden {config.hidden_dim}, {config.num_heads} heads): {shown}"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The file's metadata after checking that it is a DICE sharpener of a version this pack reads."""
    path = str(path)
    sniff_safetensors(path, SharpenerFileError)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            values = f.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for every malformed header
        raise SharpenerFileError(f"{path}: is not a readable safetensors file ({error})") from None
    if values.get("format") != FORMAT_NAME:
        raise SharpenerFileError(
            f"{path}: is a safetensors file but not a DICE sharpener (its metadata has no "
            f"format={FORMAT_NAME!r}); is it a checkpoint or a LoRA in the wrong folder?"
        )
    _require_keys(values, ["format_version"], path)
    version = _parse_int(values, "format_version", path, minimum=1)
    if version > FORMAT_VERSION:
        raise SharpenerFileError(
            f"{path}: was written in sharpener format {version}; this pack reads up to {FORMAT_VERSION}: update the pack"
        )
    return values


def load_sharpener(path: str | os.PathLike, device: str | torch.device = "cpu") -> SharpenerFile:
    """Read, check and load a sharpener; raises SharpenerFileError naming the problem."""
    path = str(path)
    values = read_metadata(path)
    config = _parse_config(values, path)
    info = _parse_training_info(values, path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            _check_tensors(shapes, config, path)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SharpenerFileError:
        raise
    except Exception as error:
        raise SharpenerFileError(f"{path}: its tensor data cannot be read ({error})") from None
    for name, tensor in tensors.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise SharpenerFileError(f"{path}: tensor '{name}' is {tensor.dtype}, expected a floating-point type")
        if not torch.isfinite(tensor).all():
            raise SharpenerFileError(f"{path}: tensor '{name}' holds NaN or infinite values; the training diverged")
    network = Sharpener(config)
    network.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    network.requires_grad_(False).eval().to(device)
    return SharpenerFile(network=network, info=info, path=path, metadata=values)
