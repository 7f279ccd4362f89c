"""Name -> model registry and the `build_model` factory.

A mixer registers itself with its config class:

    @register_mixer("baseconv", BaseConvConfig)
    class BaseConv(nn.Module): ...

and `build_model("baseconv", task, width=32)` returns the shared backbone
(architectures/backbone.py) with that mixer in every block. A name with a colon,
"package.module:Class", is an out-of-tree mixer (architectures/plugin.py).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn
from pydantic import ValidationError

from .backbone import SequenceModel
from .config import SHAPE_FIELDS, ModelConfig, ModelConfigError, config_error
from .plugin import (BACKBONE_FIELDS, ClassParameters, build_plugin_mixer, is_import_path, mixer_class,
                     plugin_config)


@dataclass(frozen=True)
class MixerSpec:
    config_cls: type[ModelConfig]
    mixer_cls: type[nn.Module]


MIXERS: dict[str, MixerSpec] = {}
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_mixer(name: str, config_cls: type[ModelConfig]):
    """Class decorator: make a mixer reachable by name in MIXERS and MODELS."""

    def wrap(mixer_cls: type[nn.Module]) -> type[nn.Module]:
        MIXERS[name] = MixerSpec(config_cls, mixer_cls)
        MODELS[name] = functools.partial(build_model, name)
        return mixer_cls

    return wrap


def _task_shapes(task: Any) -> dict[str, int]:
    try:
        return {"seq_len": int(task.seq_len), "d_in": int(task.d_in), "d_out": int(task.d_out)}
    except AttributeError:
        raise ModelConfigError(
            f"build_model needs a task (or any object with seq_len, d_in, d_out), got {type(task).__name__}"
        ) from None


def make_config(name: str, task: Any, **params) -> ModelConfig:
    """Validate `params` for model `name` (a registered name or "package.module:Class") on
    `task`'s shapes; raise ModelConfigError if bad."""
    if name not in MIXERS and not is_import_path(name):
        raise ModelConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MIXERS))}, "
                               "or an out-of-tree mixer as package.module:Class")
    clash = sorted(set(params) & set(SHAPE_FIELDS))
    if clash:
        raise ModelConfigError(
            f"model {name!r}: {', '.join(clash)} come from the task and cannot be passed as parameters"
        )
    if is_import_path(name):
        return plugin_config(name, _task_shapes(task), params)
    cls = MIXERS[name].config_cls
    try:
        return cls(name=name, **_task_shapes(task), **params)
    except ValidationError as err:
        raise config_error(name, cls, err) from None


def build_model(name: str, task: Any, **params) -> nn.Module:
    """Build model `name` mapping (B, L, task.d_in) -> (B, L, task.d_out).

    `task` is a primitives Task or any object with seq_len, d_in, d_out (a ModelConfig
    works too). Parameters are validated (ModelConfigError on a bad one); weights are
    drawn from a torch.Generator seeded with `seed`, so equal params give equal weights.

    >>> from primitives import make_task
    >>> build_model("baseconv", make_task("multiply"), width=32).config.width
    32
    """
    config = make_config(name, task, **params)
    if not is_import_path(name):
        return SequenceModel(config, MIXERS[name].mixer_cls)
    blocks = itertools.count()  # the backbone builds its blocks in order: block i gets layer_idx=i
    return SequenceModel(config, lambda c: build_plugin_mixer(c, next(blocks)))


def shared_parameter_names(name: str) -> list[str]:
    """The parameters model `name` keeps from another model's config when it replaces that model's
    mixer (bench.harness.sweep.with_model): the backbone's; `heads`/`causal` too if `name` reads them."""
    if not is_import_path(name):
        return ModelConfig.parameter_names()
    takes = ClassParameters(name, mixer_class(name))
    return [*BACKBONE_FIELDS, *(["heads"] if takes.heads else []), *(["causal"] if "causal" in takes.names else [])]


def model_from_config(config: ModelConfig | dict) -> nn.Module:
    """Rebuild a model from its config (a ModelConfig or its model_dump()); same seed, same weights."""
    data = config.model_dump() if isinstance(config, ModelConfig) else dict(config)
    name = data.pop("name", None)
    if name is None:
        raise ModelConfigError("a model config needs its 'name' (the mixer), e.g. 'baseconv'")
    shapes = {f: data.pop(f, None) for f in ("seq_len", "d_in", "d_out")}
    missing = [f for f, v in shapes.items() if v is None]
    if missing:
        raise ModelConfigError(f"model config for {name!r} lacks {', '.join(missing)}")
    task = type("Shapes", (), shapes)()
    return build_model(name, task, **data)
