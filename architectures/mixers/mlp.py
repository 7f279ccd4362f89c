"""The `mlp` control: no sequence mixing at all.

The mixer is a position-wise MLP  fc_out(act(fc_in(h)))  (hidden mlp_factor * width),
so every output token depends only on its own input token (and its position through
pos_emb). Tasks that need information from other positions are out of its reach: it
measures how much of a task is token-wise.
"""
from __future__ import annotations

from ..backbone import MLP
from ..config import ModelConfig
from ..registry import register_mixer


class MLPConfig(ModelConfig):
    pass


@register_mixer("mlp", MLPConfig)
class TokenMLP(MLP):
    pass
