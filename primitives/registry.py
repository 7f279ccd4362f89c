"""Name -> task class registry and the `make_task` factory."""
from __future__ import annotations

from pydantic import ValidationError

from .base import Task, TaskConfigError

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task reachable by its `name`."""
    TASKS[cls.name] = cls
    return cls


def friendly_validation_message(owner: str, err: ValidationError) -> str:
    """Turn a pydantic ValidationError into one line per bad field, no stack trace."""
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e.get("loc", ())) or "config"
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{field}: {msg}")
    return f"{owner}: " + "; ".join(parts)


def make_task(name: str, **params) -> Task:
    """Build a task by name, validating its parameters.

    >>> make_task("multiply").d_out
    10
    """
    if name not in TASKS:
        raise TaskConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    try:
        return cls(**params)
    except ValidationError as err:
        allowed = ", ".join(f for f in cls.model_fields)
        raise TaskConfigError(
            friendly_validation_message(f"task {name!r}", err) + f" (parameters: {allowed})"
        ) from None
