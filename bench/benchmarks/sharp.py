"""Sharp precision cases: hand-set constructions measured at their float32 levels (no training).

A trained smoke case moves with the seed (up to 9.5x), so its floor must be loose. These cases
are deterministic and take about a second in all, so their floors can be tight: a 10x
precision regression in a conv kernel or a mixer moves them far past their floor.

    gd_step_iterated/<model>   a one-step GD construction (BaseConv, 4 layers; linear attention,
                               2 layers) applied ITERATIONS times to BATCH least-squares
                               problems; MSE = the median per-problem error of the last iterate
                               against the float64 least-squares solution (true GD in float32:
                               9.3e-15 on these problems)
    read / multiply            the one-layer BaseConv constructions; bit-exact in float32, so
                               their MSE is the target's rounding floor exactly (0 for read)
    linear                     the one-layer BaseConv LINEAR construction (12x its floor)

`measure(case_id)` returns the extra_info of a case; bench/benchmarks/test_precision.py runs every case.
"""
from __future__ import annotations

from typing import Callable

import torch

from primitives import make_task, stream_generator

BATCH, ITERATIONS, ETA, D, N = 256, 150, 0.5, 5, 20
BUDGET = "exact construction, no training"
# bit-exact cases must reproduce their measured MSE exactly (any other float32 prediction is
# further from the exact target than the rounded target is); level cases may move 2x between
# CPUs / BLAS builds, whose summation orders differ (1 versus 2 threads: identical here)
MARGINS = {"bit_exact": 1.0, "level": 2.0}


def _gd_iterated(model: str) -> Callable[[], dict]:
    def measure() -> dict:
        from bench.experiments.construction_curves import gd_iterate_curve

        out = gd_iterate_curve(model, steps=ITERATIONS, D=D, N=N, eta=ETA, batch=BATCH, dtypes=("float32",))
        curve = out["float32"]["construction"]
        return {"eval_mse": curve.median[-1], "floor": out["float32"]["true_gd"].median[-1], "bit_exact": None,
                "kind": "level"}

    return measure


def _primitive(task_name: str) -> Callable[[], dict]:
    def measure() -> dict:
        from architectures.constructions.baseconv_primitives import baseconv_linear, baseconv_multiply, baseconv_read

        builder = {"read": baseconv_read, "linear": baseconv_linear, "multiply": baseconv_multiply}[task_name]
        task = make_task(task_name)
        c = builder(task, dtype=torch.float32)
        data = task.sample(BATCH, generator=stream_generator(0, "eval"), dtype=torch.float32)
        with torch.no_grad():
            pred = c.model(data.inputs)
        exact = bool(torch.equal(pred, data.targets))
        return {"eval_mse": task.metrics(pred, data)["mse"], "floor": task.floor(torch.float32, n=BATCH, seed=0),
                "bit_exact": exact, "kind": "bit_exact" if task_name != "linear" else "level"}

    return measure


CASES: dict[str, Callable[[], dict]] = {
    "construction/gd_step_iterated/baseconv/float32": _gd_iterated("baseconv"),
    "construction/gd_step_iterated/linear_attention/float32": _gd_iterated("linear_attention"),
    "construction/read/baseconv/float32": _primitive("read"),
    "construction/multiply/baseconv/float32": _primitive("multiply"),
    "construction/linear/baseconv/float32": _primitive("linear"),
}


def measure(case: str) -> dict:
    """The benchmark extra_info of one sharp case (the keys bench.reporting.floors reads)."""
    with torch.no_grad():
        info = CASES[case]()
    return {"case_id": case, "status": "ok", "message": None, "best_eval_mse": info["eval_mse"], "rel": None,
            "steps_per_s": None, "steps": 0, "config_hash": None, "budget": BUDGET, "threads": torch.get_num_threads(),
            **info}
