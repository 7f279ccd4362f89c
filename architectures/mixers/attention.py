"""Multi-head softmax self-attention: the Transformer baseline of Liu et al.

    q, k, v = q_proj(h), k_proj(h), v_proj(h)         split into `heads` heads of width/heads
    y_head  = softmax(q k^T * attn_scale + mask) v    mask: -inf above the diagonal if causal
    y       = out_proj(concat heads)

attn_scale defaults to 1/sqrt(head_dim). Written out (no fused SDPA kernel) so it
computes the same thing in float32 and float64 on every device, with masked entries
exactly zero.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import model_validator

from ..config import ModelConfig
from ..registry import register_mixer


class AttentionConfig(ModelConfig):
    uses_heads = True
    attn_scale: float | None = None  # None -> 1/sqrt(head_dim)

    @model_validator(mode="after")
    def _check_scale(self):
        if self.attn_scale is not None and not math.isfinite(self.attn_scale):
            raise ValueError(f"attn_scale must be a finite number, got {self.attn_scale}")
        return self

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.attn_scale is None else self.attn_scale


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d)."""
    b, l, _ = x.shape
    return x.view(b, l, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d)."""
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


def causal_mask(length: int, device) -> torch.Tensor:
    """(L, L) bool, True where query t may see key s (s <= t)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class QKVO(nn.Module):
    """The four projections every attention-like mixer shares (nn.Linear with bias)."""

    def __init__(self, config: AttentionConfig, qk_width: int | None = None):
        super().__init__()
        self.config = config
        width = config.width
        qk_width = width if qk_width is None else qk_width
        self.q_proj = nn.Linear(width, qk_width)
        self.k_proj = nn.Linear(width, qk_width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def project(self, h: torch.Tensor):
        heads = self.config.heads
        return tuple(split_heads(proj(h), heads) for proj in (self.q_proj, self.k_proj, self.v_proj))


@register_mixer("attention", AttentionConfig)
class Attention(QKVO):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(h)
        scores = (q @ k.transpose(-2, -1)) * self.config.scale
        if self.config.causal:
            scores = scores.masked_fill(~causal_mask(h.shape[1], h.device), float("-inf"))
        return self.out_proj(merge_heads(torch.softmax(scores, dim=-1) @ v))
