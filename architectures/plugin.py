"""Mixers from outside the package, named by import path: "package.module:Class".

    build_model("mymixer:MyMixer", task, width=32, depth=2, order=3)

A class is built the way zoology builds its mixers, by keyword: Class(d_model=width, **named,
**params), where `named` holds, only for the names its signature has, l_max= (the task's seq_len,
or max_len), layer_idx= (the block's index, 0 first), the heads parameter (`heads` or `num_heads`)
and causal=. A class whose constructor has no `d_model`, or whose second positional parameter has
no default and is none of those names (`(dim, seq_len)`), is built positionally as
Class(width, l_max, **params), as the suite built every class before; `(d_model, l_max)` classes
get the same call either way, and a run's hash is its config, so their records keep their names.
The class maps (b, l, d_model) -> (b, l, d_model) and goes into the shared backbone where a
registered mixer goes. Parameters the backbone reads (`BACKBONE_FIELDS`: width, depth, mlp,
prenorm, seed, ...) stay with it; every other parameter goes to the class by name and must be one
its signature accepts. `heads` and `num_heads` both name the class's heads parameter; a class that
names `heads` gets the backbone's (2 unless set), one that names `num_heads` keeps its own default
unless either is set. `causal` goes to a class that names it (the backbone's True unless set).

Validating a config imports the module and reads the class's signature (nothing is built).
Building the model runs each new mixer once on a tiny input to check that it keeps the shape.
The class's nn.Linear maps get the backbone's init, as every mixer's do; its other parameters
keep what its constructor drew from the global RNG, which the backbone seeds with `seed`.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
from pydantic import ConfigDict, ValidationError

from primitives.plugin import ImportPathError, import_object, is_import_path  # noqa: F401  (re-exported)

from .config import ModelConfig, ModelConfigError, config_error

# ModelConfig fields that only mixers read: a class gets them if its signature names them.
MIXER_FIELDS = ("heads", "causal")
BACKBONE_FIELDS = tuple(f for f in ModelConfig.parameter_names() if f not in MIXER_FIELDS)
HEADS_NAMES = ("heads", "num_heads")  # either spelling names a class's heads parameter
# what the backbone passes by keyword where the signature names it (never a user's parameter)
SUPPLIED = {"d_model": "width", "l_max": "the task's seq_len, or max_len", "layer_idx": "the block's index"}


def mixer_class(name: str) -> type[nn.Module]:
    """The class an import-path model name points at; ModelConfigError unless it is an nn.Module class."""
    try:
        obj = import_object(name)
    except ImportPathError as err:
        raise ModelConfigError(f"model {name!r}: {err}") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        what = f"an instance of {type(obj).__name__}" if not isinstance(obj, type) else f"the class {obj.__name__}"
        raise ModelConfigError(
            f"model {name!r} is {what}, not a torch.nn.Module subclass; a mixer is a class built as "
            f"Class(d_model=..., **params) whose forward maps (b, l, d_model) -> (b, l, d_model)")
    return obj


class ClassParameters:
    """How a mixer class is built (by keyword, or positionally as (d_model, l_max)) and what its
    constructor takes besides what the backbone supplies."""

    def __init__(self, name: str, cls: type[nn.Module]):
        self.cls = cls
        try:
            self.signature = inspect.signature(cls)
        except (TypeError, ValueError):  # no introspectable signature: accept anything, the build will tell
            self.signature, self.names, self.required, self.any_keyword = None, [], [], True
            self.by_keyword, self.supplied, self.heads = False, [], None
            return
        params = list(self.signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        known = {*SUPPLIED, *HEADS_NAMES, "causal"}
        # (d_model, seq_len) with no default: a class written to the positional form under other names
        legacy = len(positional) >= 2 and positional[1].default is positional[1].empty and positional[1].name not in known
        self.by_keyword = any(p.name == "d_model" for p in named) and not legacy
        if self.by_keyword:
            self.supplied = [p.name for p in named if p.name in SUPPLIED]
            rest = [p for p in named if p.name not in SUPPLIED]
        elif len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
            self.supplied = [p.name for p in positional[:2]]
            self.supplied += [p.name for p in named if p.name == "layer_idx" and p not in positional[:2]]
            rest = [p for p in named if p.name not in self.supplied]
        else:
            raise ModelConfigError(f"model {name!r}: the class must take d_model (built as {cls.__name__}(d_model=..., "
                                   f"**params)) or two positional parameters ({cls.__name__}(d_model, l_max, "
                                   f"**params)), but its signature is {cls.__name__}{self.signature}")
        self.names = [p.name for p in rest]
        self.heads = next((h for h in HEADS_NAMES if h in self.names), None)
        # a class that names `heads` or `causal` always gets the backbone's value, so they are never missing
        self.required = [p.name for p in rest if p.default is p.empty and p.name not in ("heads", "causal")]
        self.any_keyword = any(p.kind == p.VAR_KEYWORD for p in params)

    def accepts(self, key: str) -> bool:
        return key in self.names or (self.any_keyword and key not in MIXER_FIELDS)

    def describe(self) -> str:
        names = ", ".join(self.names) or "nothing"
        return f"{self.cls.__name__} takes {names}{' and any keyword (**kwargs)' if self.any_keyword else ''}"

    def call(self, config: "PluginConfig", layer_idx: int) -> tuple[list, dict[str, Any], str]:
        """(args, kwargs, how the call reads) of building the class for block `layer_idx`."""
        values = {"d_model": config.width, "l_max": config.l_max, "layer_idx": layer_idx}
        if self.by_keyword:
            args, kwargs = [], {k: values[k] for k in self.supplied}
        else:
            args = [config.width, config.l_max]
            kwargs = {"layer_idx": layer_idx} if "layer_idx" in self.supplied else {}
        kwargs.update(config.mixer_params())
        text = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        return args, kwargs, f"{self.cls.__name__}({text})"


class PluginConfig(ModelConfig):
    """The backbone's fields (ModelConfig) plus the mixer class's parameters as extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    registered_mixer = False

    def mixer_params(self) -> dict[str, Any]:
        """The keyword arguments the class gets besides d_model, l_max and layer_idx."""
        named = ClassParameters(self.name, mixer_class(self.name)).names
        return {**{f: getattr(self, f) for f in MIXER_FIELDS if f in named}, **(self.model_extra or {})}


def _heads_by_the_class_name(name: str, takes: ClassParameters, params: dict[str, Any]) -> dict[str, Any]:
    """`heads` or `num_heads`, whichever the user wrote, under the name the class's signature uses."""
    given = {h: params[h] for h in HEADS_NAMES if h in params}
    if takes.heads is None or not given:
        return params
    if len(set(map(repr, given.values()))) > 1:
        raise ModelConfigError(f"model {name!r}: {', '.join(f'{k}={v!r}' for k, v in given.items())}: both name "
                               f"{takes.cls.__name__}'s {takes.heads}; pass one")
    rest = {k: v for k, v in params.items() if k not in HEADS_NAMES}
    return {**rest, takes.heads: next(iter(given.values()))}


def plugin_config(name: str, shapes: dict[str, int], params: dict[str, Any]) -> PluginConfig:
    """Validate `params` for the mixer class at import path `name`; ModelConfigError names what is wrong."""
    cls = mixer_class(name)
    takes = ClassParameters(name, cls)
    reserved = [k for k in SUPPLIED if k in params]
    if reserved:
        raise ModelConfigError(f"model {name!r}: {', '.join(reserved)}: set by the backbone, not a parameter "
                               f"({'; '.join(f'{k} is {SUPPLIED[k]}' for k in reserved)})")
    params = _heads_by_the_class_name(name, takes, params)
    unknown = [k for k in params if k not in ModelConfig.parameter_names() and not takes.accepts(k)]
    if unknown:
        raise ModelConfigError(
            f"model {name!r}: {', '.join(unknown)}: neither a backbone parameter nor one {cls.__name__} accepts "
            f"({takes.describe()}; the backbone takes {', '.join(BACKBONE_FIELDS)})")
    # a mixer-only field the class does not take would be read by nobody: a silent no-op
    ignored = [f"{f}={params[f]!r}" for f in MIXER_FIELDS
               if f in params and f not in takes.names and params[f] != ModelConfig.model_fields[f].default]
    if ignored:
        raise ModelConfigError(f"model {name!r}: {', '.join(ignored)}: only mixers read this and {cls.__name__} "
                               f"does not take it ({takes.describe()})")
    missing = [k for k in takes.required if k not in params]
    if missing:
        raise ModelConfigError(f"model {name!r}: {cls.__name__} needs {', '.join(missing)} (no default); pass "
                               f"{' '.join(f'{k}=...' for k in missing)} as model parameters")
    try:
        return PluginConfig(name=name, **shapes, **params)
    except ValidationError as err:
        raise config_error(name, PluginConfig, err) from None


def build_plugin_mixer(config: PluginConfig, layer_idx: int = 0) -> nn.Module:
    """The class built for block `layer_idx` (see the module docstring), checked on a tiny input to map
    (b, l, width) -> (b, l, width)."""
    args, kwargs, call = ClassParameters(config.name, mixer_class(config.name)).call(config, layer_idx)
    try:
        mixer = mixer_class(config.name)(*args, **kwargs)
    except Exception as err:
        raise ModelConfigError(f"model {config.name!r}: {call} raised {type(err).__name__}: {err}") from err
    x = torch.randn(2, config.seq_len, config.width, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            y = mixer(x)
    except Exception as err:
        raise ModelConfigError(f"model {config.name!r}: {call}.forward on an input of shape {tuple(x.shape)} raised "
                               f"{type(err).__name__}: {err}") from err
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if got != tuple(x.shape):
        raise ModelConfigError(f"model {config.name!r}: {call}.forward must map (b, l, d_model) -> (b, l, d_model); "
                               f"on an input of shape {tuple(x.shape)} it returned {got}")
    return mixer
