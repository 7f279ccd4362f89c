"""Based (Arora et al. 2024): linear attention with a 2nd-order Taylor feature map.

    phi(x) = [1, x / d^(1/4), (x outer x) / (sqrt(2) d^(1/2))]   (x in R^d: 1 + d + d^2 features)
    so phi(q) . phi(k) = 1 + q.k/sqrt(d) + (q.k)^2 / (2d)  = Taylor expansion of exp(q.k/sqrt(d))

    y_t = sum_{s<=t} (phi(q_t) . phi(k_s)) v_s / sum_{s<=t} phi(q_t) . phi(k_s)

per head, q and k projected to `feature_dim` per head, v and the output to width.
1 + x + x^2/2 > 0 for every real x, so the normaliser is positive without an epsilon.
Computed in the quadratic ("parallel") form with the explicit features.
Parameters: q_proj, k_proj (width -> heads * feature_dim), v_proj, out_proj.
"""
from __future__ import annotations

import torch
from pydantic import model_validator

from ..registry import register_mixer
from .attention import QKVO, AttentionConfig, causal_mask, merge_heads, split_heads


class BasedConfig(AttentionConfig):
    feature_dim: int = 16

    @model_validator(mode="after")
    def _check_features(self):
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {self.feature_dim}")
        return self


def taylor_features(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., 1 + d + d^2): the 2nd-order Taylor feature map of exp(q.k/sqrt(d))."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, outer / (2**0.5 * d**0.5)], dim=-1)


@register_mixer("based", BasedConfig)
class Based(QKVO):
    def __init__(self, config: BasedConfig):
        super().__init__(config, qk_width=config.heads * config.feature_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        heads = self.config.heads
        q = taylor_features(split_heads(self.q_proj(h), heads))
        k = taylor_features(split_heads(self.k_proj(h), heads))
        v = split_heads(self.v_proj(h), heads)
        scores = q @ k.transpose(-2, -1)  # (B, H, L, L), all > 0
        if self.config.causal:
            scores = scores.masked_fill(~causal_mask(h.shape[1], h.device), 0.0)
        y = (scores @ v) / scores.sum(-1, keepdim=True)
        return self.out_proj(merge_heads(y))
