"""The testbed's networks, SD1.5's structure at small scale: a KL autoencoder and a cross-attention UNet."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, with an optional time embedding added in between."""

    def __init__(self, channels_in: int, channels_out: int, time_dim: int = 0) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(channels_in), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time = nn.Linear(time_dim, channels_out) if time_dim else None
        self.norm2, self.conv2 = norm(channels_out), nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None:
            h = h + self.time(F.silu(time))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


@dataclass(frozen=True)
class AutoencoderConfig:
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4


class Autoencoder(nn.Module):
    """32×32×3 images in [-1, 1] ↔ 8×8×4 latents, with a KL bottleneck as SD's VAE has."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.encoder = nn.ModuleList([nn.Conv2d(3, c[0], 3, padding=1)])
        for i in range(len(c)):
            self.encoder.append(ResBlock(c[max(i - 1, 0)], c[i]))
            if i < len(c) - 1:
                self.encoder.append(nn.Conv2d(c[i], c[i], 3, stride=2, padding=1))
        self.encoder_out = nn.Sequential(norm(c[-1]), nn.SiLU(), nn.Conv2d(c[-1], 2 * config.latent_channels, 3, padding=1))
        self.decoder = nn.ModuleList([nn.Conv2d(config.latent_channels, c[-1], 3, padding=1)])
        for i in reversed(range(len(c))):
            self.decoder.append(ResBlock(c[min(i + 1, len(c) - 1)], c[i]))
            if i > 0:
                self.decoder.append(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c[i], c[i], 3, padding=1)))
        self.decoder_out = nn.Sequential(norm(c[0]), nn.SiLU(), nn.Conv2d(c[0], 3, 3, padding=1))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of the latent."""
        h = images
        for layer in self.encoder:
            h = layer(h)
        mean, logvar = self.encoder_out(h).chunk(2, dim=1)
        return mean, logvar.clamp(-20, 5)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        h = latents
        for layer in self.decoder:
            h = layer(h)
        return self.decoder_out(h)


def cross_attention(block: nn.Module, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The block's cross-attention output before its output projection; a block's attention_patch, when set, sees q
    and that output and may replace it (negative-prompt guidance, as ComfyUI's attn2_replace patches)."""
    z = block.attend(q, *block.cross_kv(context).chunk(2, dim=-1))
    patch = getattr(block, "attention_patch", None)
    return z if patch is None else patch(block, q, z)


class Transformer(nn.Module):
    """SD's spatial transformer: self-attention, cross-attention over the prompt tokens, feed-forward."""

    def __init__(self, channels: int, context_dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_in, self.proj_in = norm(channels), nn.Conv2d(channels, channels, 1)
        # Where each latent pixel sits: without it nothing but the convs' zero padding tells "left" from "right".
        self.position = nn.Parameter(torch.randn(1, tokens, channels) * 0.02)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(channels), nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.self_qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.self_out = nn.Linear(channels, channels)
        self.cross_q = nn.Linear(channels, channels, bias=False)
        self.cross_kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.cross_out = nn.Linear(channels, channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = rearrange(self.proj_in(self.norm_in(x)), "b c y x -> b (y x) c") + self.position
        h = h + self.self_out(self.attend(*self.self_qkv(self.norm1(h)).chunk(3, dim=-1)))
        h = h + self.cross_out(cross_attention(self, self.cross_q(self.norm2(h)), context))
        h = h + self.ff(self.norm3(h))
        return x + self.proj_out(rearrange(h, "b (y x) c -> b c y x", y=height, x=width))


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...] = (64, 128)
    context_dim: int = 384
    context_inner: int = 128
    latent_channels: int = 4
    latent_size: int = 8
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """SD's sinusoidal embedding of (possibly fractional) timesteps."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class UNet(nn.Module):
    """eps(x_t, t, context): one res-block and transformer per level, a middle block, skip connections."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        c, time_dim = config.channels, 4 * config.channels[0]
        tokens = lambda level: (config.latent_size // 2 ** level) ** 2  # noqa: E731
        self.time_mlp = nn.Sequential(nn.Linear(c[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.conv_in = nn.Conv2d(config.latent_channels, c[0], 3, padding=1)
        # One projection of the 77 prompt tokens shared by every block keeps cross-attention cheap on a CPU.
        self.context_in = nn.Linear(config.context_dim, config.context_inner)
        self.down_res, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, channels in enumerate(c):
            self.down_res.append(ResBlock(c[max(i - 1, 0)], channels, time_dim))
            self.down_attn.append(Transformer(channels, config.context_inner, config.heads, tokens(i)))
            self.downsample.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1) if i < len(c) - 1 else nn.Identity())
        self.mid_res1 = ResBlock(c[-1], c[-1], time_dim)
        self.mid_attn = Transformer(c[-1], config.context_inner, config.heads, tokens(len(c) - 1))
        self.mid_res2 = ResBlock(c[-1], c[-1], time_dim)
        self.up_res, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(c))):
            self.up_res.append(ResBlock(2 * c[i] if i == len(c) - 1 else c[i + 1] + c[i], c[i], time_dim))
            self.up_attn.append(Transformer(c[i], config.context_inner, config.heads, tokens(i)))
            self.upsample.append(nn.Upsample(scale_factor=2) if i > 0 else nn.Identity())
        self.out = nn.Sequential(norm(c[0]), nn.SiLU(), nn.Conv2d(c[0], config.latent_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                time_offset: torch.Tensor | None = None) -> torch.Tensor:
        """eps; time_offset, if given, is added to the time embedding (a TeEFusion-style student's guidance input)."""
        time = self.time_mlp(timestep_embedding(timesteps, self.config.channels[0]))
        if time_offset is not None:
            time = time + time_offset
        context = self.context_in(context)
        h = self.conv_in(x)
        skips = []
        for res, attn, down in zip(self.down_res, self.down_attn, self.downsample):
            h = attn(res(h, time), context)
            skips.append(h)
            h = down(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, time), context), time)
        for res, attn, up in zip(self.up_res, self.up_attn, self.upsample):
            h = up(attn(res(torch.cat([h, skips.pop()], dim=1), time), context))
        return self.out(h)


@dataclass(frozen=True)
class DiTConfig:
    width: int = 128
    depth: int = 4
    heads: int = 4
    patch: int = 2
    context_dim: int = 384
    latent_channels: int = 4
    latent_size: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


class DiTBlock(nn.Module):
    """PixArt's block: self-attention and feed-forward modulated by the timestep (adaLN-single: one shared projection
    of the time plus this block's own table), cross-attention over the prompt tokens between them."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_qkv, self.self_out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.cross_q, self.cross_kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.scale_shift_table = nn.Parameter(torch.randn(6, width) / width ** 0.5)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")

    def forward(self, h: torch.Tensor, context: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[None] + modulation).unbind(1)
        x = self.norm1(h) * (1 + scale1[:, None]) + shift1[:, None]
        h = h + gate1[:, None] * self.self_out(self.attend(*self.self_qkv(x).chunk(3, dim=-1)))
        h = h + self.cross_out(cross_attention(self, self.cross_q(self.norm2(h)), context))
        x = self.norm3(h) * (1 + scale2[:, None]) + shift2[:, None]
        return h + gate2[:, None] * self.ff(x)


class DiT(nn.Module):
    """v(x_σ, t, context): PixArt's shape at small scale, latent patches as tokens through DiT blocks."""

    def __init__(self, config: DiTConfig = DiTConfig()) -> None:
        super().__init__()
        self.config = config
        width, patch_values = config.width, config.latent_channels * config.patch ** 2
        self.patch_in = nn.Linear(patch_values, width)
        self.position = nn.Parameter(torch.randn(1, (config.latent_size // config.patch) ** 2, width) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.time_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        # PixArt's caption projection: the text tokens into the blocks' width, once for every block.
        self.context_in = nn.Sequential(nn.Linear(config.context_dim, width), nn.GELU(approximate="tanh"),
                                        nn.Linear(width, width))
        self.blocks = nn.ModuleList(DiTBlock(width, config.heads) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, width) / width ** 0.5)
        self.patch_out = nn.Linear(width, patch_values)
        nn.init.zeros_(self.patch_out.weight)  # as DiT and PixArt start: the output at zero, learning from there
        nn.init.zeros_(self.patch_out.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                time_offset: torch.Tensor | None = None) -> torch.Tensor:
        """The velocity; time_offset, if given, is added to the time embedding (a TeEFusion-style guidance input)."""
        p, width = self.config.patch, self.config.width
        rows = x.shape[-2] // p
        h = self.patch_in(rearrange(x, "b c (y p) (x q) -> b (y x) (p q c)", p=p, q=p)) + self.position
        time = self.time_mlp(timestep_embedding(timesteps, width))
        if time_offset is not None:
            time = time + time_offset
        modulation = self.time_modulation(time).unflatten(1, (6, width))
        context = self.context_in(context)
        for block in self.blocks:
            h = block(h, context, modulation)
        shift, scale = (self.final_table[None] + time[:, None]).unbind(1)
        h = self.final_norm(h) * (1 + scale[:, None]) + shift[:, None]
        return rearrange(self.patch_out(h), "b (y x) (p q c) -> b c (y p) (x q)", y=rows, p=p, q=p)
