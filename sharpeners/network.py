"""The DICE sharpener r(c, c_ref): a ~2 M-parameter network that returns a residual for c."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


# What the attention's keys and values come from: the paper's network sees only the reference (the empty or
# negative prompt); the second also sees the prompt's own tokens, with the same parameters.
ATTENTION_CONTEXTS = ("reference", "prompt+reference")


@dataclass(frozen=True)
class SharpenerConfig:
    """The shape of a sharpener; the paper's is width 768, hidden 512, 8 heads, attending to the reference."""

    embed_dim: int = 768
    hidden_dim: int = 512
    num_heads: int = 8
    attention_context: str = "reference"

    def __post_init__(self) -> None:
        if self.attention_context not in ATTENTION_CONTEXTS:
            raise ValueError(f"SharpenerConfig.attention_context must be one of {', '.join(ATTENTION_CONTEXTS)}, "
                             f"got {self.attention_context!r}")
        for name in ("embed_dim", "hidden_dim", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"SharpenerConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"SharpenerConfig.hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )


class CrossAttention(nn.Module):
    """Multi-head attention with queries from x and keys/values from context; no qkv bias."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class Sharpener(nn.Module):
    """Linear → ReLU → cross-attention over the reference → ReLU → Linear back to the embedding width."""

    def __init__(self, config: SharpenerConfig = SharpenerConfig()) -> None:
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.embed_dim, config.hidden_dim)
        self.attention = CrossAttention(config.hidden_dim, config.num_heads)
        self.fc2 = nn.Linear(config.hidden_dim, config.embed_dim)

    def forward(self, c: torch.Tensor, c_ref: torch.Tensor) -> torch.Tensor:
        """The residual r(c, c_ref), shaped like c; c and c_ref must share batch size and width."""
        query = F.relu(self.fc1(c))
        if self.config.attention_context == "prompt+reference":
            # An empty prompt's tokens can be all alike (then attending to them alone gives one vector for every
            # token); the prompt's own tokens let each token gather what the others say.
            c_ref = torch.cat([c, c_ref], dim=1)
        # The same projection embeds both inputs, as in the reference implementation.
        context = F.relu(self.fc1(c_ref))
        return self.fc2(F.relu(self.attention(query, context)))

    def parameter_count(self) -> int:
        """How many numbers the network learns."""
        return sum(p.numel() for p in self.parameters())
