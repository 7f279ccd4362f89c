"""Mixers from outside the package, named by import path: "package.module:Class".

    build_model("mymixer:MyMixer", task, width=32, depth=2, order=3)

zoology's convention: the class is built as Class(d_model, l_max, **params), maps
(b, l, d_model) -> (b, l, d_model), and goes into the shared backbone where a registered mixer
goes. Parameters the backbone reads (`BACKBONE_FIELDS`: width, depth, mlp, prenorm, seed, ...)
stay with it; `heads` and `causal`, which only mixers read, go to the class when its signature
names them; every other parameter goes to the class and must be one its signature accepts.

Validating a config imports the module and reads the class's signature (nothing is built).
Building the model runs each new mixer once on a tiny input to check that it keeps the shape.
The class's nn.Linear maps get the backbone's init, as every mixer's do; its other parameters
keep what its constructor drew from the global RNG, which the backbone seeds with `seed`.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

import torch
import torch.nn as nn
from pydantic import ConfigDict, ValidationError

from .config import ModelConfig, ModelConfigError, config_error

# ModelConfig fields that only mixers read: a class gets them if its signature names them.
MIXER_FIELDS = ("heads", "causal")
BACKBONE_FIELDS = tuple(f for f in ModelConfig.parameter_names() if f not in MIXER_FIELDS)

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ImportPathError(ValueError):
    """An import path 'package.module:NAME' that does not resolve; the message says why."""


def is_import_path(name: str) -> bool:
    return ":" in name


def import_object(spec: str, example: str = "mypkg.mixers:MyMixer") -> Any:
    """'package.module:NAME' -> the object NAME of that module (NAME may be dotted).

    The one place import paths are resolved (model names here, grids in bench.harness.sweep)."""
    module_name, _, attr = spec.partition(":")
    if not (_DOTTED.fullmatch(module_name) and _DOTTED.fullmatch(attr)):
        raise ImportPathError(f"an import path is MODULE:NAME (e.g. {example}), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name + ".").startswith(err.name + "."):  # the module itself, not one it imports
            parent, _, child = err.name.rpartition(".")
            if parent in sys.modules:  # the package was found, its submodule was not
                where = list(getattr(sys.modules[parent], "__path__", []))
                raise ImportPathError(f"cannot import module {module_name!r}: package {parent!r} ({', '.join(where)}) "
                                      f"has no module {child!r}") from None
            searched = ", ".join(p or "." for p in sys.path)
            top = module_name.split(".")[0]
            raise ImportPathError(
                f"cannot import module {module_name!r}: no module named {err.name!r} in sys.path ({searched}); "
                f"the folder that holds {top}.py (or the package {top}/) must be on PYTHONPATH, "
                f"e.g. PYTHONPATH=/path/to/that/folder python -m bench ..."
            ) from None
        raise ImportPathError(f"importing module {module_name!r} failed: {err}") from err
    except Exception as err:  # the user's module raised while importing: say what, keep the traceback
        raise ImportPathError(f"importing module {module_name!r} failed: {type(err).__name__}: {err}") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            own = sorted(n for n, v in vars(module).items()
                         if not n.startswith("_") and getattr(v, "__module__", None) == module_name)
            defined = f"; it defines {', '.join(own)}" if own else ""
            raise ImportPathError(f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute "
                                  f"{attr!r}{defined}")
        obj = getattr(obj, part)
    return obj


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
            f"Class(d_model, l_max, **params) whose forward maps (b, l, d_model) -> (b, l, d_model)")
    return obj


class ClassParameters:
    """What a mixer class's constructor takes after (d_model, l_max)."""

    def __init__(self, name: str, cls: type[nn.Module]):
        self.cls = cls
        try:
            self.signature = inspect.signature(cls)
        except (TypeError, ValueError):  # no introspectable signature: accept anything, the build will tell
            self.signature, self.names, self.required, self.any_keyword = None, [], [], True
            return
        params = list(self.signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise ModelConfigError(f"model {name!r}: the class must be built as {cls.__name__}(d_model, l_max, "
                                   f"**params), but its signature is {cls.__name__}{self.signature}")
        rest = positional[2:] + [p for p in params if p.kind == p.KEYWORD_ONLY]
        self.names = [p.name for p in rest if p.kind != p.POSITIONAL_ONLY]
        self.required = [p.name for p in rest if p.default is p.empty]
        self.any_keyword = any(p.kind == p.VAR_KEYWORD for p in params)

    def accepts(self, key: str) -> bool:
        return key in self.names or (self.any_keyword and key not in MIXER_FIELDS)

    def describe(self) -> str:
        names = ", ".join(self.names) or "nothing"
        return f"{self.cls.__name__} takes {names}{' and any keyword (**kwargs)' if self.any_keyword else ''}"


class PluginConfig(ModelConfig):
    """The backbone's fields (ModelConfig) plus the mixer class's parameters as extra fields."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    registered_mixer = False

    def mixer_params(self) -> dict[str, Any]:
        """The keyword arguments of Class(d_model, l_max, **params)."""
        named = ClassParameters(self.name, mixer_class(self.name)).names
        return {**{f: getattr(self, f) for f in MIXER_FIELDS if f in named}, **(self.model_extra or {})}


def plugin_config(name: str, shapes: dict[str, int], params: dict[str, Any]) -> PluginConfig:
    """Validate `params` for the mixer class at import path `name`; ModelConfigError names what is wrong."""
    cls = mixer_class(name)
    takes = ClassParameters(name, cls)
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


def build_plugin_mixer(config: PluginConfig) -> nn.Module:
    """Class(width, l_max, **params), checked on a tiny input to map (b, l, width) -> (b, l, width)."""
    cls, params = mixer_class(config.name), config.mixer_params()
    call = f"{cls.__name__}({config.width}, {config.l_max}{''.join(f', {k}={v!r}' for k, v in params.items())})"
    try:
        mixer = cls(config.width, config.l_max, **params)
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


