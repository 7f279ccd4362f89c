"""Task generators: primitives (READ, LINEAR, MULTIPLY, ...) and least-squares algorithm steps.

Tasks (make_task(name, **params); each class docstring gives its token layout):
  read, linear, multiply, square, identity      token-wise primitives   (linear_maps, elementwise)
  least_squares, gd_step, gd_k, newton_step,
  newton_schulz                                 least-squares algorithms (algorithm_steps)
  icl_regression                                in-context regression    (icl)
  ode_operator                                  a linear ODE in context  (ode)
  package.module:Class                          a Task subclass of your own (plugin; docs/plugins.md)
Float64 reference algorithms (gradient, gd_iterates, newton_step, newton_schulz_step, ...)
live in `primitives.algorithms`; the least-squares problem sampler in `primitives.least_squares`.

    from primitives import make_task, TASKS, stream_generator
    task = make_task("multiply")
    batch = task.sample(1024, generator=stream_generator(0, "train"), dtype=torch.float32)
"""
from .base import Batch, Task, TaskConfigError, check_float_dtype, stream_generator
from .registry import TASKS, register
from .plugin import import_object, is_import_path, make_task
from . import elementwise, linear_maps, algorithm_steps, icl, ode  # noqa: F401  (register the tasks)
from . import algorithms
from .least_squares import LeastSquaresProblem, sample_least_squares

__all__ = [
    "Batch",
    "Task",
    "TaskConfigError",
    "TASKS",
    "make_task",
    "import_object",
    "is_import_path",
    "register",
    "check_float_dtype",
    "stream_generator",
    "algorithms",
    "LeastSquaresProblem",
    "sample_least_squares",
]
