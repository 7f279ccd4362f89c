"""Task generators: primitives (READ, LINEAR, MULTIPLY, ...) and least-squares algorithm steps.

    from primitives import make_task, TASKS, stream_generator
    task = make_task("multiply")
    batch = task.sample(1024, generator=stream_generator(0, "train"), dtype=torch.float32)
"""
from .base import Batch, Task, TaskConfigError, check_float_dtype, stream_generator
from .registry import TASKS, make_task, register
from . import elementwise  # noqa: F401  (registers multiply, square, identity)

__all__ = [
    "Batch",
    "Task",
    "TaskConfigError",
    "TASKS",
    "make_task",
    "register",
    "check_float_dtype",
    "stream_generator",
]
