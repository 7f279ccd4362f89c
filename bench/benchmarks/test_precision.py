"""Precision benchmarks: each case trains one run and records the precision it reached.

    pytest bench/benchmarks/test_precision.py --profile smoke --benchmark-json out.json
    python -m bench floors --check out.json          # the CI precision gate (results/floors.json)

Cases per profile (bench/conftest.py's --profile):
    smoke  bench.grids.primitives("smoke"): 8 short runs, under two minutes on 2 CPU cores,
           among them the multiply pair where BaseConv reaches a precision that softmax
           attention, same budget, cannot
    ci     every grid at the ci budget (bench.grids.all_ci; about an hour on 2 busy cores)
    paper  every grid at the paper budget (GPU-cluster scale)

Every profile also runs the sharp cases (bench/benchmarks/sharp.py: exact constructions at their float32
levels, about a second in all, tight floors), so that a precision regression in a kernel or a
mixer fails the gate although the trained cases' floors must allow for seed noise.

Each case is one run timed with benchmark.pedantic(rounds=1, iterations=1) into a
temporary results folder (always trained, never read from results/); extra_info holds
the case id (the key of results/floors.json), eval_mse, best_eval_mse, floor, rel,
status, steps_per_s, config_hash and budget. Smoke runs use one torch thread, so that a
case's numbers on one machine are reproducible to the bit (small models gain nothing from
more threads).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from bench import grids
from bench.benchmarks import sharp
from bench.reporting.floors import case_id
from bench.harness.records import RunResult
from bench.reporting.tables import budget_text
from bench.harness.train import run

_RESULTS: dict[str, RunResult] = {}  # config hash -> result of this session


def profile_cases(profile: str):
    return grids.primitives("smoke") if profile == "smoke" else grids.all_grids(profile)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        configs = profile_cases(metafunc.config.getoption("--profile"))
        metafunc.parametrize("case", configs, ids=[case_id(c) for c in configs])
    if "sharp_case" in metafunc.fixturenames:
        metafunc.parametrize("sharp_case", sorted(sharp.CASES))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("precision-runs")


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_case(cfg, run_dir, profile: str) -> RunResult:
    if cfg.hash in _RESULTS:
        return _RESULTS[cfg.hash]
    with torch_threads(1 if profile == "smoke" else None):
        result = run(cfg, run_dir, force=True, progress=False)
    _RESULTS[cfg.hash] = result
    return result


def case_info(cfg, result: RunResult, profile: str) -> dict:
    return {
        "case_id": case_id(cfg), "profile": profile, "status": result.status, "message": result.message,
        "eval_mse": result.eval_mse, "best_eval_mse": result.best_eval_mse, "floor": result.floor,
        "rel": result.eval_rel, "steps_per_s": result.steps_per_s, "steps": result.steps_done,
        "config_hash": cfg.hash, "budget": f"{profile}: {budget_text(cfg)}", "threads": 1 if profile == "smoke" else
        torch.get_num_threads(),
    }


def test_precision(case, benchmark, profile, run_dir):
    result = benchmark.pedantic(train_case, args=(case, run_dir, profile), rounds=1, iterations=1)
    benchmark.extra_info.update(case_info(case, result, profile))
    # A diverged run is a result (the floors gate fails it); an unfinished one is not.
    assert result.status in ("ok", "diverged"), result.message


def test_sharp(sharp_case, benchmark, profile):
    with torch_threads(1):
        info = benchmark.pedantic(sharp.measure, args=(sharp_case,), rounds=1, iterations=1)
    benchmark.extra_info.update(info, profile=profile)
    if info["kind"] == "bit_exact":
        assert info["bit_exact"], f"{sharp_case}: the construction is no longer bit-exact in float32"


def expressivity_pair():
    """The smoke grid's bare one-mixer multiply runs: (baseconv, attention)."""
    bare = grids.exact_multiply_model()
    pair = {c.model.name: c for c in grids.primitives("smoke")
            if c.task.name == "multiply" and all(c.model.params.get(k) == v for k, v in bare.items())}
    return pair["baseconv"], pair["attention"]


def test_baseconv_reaches_multiply_precision_attention_cannot(profile, run_dir):
    """Same budget, same bare model (one mixer, no norms, no MLP): BaseConv's gate multiplies
    two projections of a token, so it can fit MULTIPLY exactly and gets close within the smoke
    budget; softmax attention has no product of two inputs and stays near the variance of
    the target (1)."""
    if profile != "smoke":
        pytest.skip("the expressivity pair is a smoke-profile case")
    baseconv_cfg, attention_cfg = expressivity_pair()
    baseconv = train_case(baseconv_cfg, run_dir, profile)
    attention = train_case(attention_cfg, run_dir, profile)
    assert baseconv.status == "ok" and attention.status == "ok"
    assert baseconv.eval_mse < 1e-3, f"BaseConv reached only {baseconv.eval_mse:.3e} on multiply"
    assert attention.eval_mse > 0.1, f"softmax attention reached {attention.eval_mse:.3e} on multiply"
    assert attention.eval_mse > 1000 * baseconv.eval_mse
