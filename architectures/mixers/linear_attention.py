"""Linear attention: softmax attention without the softmax (Liu et al.'s polynomial model).

    y_head = (q k^T * attn_scale  masked to s <= t if causal) v,   y = out_proj(concat heads)

No normalisation: each output is a cubic polynomial of the block input, which is what
lets the hand-set constructions (architectures/constructions/) express a gradient step
exactly. Parameters q_proj, k_proj, v_proj, out_proj (nn.Linear(width, width) with bias);
attn_scale defaults to 1/sqrt(head_dim) as in their code (pass attn_scale=1.0 for plain
q k^T v).
"""
from __future__ import annotations

import torch

from ..registry import register_mixer
from .attention import QKVO, AttentionConfig, causal_mask, merge_heads


class LinearAttentionConfig(AttentionConfig):
    pass


@register_mixer("linear_attention", LinearAttentionConfig)
class LinearAttention(QKVO):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(h)
        scores = (q @ k.transpose(-2, -1)) * self.config.scale
        if self.config.causal:
            scores = scores.masked_fill(~causal_mask(h.shape[1], h.device), 0.0)
        return self.out_proj(merge_heads(scores @ v))
