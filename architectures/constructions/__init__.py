"""Hand-set weights that prove what an architecture can express exactly.

Each builder returns a `Construction(model, layers_per_step, width, description, setup_layers)`
whose model is the ordinary `architectures.build_model(...)` output with its weights set by hand.

    baseconv_gd_step          BaseConv, one GD step (4 layers, width 4D + 1), iterate by re-feeding x
    baseconv_gd_step_3layer   the same in 3 layers at width D^2 + 4D + 1 (Gram products)
    baseconv_gd_step_broadcast  Liu et al.'s layout (x in every token): 3 layers, width 4D + 1
    baseconv_gd_unrolled      non-causal BaseConv, t GD steps in one pass (1 + 3t layers, width 3D + 2)
    linear_attention_gd_step  linear attention, one GD step (2 layers, 2 heads)
    baseconv_gd_gram          BaseConv, GD with M = A^T A / N in the stream: 3 + t layers for t steps
    baseconv_newton_schulz    BaseConv, Newton-Schulz: 4 + K layers = GD step 2^K
    baseconv_read / _linear / _multiply   the primitives in one layer each

Curves against the reference algorithms: bench/experiments/construction_curves.py; the table and figure:
`python -m bench.experiments.construction_report`.
"""
from .base import Construction, Layout
from .baseconv_gd import (
    baseconv_gd_step,
    baseconv_gd_step_3layer,
    baseconv_gd_step_broadcast,
    baseconv_gd_unrolled,
    broadcast_tokens,
    gd_iterate,
    gd_tokens,
)
from .baseconv_newton import baseconv_gd_gram, baseconv_newton_schulz, layer_outputs
from .baseconv_primitives import baseconv_linear, baseconv_multiply, baseconv_read
from .linear_attention_gd import linear_attention_gd_step

__all__ = [
    "Construction",
    "Layout",
    "baseconv_gd_gram",
    "baseconv_gd_step",
    "baseconv_gd_step_3layer",
    "baseconv_gd_step_broadcast",
    "baseconv_gd_unrolled",
    "baseconv_linear",
    "baseconv_multiply",
    "baseconv_newton_schulz",
    "baseconv_read",
    "broadcast_tokens",
    "gd_iterate",
    "gd_tokens",
    "layer_outputs",
    "linear_attention_gd_step",
]
