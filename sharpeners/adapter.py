"""The guidance adapter: low-rank weight deltas (LoRA) on a frozen model's linear layers (and convolutions), trained so
that one call per step gives CFG's prediction. It is attached with forward hooks, so the model's modules and weights
are never edited and the adapter switches off (the CFG teacher's calls) without being removed."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Which of the model's layers an adapter holds: the attention projections (self- and cross-attention); every linear
# layer of the transformer blocks (attention, feed-forward and the blocks' linear in/out projections); or those and
# the res-blocks' convolutions too (kohya's LoCon layout, which the hosts' LoRA loaders read as they read a LoRA).
LAYER_SELECTIONS = ("attention", "transformer", "all")
# kohya's key names for UNet layers, which ComfyUI's LoraLoader and the webuis' built-in Lora both read.
LORA_PREFIX = "lora_unet_"


def block_layers(model: nn.Module, selection: str, attention: tuple[str, ...], others: tuple[str, ...],
                 block_type: str, kinds: tuple[type, ...] = (nn.Linear,)) -> list[str]:
    """Paths of the layers an adapter of this selection holds: inside every module of class block_type, the children
    named in attention (and, for "transformer" and "all", those named in others), where they are of kinds."""
    if selection not in LAYER_SELECTIONS:
        raise ValueError(f"adapter layers must be one of {', '.join(LAYER_SELECTIONS)}, got {selection!r}")
    wanted = attention + (others if selection != "attention" else ())
    paths = []
    for block_path, block in model.named_modules():
        if type(block).__name__ != block_type:
            continue
        for name in wanted:
            try:
                layer = block.get_submodule(name)
            except AttributeError:
                continue
            if isinstance(layer, kinds):
                paths.append(f"{block_path}.{name}" if block_path else name)
    return paths


def layer_shape(layer: nn.Module) -> tuple[int, ...]:
    """What an adapter's LoRA for this layer is made for: (in, out) of a linear layer, (in, out, kh, kw) of a conv."""
    if isinstance(layer, nn.Linear):
        return (layer.in_features, layer.out_features)
    # LoCon's merge (up · down, reshaped) equals the hooked delta only for an ungrouped, zero-padded convolution.
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros":
        return (layer.in_channels, layer.out_channels, *layer.kernel_size)
    raise ValueError(f"an adapter holds linear layers and ungrouped zero-padded 2-D convolutions, not this "
                     f"{type(layer).__name__}")


def strength_for_guidance(guidance, reference_scale: float, exponent: float = 1.0):
    """The adapter strength that stands for CFG scale guidance (a number or a tensor), for an adapter whose strength 1
    is CFG at reference_scale: ((w − 1) / (reference − 1)) ** exponent, so cfg 1 is the plain model, as CFG at 1 is
    the unguided call, and the reference scale is strength 1."""
    if not reference_scale > 1:
        raise ValueError(f"an adapter's reference CFG scale must be above 1, got {reference_scale!r}")
    return ((guidance - 1) / (reference_scale - 1)) ** exponent


def lora_name(module_path: str) -> str:
    """'input_blocks.1.1.transformer_blocks.0.attn1.to_q' → 'lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q'."""
    return LORA_PREFIX + module_path.replace(".", "_")


@dataclass(frozen=True)
class AdapterConfig:
    """The adapter's shape: LoRA rank, kohya's alpha (the delta is scaled by alpha / rank) and which layers it holds."""

    rank: int = 8
    alpha: float = 8.0
    layers: str = "attention"

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"AdapterConfig.rank must be a positive integer, got {self.rank!r}")
        if self.layers not in LAYER_SELECTIONS:
            raise ValueError(f"AdapterConfig.layers must be one of {', '.join(LAYER_SELECTIONS)}, got {self.layers!r}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"AdapterConfig.alpha must be a positive number, got {self.alpha!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRA(nn.Module):
    """down: [rank, in], up: [out, rank]; up starts at zero, so a new adapter leaves the model as it was."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # as kohya's and peft's LoRA start

    def forward(self, x: torch.Tensor, layer: nn.Module | None = None) -> torch.Tensor:
        return F.linear(F.linear(x, self.down), self.up)


class ConvLoRA(nn.Module):
    """kohya's LoCon: down [rank, in, kh, kw] convolved with the layer's own stride and padding, up [out, rank, 1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, kernel_h: int, kernel_w: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_channels, kernel_h, kernel_w))
        self.up = nn.Parameter(torch.zeros(out_channels, rank, 1, 1))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
        hidden = F.conv2d(x, self.down, stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
        return F.conv2d(hidden, self.up)


def make_lora(shape: tuple[int, ...], rank: int) -> nn.Module:
    return LoRA(*shape, rank) if len(shape) == 2 else ConvLoRA(shape[0], shape[1], rank, *shape[2:])


class GuidanceAdapter(nn.Module):
    """One LoRA per layer named in shapes ({module path: (in, out)} for a linear layer, (in, out, kh, kw) for a
    convolution), added to those layers' outputs."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: AdapterConfig = AdapterConfig()) -> None:
        super().__init__()
        if not shapes:
            raise ValueError("a guidance adapter needs at least one layer")
        self.config = config
        self.paths = sorted(shapes)
        # ModuleDict keys cannot hold dots; the kohya name is unique per path and is also the file's key.
        self.layers = nn.ModuleDict({lora_name(p): make_lora(shapes[p], config.rank) for p in self.paths})
        self.strength: float | torch.Tensor = 1.0  # one number, or one per sample of the batch (the knob in training)
        self._handles: list = []

    @classmethod
    def for_layers(cls, model: nn.Module, paths: list[str], config: AdapterConfig = AdapterConfig()) -> "GuidanceAdapter":
        """An adapter for these layers of model, with their shapes read from the model."""
        shapes = {}
        for path in paths:
            try:
                shapes[path] = layer_shape(model.get_submodule(path))
            except ValueError as error:
                raise ValueError(f"adapter layer '{path}': {error}") from None
        return cls(shapes, config)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def attach(self, model: nn.Module) -> "GuidanceAdapter":
        """Hook every layer of model that the adapter holds; detach() removes the hooks again."""
        self.detach()
        for path in self.paths:
            layer = model.get_submodule(path)
            self._handles.append(layer.register_forward_hook(self._hook(self.layers[lora_name(path)])))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, lora: nn.Module):
        def add_delta(module, inputs, output):
            strength = self.strength
            if not torch.is_tensor(strength) and strength == 0:
                return output
            delta = lora(inputs[0].to(lora.down.dtype), module)
            if torch.is_tensor(strength):  # one strength per sample: over the batch dimension of the layer's output
                strength = strength.to(delta).view(-1, *[1] * (delta.ndim - 1))
            return output + (delta * (self.config.scale * strength)).to(output.dtype)
        return add_delta

    @contextlib.contextmanager
    def switched_off(self):
        """The plain model inside the block (CFG's teacher calls), the adapter as it was after it."""
        strength, self.strength = self.strength, 0.0
        try:
            yield
        finally:
            self.strength = strength

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """The adapter in kohya's LoRA layout: <name>.lora_down.weight, <name>.lora_up.weight and <name>.alpha."""
        tensors = {}
        for name, lora in self.layers.items():
            tensors[f"{name}.lora_down.weight"] = lora.down.detach().cpu().contiguous()
            tensors[f"{name}.lora_up.weight"] = lora.up.detach().cpu().contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(float(self.config.alpha))
        return tensors

    def load_lora_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, lora in self.layers.items():
            lora.down.data.copy_(tensors[f"{name}.lora_down.weight"].float())
            lora.up.data.copy_(tensors[f"{name}.lora_up.weight"].float())
