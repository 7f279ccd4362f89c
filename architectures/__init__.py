"""Sequence models: a shared backbone with one mixer per model name.

    from architectures import build_model, MODELS
    model = build_model("baseconv", task, width=64, depth=2)   # (B, L, d_in) -> (B, L, d_out)
    model.config.model_dump()

Models: attention, linear_attention, baseconv (conv_kind short | long | implicit),
hyena, s4d, mamba, based, mlp; or any mixer class of your own by import path,
build_model("mypkg.mixers:MyMixer", task, ...), built by keyword as zoology builds its mixers
(architectures/plugin.py, docs/plugins.md).
Bad parameters raise ModelConfigError naming the field.
"""
from .config import ACTIVATIONS, ModelConfig, ModelConfigError
from .registry import (MIXERS, MODELS, build_model, make_config, model_from_config, register_mixer,
                       shared_parameter_names)
from .plugin import import_object, is_import_path
from . import mixers  # noqa: F401  (registers the mixers)
from .backbone import SequenceModel

__all__ = [
    "ACTIVATIONS",
    "MIXERS",
    "MODELS",
    "ModelConfig",
    "ModelConfigError",
    "SequenceModel",
    "build_model",
    "make_config",
    "model_from_config",
    "register_mixer",
    "import_object",
    "is_import_path",
    "shared_parameter_names",
]
