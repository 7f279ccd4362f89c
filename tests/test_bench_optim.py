"""Optimizer pieces with small deterministic checks: schedules, EMA filter, clip/skip,
full-batch optimizers reaching below the float32 floor in float64."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.harness.config import EXTRA_MODELS, AdaptiveSchedule, StepSchedule, make_run_config
from bench.solvers.optimizers import AdaptiveLR, EMAFilter, StepDecay, clip_grads_, mean_consecutive_cosine, total_grad_norm
from bench.harness.train import run


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- schedules ----------------------------------------------------------------------


def test_step_decay_is_the_papers_rule():
    s = StepDecay(StepSchedule(gamma=0.9, every=10, min_lr=1e-4), lr0=1e-3)
    assert s.lr_at(0) == s.lr_at(9) == 1e-3
    assert s.lr_at(10) == pytest.approx(9e-4, rel=1e-15)
    assert s.lr_at(25) == pytest.approx(1e-3 * 0.81, rel=1e-15)
    assert s.lr_at(10_000) == 1e-4  # floored at min_lr


def test_adaptive_rule_decreases_while_signal_high_and_increases_when_it_drops():
    cfg = AdaptiveSchedule(gamma=0.5, every=10, measure_every=5, smoothing=0.5, threshold=0.6, warmup=10)
    s = AdaptiveLR(cfg, lr0=1.0)
    assert s.signal == 1.0
    assert s.wants_signal(0) and s.wants_signal(5) and not s.wants_signal(7)
    s.observe(0.0)  # s = 0.5 * 1 + 0.5 * 0 = 0.5 (low), but step 10 is within warmup -> decrease
    assert s.signal == 0.5
    assert [s.lr_at(t) for t in range(11)] == [1.0] * 10 + [0.5]
    assert s.lr_at(10) == 0.5  # the rule fires once per step, however often lr_at is asked
    s.observe(0.1)  # s = 0.3: low after warmup -> LR / gamma
    assert s.signal == pytest.approx(0.3)
    assert s.lr_at(20) == 1.0
    s.observe(1.0)
    s.observe(1.0)  # s = 0.825 >= 0.6: high -> LR * gamma
    assert s.signal == pytest.approx(0.825)
    assert s.lr_at(30) == 0.5
    s.observe(float("nan"))  # a failed measurement leaves the signal alone
    assert s.signal == pytest.approx(0.825)
    restored = AdaptiveLR(cfg, lr0=1.0)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(40) == s.lr_at(40) == 0.25


def test_adaptive_lr_floor_and_cap():
    s = AdaptiveLR(AdaptiveSchedule(gamma=0.5, every=1, warmup=0, threshold=0.5, min_lr=0.3, max_lr=2.0), lr0=1.0)
    assert [s.lr_at(t) for t in range(1, 4)] == [0.5, 0.3, 0.3]
    s.signal = 0.0
    assert [s.lr_at(t) for t in range(4, 8)] == [0.6, 1.2, 2.0, 2.0]


def test_mean_consecutive_cosine():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert mean_consecutive_cosine([e1, e1, e1]) == pytest.approx(1.0)
    assert mean_consecutive_cosine([e1, -e1]) == pytest.approx(-1.0)
    # pairs: (e1, e2) -> 0, (e2, e1+e2) -> 1/sqrt(2)
    assert mean_consecutive_cosine([e1, e2, e1 + e2]) == pytest.approx(0.5 / math.sqrt(2))


# ---- gradient processing ------------------------------------------------------------


def _param_with_grad(values):
    p = nn.Parameter(torch.zeros(len(values), dtype=torch.float64))
    p.grad = torch.tensor(values, dtype=torch.float64)
    return p


def test_ema_filter_adds_lambda_times_ema():
    p = _param_with_grad([1.0, 2.0])
    f = EMAFilter(lam=2.0, decay=0.5)
    f.apply_([p])  # EMA starts at the first gradient: g + 2 * g
    assert p.grad.tolist() == [3.0, 6.0]
    p.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    f.apply_([p])  # EMA = 0.5 * [1, 2] + 0.5 * [3, 0] = [2, 1]; g + 2 * EMA
    assert p.grad.tolist() == [7.0, 2.0]
    g = EMAFilter(lam=2.0, decay=0.5)
    g.load_state_dict(f.state_dict())
    assert g.ema[0].tolist() == [2.0, 1.0]
    off = EMAFilter(lam=0.0, decay=0.5)
    p.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    off.apply_([p])
    assert p.grad.tolist() == [1.0, 1.0] and off.ema is None


def test_clip_scales_to_max_norm():
    a, b = _param_with_grad([3.0]), _param_with_grad([4.0])
    norm = total_grad_norm([a, b])
    assert norm == 5.0
    assert not clip_grads_([a, b], 10.0, norm)
    assert clip_grads_([a, b], 1.0, norm)
    assert (a.grad.item(), b.grad.item()) == pytest.approx((0.6, 0.8), rel=1e-15)
    a.grad[0] = float("nan")
    assert math.isnan(total_grad_norm([a, b]))


BASE = dict(task={"name": "multiply", "params": {"width": 4, "length": 8}},
            model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
            batch_size=8, eval_size=16)


def test_skip_large_grad_norm_leaves_weights_alone(tmp_path):
    from bench.harness.records import load_model

    cfg = make_run_config(**BASE, steps=6, skip_grad_norm=1e-12, max_consecutive_skips=100)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "ok" and result.skipped_steps == 6
    assert all(p.grad_norm_mean is None for p in result.curve[1:])
    untrained = cfg.build_model()
    trained = load_model(cfg, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), trained.state_dict().values()))
    assert result.eval_mse == result.curve[0].eval_mse


def test_too_many_consecutive_skips_is_divergence(tmp_path):
    cfg = make_run_config(**BASE, steps=10, skip_grad_norm=1e-12, max_consecutive_skips=3)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "diverged" and result.steps_done == 2
    assert "3 consecutive steps skipped" in result.message and result.eval_mse is None


def test_clip_and_filter_change_the_trajectory(tmp_path):
    plain = run(make_run_config(**BASE, steps=5), tmp_path, progress=False)
    clipped = run(make_run_config(**BASE, steps=5, grad_clip=1e-3), tmp_path, progress=False)
    filtered = run(make_run_config(**BASE, steps=5, ema_lambda=2.0), tmp_path, progress=False)
    assert len({plain.eval_mse, clipped.eval_mse, filtered.eval_mse}) == 3
    # grad-norm stats are of the raw gradient, before clipping
    assert clipped.curve[1].grad_norm_max > 1e-3


# ---- full-batch optimizers on a linear problem ----------------------------------------


class PerTokenLinear(nn.Module):
    """The smallest model that represents LINEAR (y_t = c . x_t) exactly."""

    def __init__(self, task):
        super().__init__()
        self.proj = nn.Linear(task.d_in, task.d_out)

    def forward(self, x):
        return self.proj(x)


@pytest.fixture
def per_token_linear():
    EXTRA_MODELS["per_token_linear"] = PerTokenLinear
    yield "per_token_linear"
    EXTRA_MODELS.pop("per_token_linear", None)


LINEAR = {"name": "linear", "params": {"width": 6, "length": 4}}


@pytest.mark.parametrize("optimizer,steps", [
    ({"name": "lbfgs", "train_size": 64, "max_iter": 50}, 3),
    ({"name": "levenberg_marquardt", "train_size": 16}, 4),
    ({"name": "gauss_newton", "train_size": 16}, 2),
])
def test_full_batch_float64_goes_below_float32_floor(tmp_path, per_token_linear, optimizer, steps):
    cfg = make_run_config(task=LINEAR, model={"name": per_token_linear}, optimizer=optimizer,
                          dtype="float64", steps=steps, eval_size=256)
    result = run(cfg, tmp_path, progress=False)
    floor32 = cfg.build_task().floor(torch.float32)
    assert floor32 > 1e-16  # rounding y = c . x to float32 is a real floor
    assert result.status == "ok"
    assert result.eval_mse < floor32 * 1e-6, (result.eval_mse, floor32)
    assert result.curve[0].eval_mse > 1.0  # it started far away


@pytest.mark.parametrize("conv_backend", ["fft", "direct"])
def test_levenberg_marquardt_on_a_small_baseconv(tmp_path, conv_backend):
    """Both conv backends go through torch.func (direct is a functorch-ready autograd.Function)."""
    model = {"name": "baseconv", "params": {"width": 4, "depth": 1, "mlp": False, "conv_backend": conv_backend}}
    cfg = make_run_config(task={"name": "multiply", "params": {"width": 4, "length": 4}}, model=model,
                          optimizer={"name": "levenberg_marquardt", "train_size": 16}, steps=3, eval_size=64)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "ok" and result.param_count <= 5000
    mses = [p.eval_mse for p in result.curve]
    assert mses[-1] < 0.75 * mses[0], mses


def test_levenberg_marquardt_per_sample_jacobian_matches_row_by_row():
    # The fast path (torch.func, per sample) against the canonical one (one backward per residual).
    from architectures import build_model
    from bench.solvers.levenberg_marquardt import LevenbergMarquardt, LevenbergMarquardtConfig
    from primitives import make_task, stream_generator

    task = make_task("multiply", width=4, length=5)
    model = build_model("baseconv", task, width=4, depth=1, mlp=False, seed=0).double()
    batch = task.sample(6, generator=stream_generator(0, "train"))
    lm = LevenbergMarquardt(model, LevenbergMarquardtConfig(train_size=6))
    jtj, jtr, loss, count = lm._normal_equations(batch.inputs, batch.targets, batch.mask)
    r, J = lm._jacobian_by_rows(batch.inputs, batch.targets, batch.mask)
    assert count == r.numel() == 6 * 5 * 2
    assert torch.allclose(jtj, J.T @ J, rtol=1e-12, atol=1e-12)
    assert torch.allclose(jtr, J.T @ r, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(r.pow(2).mean().item(), rel=1e-12)
