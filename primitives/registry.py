"""Name -> task class registry and the `make_task` factory."""
from __future__ import annotations

from .base import Task, TaskConfigError, friendly_validation_message  # noqa: F401

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task reachable by its `name`."""
    TASKS[cls.name] = cls
    return cls


def make_task(name: str, **params) -> Task:
    """Build a task by name, validating its parameters.

    >>> make_task("multiply").d_out
    10
    """
    if name not in TASKS:
        raise TaskConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**params)  # Task.__init__ turns validation errors into TaskConfigError
