"""Tasks from outside the package, named by import path: "package.module:Class".

    make_task("mytasks:Cube", width=4)       # what `--task mytasks:Cube` and {"name": "mytasks:Cube"} build

The class derives from `primitives.Task` and follows the built-in tasks' contract (primitives/base.py):
pydantic fields for its parameters, `seq_len`, `d_in`, `d_out`, and
`_sample_exact(batch_size, generator, dtype) -> (inputs, targets, mask)` with float64 inputs that are
numbers of `dtype` (drawn with `self._draw` or rounded with `round_to`), float64 targets computed from
them, and a (seq_len,) bool mask of the scored positions.

`make_task` checks a class the first time it meets it with given parameters (nothing is built but
the task itself, on the CPU), and raises TaskConfigError with one line naming what is wrong: the
import, the base class, the parameters, then one drawn batch (`check_sampler`): its shapes, its
generator, finite values, and exact targets. docs/plugins.md states each check.

The import-path resolver (`import_object`) lives here, the lowest layer that needs it; architectures
resolves mixers and bench.harness.sweep resolves grids with it.
"""
from __future__ import annotations

import importlib
import json
import re
import sys
from typing import Any

import torch

from .base import Task, TaskConfigError, rounding_inputs_to
from .registry import TASKS
from .registry import make_task as make_registered_task

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
CHECK_BATCH = 8  # samples in each batch the sampler check draws


class ImportPathError(ValueError):
    """An import path 'package.module:NAME' that does not resolve; the message says why."""


def is_import_path(name: str) -> bool:
    return ":" in name


def import_object(spec: str, example: str = "mypkg.mixers:MyMixer") -> Any:
    """'package.module:NAME' -> the object NAME of that module (NAME may be dotted).

    The one place import paths are resolved (tasks here, mixers in architectures, grids in
    bench.harness.sweep)."""
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


# ---- tasks by import path -----------------------------------------------------------


def task_class(name: str) -> type[Task]:
    """The Task subclass an import path points at; TaskConfigError unless it is one."""
    try:
        obj = import_object(name, example="mytasks:MyTask")
    except ImportPathError as err:
        raise TaskConfigError(f"task {name!r}: {err}") from None
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        what = f"the class {obj.__name__}" if isinstance(obj, type) else f"an instance of {type(obj).__name__}"
        raise TaskConfigError(f"task {name!r} is {what}, not a subclass of primitives.Task (a task derives from "
                              "primitives.Task and defines seq_len, d_in, d_out and _sample_exact; see docs/plugins.md)")
    return obj


def make_task(name: str, **params) -> Task:
    """Build a task by registry name (primitives.TASKS) or by import path "package.module:Class",
    validating its parameters (TaskConfigError names what is wrong).

    >>> make_task("multiply").d_out
    10
    """
    if not is_import_path(name):
        if name not in TASKS:
            raise TaskConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}, or a task "
                                  "class of your own as package.module:Class")
        return make_registered_task(name, **params)
    cls = task_class(name)
    try:
        task = cls(**params)
    except TaskConfigError as err:  # Task.__init__ names the class's `name`; the user wrote the path
        raise TaskConfigError(f"task {name!r}: {str(err).removeprefix(f'task {cls.name!r}: ')}") from None
    except Exception as err:
        raise TaskConfigError(f"task {name!r}: {cls.__name__}(**{params!r}) raised {type(err).__name__}: {err}") from err
    key = (name, json.dumps(params, sort_keys=True, default=repr))
    if key not in _CHECKED:  # once per class path and parameters: a sweep validates each config many times
        try:
            check_sampler(task)
            _CHECKED[key] = None
        except TaskConfigError as err:
            _CHECKED[key] = str(err)
    if _CHECKED[key]:
        raise TaskConfigError(f"task {name!r}: {_CHECKED[key]}")
    return task


_CHECKED: dict[tuple[str, str], str | None] = {}  # (path, params) -> what check_sampler found wrong, or None


def _draw(task: Task, seed: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed)
    try:
        out = task._sample_exact(CHECK_BATCH, generator, dtype)
    except NotImplementedError:
        raise TaskConfigError(f"{type(task).__name__} must define _sample_exact(batch_size, generator, dtype) -> "
                              "(inputs, targets, mask) (see primitives.base.Task)") from None
    except Exception as err:
        raise TaskConfigError(f"drawing a batch of {CHECK_BATCH} in {str(dtype).removeprefix('torch.')} raised "
                              f"{type(err).__name__}: {err}") from err
    if not (isinstance(out, tuple) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)):
        raise TaskConfigError(f"_sample_exact must return three tensors (inputs, targets, mask), got "
                              f"{type(out).__name__}")
    return out


def _shapes(task: Task) -> tuple[int, int, int]:
    try:
        shapes = (task.seq_len, task.d_in, task.d_out)
    except NotImplementedError:
        raise TaskConfigError(f"{type(task).__name__} must define the properties seq_len, d_in and d_out") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shapes):
        raise TaskConfigError(f"seq_len, d_in, d_out must be positive integers, got {shapes}")
    return shapes


def check_sampler(task: Task) -> None:
    """Draw one batch and check it keeps the task contract; TaskConfigError names the first breach.

    Shapes and dtypes: inputs (B, seq_len, d_in) and targets (B, seq_len, d_out) in float64, mask
    (seq_len,) bool with a scored position. Finite: inputs and targets. Generator: two draws from
    generators of one seed are equal. Exact: the inputs of a float32 draw are float32 numbers, and
    the targets at scored positions equal, bit for bit, the class's float64 computation on those same
    inputs: a draw with dtype=float64 while `Task._draw` and `round_to` still round to float32."""
    L, d_in, d_out = _shapes(task)
    x, y, mask = _draw(task, 0, torch.float32)
    B = CHECK_BATCH
    for what, t, shape in (("inputs", x, (B, L, d_in)), ("targets", y, (B, L, d_out))):
        if t.dtype != torch.float64 or tuple(t.shape) != shape:
            raise TaskConfigError(f"_sample_exact({B}, ...) must return float64 {what} of shape (batch, seq_len, "
                                  f"{'d_in' if what == 'inputs' else 'd_out'}) = {shape}, got {str(t.dtype)[6:]} "
                                  f"{tuple(t.shape)}")
    if mask.dtype != torch.bool or tuple(mask.shape) != (L,) or not bool(mask.any()):
        raise TaskConfigError(f"the mask must be a bool tensor of shape (seq_len,) = ({L},) with at least one scored "
                              f"position, got {str(mask.dtype)[6:]} {tuple(mask.shape)} with {int(mask.sum())} True")
    for what, t in (("inputs", x), ("targets", y)):
        if not bool(torch.isfinite(t).all()):
            raise TaskConfigError(f"{what} of a drawn batch are not all finite ({int((~torch.isfinite(t)).sum())} "
                                  "NaN or Inf entries)")
    again = _draw(task, 0, torch.float32)
    if not all(torch.equal(a, b) for a, b in zip((x, y, mask), again)):
        raise TaskConfigError("two draws from generators with the same seed differ: draw every random number from "
                              "the generator passed to _sample_exact (never the global RNG)")
    if not torch.equal(x, x.to(torch.float32).to(torch.float64)):
        raise TaskConfigError("inputs of a float32 draw are not float32 numbers: round them once to the training "
                              "dtype (self._draw or primitives.base.round_to), so the targets are computed from the "
                              "numbers the model sees")
    _check_exact(task, x, y, mask)


def _check_exact(task: Task, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> None:
    with rounding_inputs_to(torch.float32):
        x64, y64, mask64 = _draw(task, 0, torch.float64)
    if not (torch.equal(x64, x) and torch.equal(mask64, mask)):
        raise TaskConfigError("the inputs of a draw depend on its dtype beyond their rounding, so the exactness of "
                              "its targets cannot be checked: round inputs with self._draw or "
                              "primitives.base.round_to only")
    scored, exact = y[:, mask], y64[:, mask]
    if not torch.equal(scored, exact):
        gap = (scored - exact).abs().max().item()
        rounded = torch.equal(scored, scored.to(torch.float32).to(torch.float64))
        why = ("they are float32 numbers: rounded to the training dtype" if rounded
               else "they depend on the dtype the batch is drawn in")
        raise TaskConfigError(f"targets are not exact: the float64 targets of a float32 draw differ from the class's "
                              f"float64 computation on the same inputs by up to {gap:.2e} ({why}); compute targets in "
                              "float64 from the float64 inputs and leave the cast to the caller")
