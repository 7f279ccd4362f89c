"""Hand-set constructions (architectures/constructions): what they compute, to what precision,
and what they cost. Every number asserted here is computed by running the real models."""
from __future__ import annotations

import math

import pytest
import torch

from primitives import algorithms as alg
from primitives import make_task, stream_generator
from architectures.constructions import (
    baseconv_gd_gram,
    baseconv_gd_step,
    baseconv_gd_step_3layer,
    baseconv_gd_step_broadcast,
    baseconv_gd_unrolled,
    baseconv_linear,
    baseconv_multiply,
    baseconv_newton_schulz,
    baseconv_read,
    broadcast_tokens,
    gd_iterate,
    gd_tokens,
    layer_outputs,
    linear_attention_gd_step,
)
from bench.experiments.construction_curves import gd_iterate_curve, gram_gd_curve, newton_curve, sample_problems, unrolled_gd_curve
from bench.experiments.construction_report import flushed_subnormals

D, N, ETA = 5, 20, 0.5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with flushed_subnormals():  # Newton-Schulz's E_k underflows; subnormal arithmetic is very slow
        yield
    torch.set_num_threads(threads)


# ---- costs ---------------------------------------------------------------------------------

def test_layer_and_width_counts():
    gd = baseconv_gd_step(D, N, ETA)
    assert (gd.layers_per_step, gd.setup_layers, gd.depth, gd.width) == (4, 0, 4, 4 * D + 1)
    assert baseconv_gd_step(3, 7, ETA).width == 13
    la = linear_attention_gd_step(D, N, ETA)
    assert (la.layers_per_step, la.depth, la.width, la.model.config.heads) == (2, 2, 18, 2)
    ns = baseconv_newton_schulz(D, N, ETA, iterations=6)
    assert (ns.setup_layers, ns.layers_per_step, ns.depth) == (4, 1, 10)
    assert ns.width == max(4 * D + 1 + D * (D + 1), D * D * (D + 1) // 2 + D * D) == 100
    unrolled = baseconv_gd_unrolled(D, N, ETA, steps=7)
    assert (unrolled.setup_layers, unrolled.layers_per_step, unrolled.depth, unrolled.width) == (1, 3, 22, 3 * D + 2)
    assert not unrolled.model.config.causal and not unrolled.model.config.residual
    gram = baseconv_gd_gram(D, N, ETA, steps=7)
    assert (gram.setup_layers, gram.layers_per_step, gram.depth, gram.width) == (3, 1, 10, 51)
    three = baseconv_gd_step_3layer(D, N, ETA)
    assert (three.layers_per_step, three.depth, three.width) == (3, 3, D * D + 4 * D + 1)
    paper = baseconv_gd_step_broadcast(D, N, ETA)
    assert (paper.layers_per_step, paper.depth, paper.width) == (3, 3, 4 * D + 1)
    assert (paper.model.config.l_max, paper.model.config.d_in) == (N, 2 * D + 1)
    for c in (gd, la, ns, gram, unrolled, three, paper):
        cfg = c.model.config
        assert not (cfg.prenorm or cfg.mlp or cfg.final_norm)
        assert cfg.residual == (c is not unrolled)
        assert c.width == cfg.width


def test_constructions_are_deterministic():
    a, b = baseconv_newton_schulz(D, N, ETA, 3), baseconv_newton_schulz(D, N, ETA, 3)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    p = sample_problems(4, D, N, seed=3, dtype=torch.float32)
    c = baseconv_gd_step(D, N, ETA, dtype=torch.float32)
    assert torch.equal(gd_iterate(c, p.A, p.b, p.x0, 5), gd_iterate(c, p.A, p.b, p.x0, 5))


def test_bad_arguments_raise():
    for builder in (baseconv_gd_step, baseconv_gd_step_3layer, baseconv_gd_step_broadcast):
        with pytest.raises(ValueError, match="output"):
            builder(output="hessian")
    with pytest.raises(ValueError, match="iterations"):
        baseconv_newton_schulz(iterations=-1)


# ---- one GD step on the primitives' tasks ----------------------------------------------------

@pytest.mark.parametrize("builder", [baseconv_gd_step, baseconv_gd_step_3layer, linear_attention_gd_step])
def test_one_step_matches_gd_step_and_gd_k_tasks(builder):
    gen = stream_generator(0, "eval")
    grad_task, step_task = make_task("gd_step", D=D, N=N), make_task("gd_k", D=D, N=N, k=1, eta=ETA)
    for task, output in ((grad_task, "gradient"), (step_task, "iterate")):
        batch = task.sample(32, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            pred = builder(D, N, ETA, output=output).model(batch.inputs)
        target = batch.exact_targets[:, -1]
        rel = ((pred[:, -1] - target).norm(dim=-1) / target.norm(dim=-1)).max().item()
        assert rel <= 1e-13, (output, rel)


def test_broadcast_layout_step_is_one_gd_step():
    """Liu et al.'s layout: every token [a_i, b_i, x]; the last position holds the step."""
    p = sample_problems(32, D, N, seed=1, dtype=torch.float64)
    tokens = broadcast_tokens(p.A, p.b, p.x0)
    assert tokens.shape == (32, N, 2 * D + 1)
    assert torch.equal(tokens[:, 7, D + 1:], p.x0) and torch.equal(tokens[:, 7, D], p.b[:, 7])
    want = {"gradient": alg.gradient(p.A, p.b, p.x0), "iterate": alg.gd_step(p.A, p.b, p.x0, ETA)}
    for output, target in want.items():
        with torch.no_grad():
            pred = baseconv_gd_step_broadcast(D, N, ETA, output=output).model(tokens)[:, -1]
        rel = ((pred - target).norm(dim=-1) / target.norm(dim=-1)).max().item()
        assert rel <= 1e-13, (output, rel)

    # the gd_step task's broadcast layout is this construction's input: its samples score to rounding
    task = make_task("gd_step", D=D, N=N, layout="broadcast")
    batch = task.sample(32, generator=stream_generator(2, "eval"), dtype=torch.float64)
    with torch.no_grad():
        pred = baseconv_gd_step_broadcast(D, N, ETA, output="gradient").model(batch.inputs)[:, -1]
    target = batch.exact_targets[:, -1]
    assert ((pred - target).norm(dim=-1) / target.norm(dim=-1)).max().item() <= 1e-13


# ---- iterated GD: per-step agreement and floors ----------------------------------------------

@pytest.mark.parametrize("construction", ["baseconv", "baseconv_broadcast", "linear_attention"])
def test_iterated_gd_matches_true_gd_and_reaches_floors(construction):
    curves = gd_iterate_curve(construction, steps=200, D=D, N=N, eta=ETA, batch=128, seed=0)
    f64, f32 = curves["float64"], curves["float32"]
    assert f64["max_relative_difference"] <= 1e-12
    assert f32["max_relative_difference"] <= 1e-5  # float32 rounding, compounded over 200 steps
    assert f64["construction"].median[-1] <= 1e-28
    assert f32["construction"].median[-1] <= 1e-14
    # as good as GD run directly in the same dtype (the mean is set by the worst problems)
    for c in (f32, f64):
        assert c["construction"].mean[-1] <= 2 * c["true_gd"].mean[-1]
    assert f64["construction"].first_below(1e-28) == f64["true_gd"].first_below(1e-28)
    assert f32["construction"].layers[10] == 10 * {"baseconv": 4, "baseconv_broadcast": 3, "linear_attention": 2}[construction]


def test_three_layer_gd_step_matches_true_gd():
    """The Gram form reaches the float64 floor; in float32 its cancellation (sum a a^T x - sum b a)
    leaves it above true GD's level, a cost the 4-layer residual form does not pay."""
    curves = gd_iterate_curve("baseconv_3layer", steps=200, D=D, N=N, eta=ETA, batch=128, seed=0)
    f64, f32 = curves["float64"], curves["float32"]
    assert f64["max_relative_difference"] <= 1e-12
    assert f64["construction"].median[-1] <= 1e-28
    assert f64["construction"].first_below(1e-28) == f64["true_gd"].first_below(1e-28)
    assert f32["construction"].layers[10] == 30
    assert 1e-14 < f32["construction"].median[-1] <= 1e-13


def test_unrolled_gd_is_three_layers_per_step_in_one_pass():
    curves = unrolled_gd_curve(steps=200, D=D, N=N, eta=ETA, batch=64, seed=0)
    assert curves["float64"]["max_relative_difference"] <= 1e-12
    assert curves["float64"]["construction"].median[-1] <= 1e-28
    # float32: each position sums the gradient in its own order, so the copies of x drift by rounding
    assert curves["float32"]["construction"].median[-1] <= 2e-14
    assert curves["float32"]["construction"].layers[4] == 1 + 3 * 4
    p = sample_problems(4, D, N, seed=2, dtype=torch.float64)
    out = baseconv_gd_unrolled(D, N, ETA, steps=3).model(gd_tokens(p.A, p.b, p.x0))
    ref = alg.gd_iterates(p.A, p.b, p.x0, ETA, 3)[:, -1]
    assert (out - ref.unsqueeze(1)).abs().max() <= 1e-13  # every position holds x_3


def test_gd_with_hessian_in_stream_is_gd_one_layer_per_step():
    curves = gram_gd_curve(steps=200, D=D, N=N, eta=ETA, batch=16, seed=0)
    assert curves["float64"]["max_relative_difference"] <= 1e-12
    assert curves["float64"]["construction"].median[-1] <= 1e-28
    # it solves the rounded normal equations: in float32 it stops above per-token GD's floor
    assert curves["float32"]["construction"].median[-1] <= 1e-13
    assert curves["float32"]["construction"].layers[5] == 3 + 5


# ---- Newton-Schulz ---------------------------------------------------------------------------

def test_newton_schulz_is_gd_at_step_two_to_the_k():
    p = sample_problems(16, D, N, seed=1, dtype=torch.float64)
    c = baseconv_newton_schulz(D, N, ETA, iterations=5)
    xs = layer_outputs(c.model, gd_tokens(p.A, p.b, p.x0))[3:, :, -1]  # k = 0..5
    gd = alg.gd_iterates(p.A, p.b, p.x0, ETA, 2**5)
    for k in range(6):
        ref = gd[:, 2**k]
        assert ((xs[k] - ref).norm(dim=-1) / ref.norm(dim=-1)).max() <= 1e-12


def test_newton_schulz_converges_quadratically_to_the_floor():
    curves = newton_curve(iterations=8, rounds=2, D=D, N=N, eta=ETA, batch=16, seed=0)
    f64, f32 = curves["float64"], curves["float32"]
    assert f64["max_relative_difference_ns"] <= 1e-12
    errs = f64["iterations"].median
    k_floor = f64["iterations"].first_below(1e-28)
    assert k_floor is not None and k_floor <= 8 and f64["iterations"].layers[k_floor] <= 12
    # quadratic: the exponent of the error roughly doubles per iteration before the floor
    ratios = [math.log(errs[k + 1]) / math.log(errs[k]) for k in range(len(errs) - 1) if 1e-28 < errs[k + 1] and errs[k] < 1e-3]
    assert len(ratios) >= 2 and min(ratios) >= 1.5, ratios
    # GD needs about 2^k_floor steps for the same error
    gd = gd_iterate_curve("baseconv", steps=2 ** (k_floor - 2), batch=16, seed=0, dtypes=("float64",))
    assert gd["float64"]["construction"].median[-1] > 1e-20
    # float32: one pass stops at the rounded normal equations; one refinement pass reaches GD's floor
    assert f32["iterations"].median[-1] > 1e-14
    assert f32["refinement"][6].median[2] <= 1e-14


# ---- primitives ------------------------------------------------------------------------------

def _run(builder, task, dtype, n=64):
    batch = task.sample(n, generator=stream_generator(0, "eval"), dtype=dtype)
    with torch.no_grad():
        pred = builder(task, dtype=dtype).model(batch.inputs)
    return pred, batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_read_is_bit_exact(dtype):
    for params in ({}, {"i": 3, "j": 3}, {"i": 0, "j": 39, "a": 2, "b": 9}):
        task = make_task("read", **params)
        pred, batch = _run(baseconv_read, task, dtype)
        assert torch.equal(pred, batch.targets)
        assert baseconv_read(task).model.config.depth == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiply_is_the_correctly_rounded_product(dtype):
    for params in ({}, {"width": 6, "a": 1, "b": 3, "out_width": 3}):
        task = make_task("multiply", **params)
        pred, batch = _run(baseconv_multiply, task, dtype)
        assert torch.equal(pred, batch.targets)  # targets = exact product rounded once to dtype
        assert task.metrics(pred, batch)["mse"] <= 4 * task.floor(dtype) + (1e-28 if dtype == torch.float64 else 0)


def test_linear_precision():
    task = make_task("linear")
    pred, batch = _run(baseconv_linear, task, torch.float64)
    assert task.metrics(pred, batch)["mse"] <= 1e-28
    pred, batch = _run(baseconv_linear, task, torch.float32, n=256)
    ratio = task.metrics(pred, batch)["mse"] / task.floor(torch.float32, n=256)
    # fp32 products and fp32 sums inside the matmul: several times the floor, never below it
    assert 1.0 < ratio <= 16.0, ratio
    multi = make_task("linear", out_width=3)
    pred, batch = _run(baseconv_linear, multi, torch.float64)
    assert multi.metrics(pred, batch)["mse"] <= 1e-28
