"""The matrix-free Levenberg-Marquardt (solver "cg") against the dense one, its preflight errors,
divergence, resume, a stop in the middle of a step, and its config."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bench.solvers.matrix_free as matrix_free
from architectures import build_model
from bench.harness import interrupt
from bench.harness.config import EXTRA_MODELS, LevenbergMarquardtConfig, RunConfigError, make_run_config
from bench.harness.train import Trainer, preflight, run
from bench.solvers.cg import pcg
from bench.solvers.levenberg_marquardt import LevenbergMarquardt
from bench.solvers.matrix_free import MatrixFreeLevenbergMarquardt, Point
from primitives import make_task, stream_generator

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_TASK = {"name": "multiply", "params": {"width": 4, "length": 5}}
SMALL_BASECONV = {"name": "baseconv", "params": {"width": 6, "depth": 1, "mlp": False, "conv_kind": "long"}}
# one gated conv and nothing else: it can express multiply exactly (see bench.grids.exact_multiply_model)
EXACT_BASECONV = {"name": "baseconv", "params": {"width": 8, "depth": 1, "mlp": False, "conv_kind": "long",
                                                 "pos_emb": False, "prenorm": False, "final_norm": False}}
CG = {"name": "levenberg_marquardt", "solver": "cg", "train_size": 32, "cg": {"max_iter": 200}}
# grid 8's recipe (bench.grids.matrix_free_lm) on a small set: Kronecker factors, linearize, the ratio rule's factors
GRID8 = {"name": "levenberg_marquardt", "solver": "cg", "train_size": 32, "curvature_size": 16, "damping_down": 1 / 3,
         "damping_up": 2.0, "cg": {"max_iter": 100, "preconditioner": "kronecker", "products": "linearize"}}


def _spd_system(n: int, seed: int):
    """A random symmetric positive definite system a x = b (smallest eigenvalue >= 0.1) and its solution."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = q @ q.T + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    return a, b, torch.linalg.solve(a, b)


def test_pcg_solves_a_symmetric_system_to_tolerance():
    a, b, exact = _spd_system(30, 0)
    for precond in (None, lambda v: v / a.diagonal()):
        x, r, used = pcg(lambda v: a @ v, b, None, precond, 500, 1e-12)
        assert torch.allclose(x, exact, rtol=1e-9, atol=1e-9)
        assert r.norm() <= 1e-12 * b.norm() and used <= 500
    x, _, used = pcg(lambda v: a @ v, b, exact, None, 500, 1e-12)  # a warm start at the answer stops at once
    assert used == 1 and torch.allclose(x, exact)


def test_pcg_from_a_scaled_start_costs_the_same_and_starts_from_its_best_multiple():
    a, b, exact = _spd_system(20, 5)
    x, r, used = pcg(lambda v: a @ v, b, 7.0 * exact, None, 1, 1e-12, scale_start=True)
    assert used == 1 and torch.allclose(x, exact, rtol=1e-10) and r.norm() < 1e-8 * b.norm()
    x, _, used = pcg(lambda v: a @ v, b, -exact, None, 1, 1e-12, scale_start=True)  # pointing away: from zero
    assert used == 1 and torch.equal(x, torch.zeros_like(b))


@pytest.mark.parametrize("preconditioner,products", [("none", "jvp"), ("diagonal", "jvp"), ("kronecker", "jvp"),
                                                      ("kronecker", "linearize")])
def test_cg_step_solved_to_convergence_matches_the_dense_step(preconditioner, products):
    """On a model small enough for both: (J^T J + mu I) d = -J^T r, dense (float64 solve) and matrix-free."""
    task = make_task(**{"name": SMALL_TASK["name"], **SMALL_TASK["params"]})
    model = build_model("baseconv", task, **SMALL_BASECONV["params"], seed=0).double()
    batch = task.sample(8, generator=stream_generator(0, "train"), dtype=torch.float64)
    dense = LevenbergMarquardt(model, LevenbergMarquardtConfig(train_size=8))
    jtj, jtr, _, count = dense._normal_equations(batch.inputs, batch.targets, batch.mask)
    mu = 1e-3
    expected = torch.linalg.solve(jtj + mu * torch.eye(jtj.shape[0], dtype=torch.float64), -jtr)
    cg = MatrixFreeLevenbergMarquardt(model, LevenbergMarquardtConfig(
        solver="cg", train_size=8, cg={"products": products, "preconditioner": preconditioner}))
    # the matrix-free system is the dense one divided by the number of residuals
    got = cg.direction(batch.inputs, batch.targets, batch.mask, damping=mu / count)
    rel = ((got - expected).norm() / expected.norm()).item()
    assert rel < 1e-8, rel
    assert expected.norm() > 1e-3  # a real step, not two zeros


def test_cg_gauss_newton_products_match_the_dense_jacobian():
    task = make_task(**{"name": SMALL_TASK["name"], **SMALL_TASK["params"]})
    model = build_model("baseconv", task, **SMALL_BASECONV["params"], seed=1).double()
    batch = task.sample(5, generator=stream_generator(1, "train"), dtype=torch.float64)
    r, jac = LevenbergMarquardt(model, LevenbergMarquardtConfig(train_size=5))._jacobian_by_rows(
        batch.inputs, batch.targets, batch.mask)
    cg = MatrixFreeLevenbergMarquardt(model, LevenbergMarquardtConfig(solver="cg", train_size=5))
    gauss_newton = cg._operators(batch.inputs, batch.targets, batch.mask, cg._flat())
    diag = cg.curvature.floored_diag()
    v = torch.randn(jac.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(gauss_newton(v), jac.T @ (jac @ v) / r.numel(), rtol=1e-10, atol=1e-12)
    # the Hutchinson diagonal is an estimate: right on average, within a factor on most weights
    exact = (jac ** 2).sum(0) / r.numel()
    used = exact > 1e-3 * exact.mean()
    ratio = diag[used] / exact[used]
    assert 0.5 < ratio.median().item() < 2.0


def test_cg_lm_trains_the_small_baseconv_and_records_its_diagnostics(tmp_path):
    # the dense solver takes this model from 1.2 to 1.8e-9 in 11 steps; the matrix-free one to 5.8e-11
    cfg = make_run_config(task=SMALL_TASK, model=EXACT_BASECONV, optimizer=CG, steps=12, eval_size=64,
                          eval_every=1)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "ok"
    mses = [p.eval_mse for p in result.curve]
    assert mses[0] > 1.0 and mses[-1] < 1e-6, mses
    d = result.optimizer_diagnostics
    assert d["accepted"] and d["cg_products"] >= 1 and d["damping"] > 0 and 0 <= d["cg_rel_residual"] < 1
    # every eval point after the first keeps the step it followed: where a run stalled, and why
    assert result.curve[0].second_order is None and result.curve[-1].second_order == d
    assert all(p.second_order["cg_products"] >= 1 and p.second_order["damping"] > 0 for p in result.curve[1:])


@pytest.mark.parametrize("plane", [False, True])
def test_cg_lm_resumes_bit_identically(tmp_path, plane):
    # grid 8's recipe; with the whole set's plane, the last step taken is part of the state
    fields = dict(task=SMALL_TASK, model=SMALL_BASECONV, steps=6, eval_size=64, eval_every=1,
                  optimizer={**GRID8, "whole_set_plane": plane})
    whole = run(make_run_config(**fields), tmp_path / "whole", progress=False)
    cfg = make_run_config(**fields, checkpoint_every=3)
    trainer = Trainer(cfg, tmp_path / "split", progress=False)
    for _ in range(3):
        trainer.step_once()
        trainer.add_curve_point()
    trainer.save_checkpoint()  # as a run killed after step 3 leaves it
    resumed = run(cfg, tmp_path / "split", progress=False)
    assert resumed.resumed_at == [3]
    assert [p.eval_mse for p in resumed.curve[-3:]] == [p.eval_mse for p in whole.curve[-3:]]
    assert resumed.eval_mse == whole.eval_mse


def _stop_after(monkeypatch, module, calls: int):
    """check_stop in `module` that finds a stop requested from its `calls`-th call on."""
    seen = [0]

    def check():
        seen[0] += 1
        if seen[0] >= calls:
            interrupt.request_stop()
        interrupt.check_stop()

    monkeypatch.setattr(module, "check_stop", check)
    return seen


@pytest.mark.parametrize("at", ["a product", "the last loss"])
def test_a_stop_requested_in_the_middle_of_a_step_leaves_the_solver_as_it_was(monkeypatch, at):
    """Between Gauss-Newton products (the 3rd check) or before the step's last trial loss: the step raises
    StopRequested, the weights, damping, last step and curvature statistics are those before it, and the step
    taken once the stop is cleared is the one an uninterrupted solver takes."""
    import bench.solvers.matrix_free as module

    def solver():
        opt, args = _slice_setup("whole", 8, preconditioner="kronecker", whole_set_plane=True, line_search=True)
        opt.step(*args)  # a last step and curvature statistics to keep
        return opt, args

    plain, args = solver()
    checks = _stop_after(monkeypatch, module, 10**9)
    plain.step(*args)
    monkeypatch.undo()
    assert checks[0] > 10  # every product and trial loss checks
    calls = 3 if at == "a product" else checks[0]
    stopped, _ = solver()
    before = stopped.state_dict(), stopped._flat()
    seen = _stop_after(monkeypatch, module, calls)
    try:
        with pytest.raises(interrupt.StopRequested):
            stopped.step(*args)
    finally:
        interrupt.clear()
    assert seen[0] == calls
    assert torch.equal(stopped._flat(), before[1]) and stopped.state_dict()["damping"] == before[0]["damping"]
    assert torch.equal(stopped.previous, before[0]["previous"])
    assert torch.equal(stopped.curvature.diag, before[0]["curvature_diag"])
    monkeypatch.undo()
    stopped.step(*args)
    assert torch.equal(stopped._flat(), plain._flat()) and stopped.last == plain.last


def test_a_stop_requested_in_a_dense_step_leaves_the_weights_and_damping(monkeypatch):
    import bench.solvers.levenberg_marquardt as module

    task = make_task(**{"name": SMALL_TASK["name"], **SMALL_TASK["params"]})
    model = build_model("baseconv", task, **SMALL_BASECONV["params"], seed=0).double()
    batch = task.sample(8, generator=stream_generator(0, "train"), dtype=torch.float64)
    dense = LevenbergMarquardt(model, LevenbergMarquardtConfig(train_size=8, damping=1e-9))
    args = (batch.inputs, batch.targets, batch.mask)
    start = torch.nn.utils.parameters_to_vector(dense.params).detach().clone()
    for calls in (1, 4):  # in building J^T J; at the first trial loss, the weights at the trial step
        _stop_after(monkeypatch, module, calls)
        try:
            with pytest.raises(interrupt.StopRequested):
                dense.step(*args)
        finally:
            interrupt.clear()
            monkeypatch.undo()
        assert torch.equal(torch.nn.utils.parameters_to_vector(dense.params), start) and dense.damping == 1e-9


def test_bad_solver_settings_are_named():
    with pytest.raises(RunConfigError, match=r"optimizer.solver: .*'dense' or 'cg'.*got 'qr'"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={"name": "levenberg_marquardt",
                                                                          "solver": "qr"})
    with pytest.raises(RunConfigError, match=r"cg.max_iter, cg.warm_start apply to solver 'cg' only"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={
            "name": "levenberg_marquardt", "cg": {"max_iter": 10, "warm_start": False}})
    with pytest.raises(RunConfigError, match=r"line_search apply to solver 'cg' only"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={"name": "levenberg_marquardt",
                                                                          "line_search": True})
    with pytest.raises(RunConfigError, match=r"optimizer.cg.preconditioner: .*'none', 'diagonal' or 'kronecker'"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={**CG, "cg": {"preconditioner": "lbfgs"}})
    with pytest.raises(RunConfigError, match=r"curvature_size \(64\) cannot exceed train_size \(32\)"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={**CG, "curvature_size": 64})
    big = {"name": "baseconv", "params": {"width": 64, "depth": 2}}
    with pytest.raises(RunConfigError, match="use solver 'cg'"):  # before training: in the preflight
        preflight(make_run_config(task={"name": "multiply"}, model=big, optimizer={"name": "levenberg_marquardt"}))
    assert preflight(make_run_config(task={"name": "multiply"}, model=big, optimizer={**CG, "train_size": 8})) > 10**5


class _NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class _NoJvpModel(nn.Module):
    def __init__(self, task):
        super().__init__()
        self.lin = nn.Linear(task.d_in, task.d_out)

    def forward(self, x):
        return _NoJvp.apply(self.lin(x))


def test_a_model_without_jvp_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(EXTRA_MODELS, "no_jvp", _NoJvpModel)
    cfg = make_run_config(task=SMALL_TASK, model={"name": "no_jvp"}, optimizer=CG, steps=2, eval_size=8)
    with pytest.raises(RunConfigError, match=r"optimizer: solver 'cg' needs forward-mode .* _NoJvpModel.*solver 'dense'"):
        run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))


def test_a_training_set_too_large_for_memory_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix_free, "available_memory_bytes", lambda: 1 << 20)  # a 1 MiB machine
    cfg = make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={**CG, "train_size": 4096}, steps=2,
                          eval_size=8)
    with pytest.raises(RunConfigError, match=r"products on 4096 samples need about .* GiB .* lower "
                                             r"optimizer.curvature_size"):
        run(cfg, tmp_path, progress=False)


@pytest.mark.parametrize("share,gives_back", [(0.01, False), (0.5, True)])
def test_a_curvature_slice_large_for_the_machine_gives_freed_memory_back(tmp_path, monkeypatch, share, gives_back):
    """A slice needing over a quarter of the memory available (but under 0.8) trains, in a heap that hands
    freed memory back to the kernel (bench.harness.allocator.give_back_freed_memory); a small one leaves the heap as is."""
    called = []
    monkeypatch.setattr(matrix_free, "give_back_freed_memory", lambda: called.append(True))
    cfg = make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={**CG, "train_size": 64}, steps=1,
                          eval_size=8)
    trainer = Trainer(cfg, tmp_path, progress=False)
    data = trainer.train_set
    need = trainer.optimizer.curvature_bytes(data.inputs, data.targets, data.mask)
    assert need > 0
    monkeypatch.setattr(matrix_free, "available_memory_bytes", lambda: int(need / share))
    trainer.optimizer.check(data.inputs, data.targets, data.mask)  # no error: the slice fits
    assert bool(called) == gives_back


def test_non_finite_curvature_is_recorded_diverged(tmp_path, monkeypatch):
    real_jvp = matrix_free.jvp

    def poisoned(f, primals, tangents):
        out, tangent = real_jvp(f, primals, tangents)
        return out, tangent * float("nan")

    monkeypatch.setattr(matrix_free, "jvp", poisoned)
    cfg = make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer=CG, steps=3, eval_size=8)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "diverged" and "Gauss-Newton product came out non-finite" in result.message
    assert result.eval_mse is None


def test_a_time_limit_stops_the_run_and_says_where(tmp_path):
    cfg = make_run_config(task=SMALL_TASK, model=EXACT_BASECONV, optimizer=CG, steps=10_000, eval_size=16,
                          eval_every=1000, time_limit_s=0.5)
    assert "time_limit_s" in cfg.canonical_json()
    assert "time_limit_s" not in make_run_config(task=SMALL_TASK, model=EXACT_BASECONV).canonical_json()
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "ok" and 1 <= result.steps_done < 10_000
    assert result.train_time_s >= 0.5
    assert f"reached at step {result.steps_done} of 10000" in result.message
    assert result.curve[-1].step == result.steps_done  # the last point is where it stopped


class _LinearMap(nn.Module):
    """Linear in its weights: the Gauss-Newton model of the loss is exact, so rho must be 1."""

    def __init__(self, task):
        super().__init__()
        self.lin = nn.Linear(task.d_in, task.d_out)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("lr", [1.0, 0.5, 0.25])
def test_rho_is_one_where_the_quadratic_model_is_exact(monkeypatch, tmp_path, lr):
    monkeypatch.setitem(EXTRA_MODELS, "linear_map", _LinearMap)
    cfg = make_run_config(task=SMALL_TASK, model={"name": "linear_map"}, dtype="float64", eval_size=8,
                          optimizer={**CG, "lr": lr, "cg": {"preconditioner": "none", "tol": 1e-12}})
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.step_once()
    assert trainer.optimizer.last["accepted"]
    assert trainer.optimizer.last["rho"] == pytest.approx(1.0, abs=1e-9)


def test_the_line_search_keeps_the_shortening_with_the_lowest_loss():
    """On a quadratic (a linear map, float64): a step 1.8x the Gauss-Newton step reduces the MSE by 0.18 of the
    Newton gain, at 1/2 (0.9x) by 0.495 and at 1/4 (0.45x) by 0.349: the half is kept, with its own rho (1 here)."""
    task = make_task(**{"name": SMALL_TASK["name"], **SMALL_TASK["params"]})
    model = _LinearMap(task).double()
    batch = task.sample(16, generator=stream_generator(0, "train"), dtype=torch.float64)
    opt = MatrixFreeLevenbergMarquardt(model, LevenbergMarquardtConfig(solver="cg", train_size=16, line_search=True,
                                                                       cg={"preconditioner": "none"}))
    args = (batch.inputs, batch.targets, batch.mask)
    newton = opt.direction(*args, damping=1e-14)
    start = opt._flat().clone()
    mse0, g = opt._gradient(*args)
    gauss_newton = opt._operators(*args, start)
    delta = 1.8 * newton
    g_d, d_g_d = (g @ delta).item(), (delta @ gauss_newton(delta)).item()
    losses = {}
    for c in (1.8, 0.9, 0.45):
        opt._set(start + c * newton)
        losses[c] = opt.loss(*args)
    gain = mse0 - losses[0.9]
    assert losses[0.9] < losses[0.45] < losses[1.8] < mse0

    result = {}
    at = Point(*args, start, mse0, g)
    loss, kept, rho = opt._line_search(at, delta, g_d, d_g_d, losses[1.8], 0.1, result)
    assert result["step_fraction"] == 0.5 and loss == losses[0.9] and result["mse_after"] == loss
    assert torch.equal(kept, 0.5 * delta) and torch.allclose(opt._flat(), start + 0.9 * newton, rtol=0, atol=1e-14)
    assert rho == pytest.approx(1.0, abs=1e-9) and gain > 0
    # (mse0 - loss) / newton gain = 1 - (1 - c)^2 on a quadratic
    assert (mse0 - losses[1.8]) / gain == pytest.approx(0.36 / 0.99, rel=1e-9)


def test_the_line_search_leaves_a_step_the_quadratic_model_predicts_alone(monkeypatch, tmp_path):
    monkeypatch.setitem(EXTRA_MODELS, "linear_map", _LinearMap)
    runs = []
    for line_search in (False, True):
        cfg = make_run_config(task=SMALL_TASK, model={"name": "linear_map"}, dtype="float64", eval_size=8, steps=2,
                              optimizer={**CG, "lr": 0.5, "cg": {"preconditioner": "none"}, "line_search": line_search})
        trainer = Trainer(cfg, tmp_path / str(line_search), progress=False)
        trainer.step_once()
        trainer.step_once()
        runs.append((trainer.optimizer.last, [p.detach().clone() for p in trainer.model.parameters()]))
    (plain, w0), (searched, w1) = runs
    assert "step_fraction" not in searched and plain == searched  # rho is 1 > 0.5: no search
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))


def test_cg_damping_cannot_be_zero_for_good():
    with pytest.raises(RunConfigError, match="needs damping > 0 or min_damping > 0"):
        make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer={**CG, "damping": 0, "min_damping": 0})


def test_a_polish_phase_on_a_larger_set_keeps_the_trust_region(tmp_path):
    """The matrix-free LM switching to itself on more problems starts from the damping it had reached."""
    small = {**CG, "train_size": 16}
    cfg = make_run_config(task=SMALL_TASK, model=EXACT_BASECONV, optimizer=small, steps=10, eval_size=64,
                          eval_every=1, polish={**CG, "train_size": 48}, polish_after=4, polish_patience=100)
    trainer = Trainer(cfg, tmp_path, progress=False)
    for _ in range(4):
        trainer.step_once()
        trainer.add_curve_point()
    reached = trainer.optimizer.damping
    assert reached != LevenbergMarquardtConfig().damping  # four steps moved it
    trainer.maybe_switch()
    assert trainer.state.switched_at == 4 and trainer.train_set.inputs.shape[0] == 48
    assert trainer.optimizer.damping == reached


def test_a_loaded_state_starts_at_this_configs_damping_floor():
    """A run going on from another one with a higher min_damping (RunConfig.starts_from) starts at that floor,
    not at the other run's damping; a state above the floor loads as it was."""
    low, _ = _slice_setup("whole", 4)
    low.damping = 1e-15
    floored, _ = _slice_setup("whole", 4, min_damping=1e-8)
    floored.load_state_dict(low.state_dict())
    assert floored.damping == 1e-8
    low.damping = 3e-5
    floored.load_state_dict(low.state_dict())
    assert floored.damping == 3e-5


def _slice_setup(gradient: str, curvature_size: int, **lm):
    """The small BaseConv (float64) on 16 problems, 10 residuals each: a curvature slice of 4 problems
    has 40 residuals for its 254 weights (the smallest singular value of its J / sqrt(40) is 2e-4)."""
    task = make_task(**{"name": SMALL_TASK["name"], **SMALL_TASK["params"]})
    model = build_model("baseconv", task, **SMALL_BASECONV["params"], seed=0).double()
    batch = task.sample(16, generator=stream_generator(0, "train"), dtype=torch.float64)
    cg = {"preconditioner": lm.pop("preconditioner", "none")}
    cfg = LevenbergMarquardtConfig(solver="cg", train_size=16, curvature_size=curvature_size, gradient=gradient, cg=cg,
                                   **lm)
    return MatrixFreeLevenbergMarquardt(model, cfg), (batch.inputs, batch.targets, batch.mask)


def test_the_slice_gradient_on_the_whole_set_is_the_whole_gradient():
    whole, args = _slice_setup("whole", 16)
    on_slice, _ = _slice_setup("slice", 16)
    expected, got = whole.direction(*args, damping=1e-4), on_slice.direction(*args, damping=1e-4)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-10


def test_the_slice_gradient_step_stays_bounded_as_the_damping_vanishes():
    """Fewer slice residuals than weights: with g from the whole set, the part of g outside the slice's
    Gauss-Newton range is divided by mu alone, so the step grows as 1/mu; with g from the slice it tends
    to the least-norm fit of the slice's residuals (once mu is below the smallest curvature, 4e-8 here),
    whose linearized residuals it takes to ~0."""
    norms = {}
    for gradient in ("whole", "slice"):
        opt, args = _slice_setup(gradient, 4)
        norms[gradient] = [opt.direction(*args, damping=mu).norm().item() for mu in (1e-10, 1e-12)]
    whole, on_slice = norms["whole"], norms["slice"]
    assert whole[1] / whole[0] == pytest.approx(100, rel=0.05)  # 100x for 100x less damping
    assert on_slice[1] / on_slice[0] == pytest.approx(1.0, abs=0.01)
    assert on_slice[1] < 1e-6 * whole[1]
    opt, (x, y, mask) = _slice_setup("slice", 4)
    d = opt.direction(x, y, mask, damping=1e-10)
    f = opt._residual_fn(x[:4], y[:4], mask)
    r, jd = torch.func.jvp(f, (opt._flat(),), (d,))
    assert ((r + jd).norm() / r.norm()).item() < 1e-4


def test_the_slice_gradient_fits_where_the_whole_gradient_stalls(tmp_path):
    """32 problems, curvature on 8 of them a step (80 residuals for the 314 weights): with g from the
    whole set the run is at 1.7e-4 after 30 steps; each step the slice's own LM step, 1.2e-13."""
    finals = {}
    for gradient in ("whole", "slice"):
        cfg = make_run_config(task=SMALL_TASK, model=EXACT_BASECONV, steps=30, eval_size=64, eval_every=1,
                              optimizer={**CG, "curvature_size": 8, "gradient": gradient,
                                         "cg": {"max_iter": 200, "warm_start": False}})
        result = run(cfg, tmp_path / gradient, progress=False)
        assert result.status == "ok"
        finals[gradient] = result.curve[-1].eval_mse
    assert finals["slice"] < 1e-11 and finals["whole"] > 1e-5, finals


def test_the_whole_sets_gram_of_directions_is_its_gauss_newton_form():
    """u.G.v = (J u).(J v) / n on all 16 problems, whatever the curvature slice: against the dense Jacobian."""
    opt, (x, y, mask) = _slice_setup("whole", 4)
    _, jac = LevenbergMarquardt(opt.model, LevenbergMarquardtConfig(train_size=16))._jacobian_by_rows(x, y, mask)
    u, v = torch.randn(2, jac.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = torch.stack([jac @ u, jac @ v]) @ torch.stack([jac @ u, jac @ v]).T / jac.shape[0]
    assert torch.allclose(opt.whole_set_gram(x, y, mask, [u, v]), want, rtol=1e-12, atol=0)


def test_model_check_predicts_small_steps_and_shows_where_the_slice_model_is_wrong():
    """Along a short fraction t of the step the whole set's Gauss-Newton model is the loss to O(t^2); on
    the whole set as its own slice the two models are one; on a 4-problem slice (40 residuals for 254
    weights) the slice's model misses the whole set's curvature. The weights are left as they were."""
    whole, args = _slice_setup("whole", 16)
    before = whole._flat().clone()
    check = whole.model_check(*args, fractions=(1e-4, 1.0))
    assert torch.equal(whole._flat(), before)
    assert check["d_G_slice_d"] == pytest.approx(check["d_G_whole_d"], rel=1e-9)
    short, full = check["along"]
    assert short["actual"] == pytest.approx(short["predicted_whole"], rel=1e-2) and short["actual"] > 0
    assert full["predicted_slice"] == pytest.approx(full["predicted_whole"], rel=1e-9)
    on_slice, args = _slice_setup("whole", 4)
    check = on_slice.model_check(*args, fractions=(1e-4,))
    assert abs(check["d_G_slice_d"] / check["d_G_whole_d"] - 1) > 0.1
    assert check["along"][0]["actual"] == pytest.approx(check["along"][0]["predicted_whole"], rel=1e-2)


def test_the_whole_set_plane_step_minimizes_the_whole_sets_model_over_the_plane():
    """With no last step, the solved step scaled to the whole set's model's minimum along it; with one, the
    model's gradient is zero along both directions, and its minimum is below the line's."""
    opt, (x, y, mask) = _slice_setup("whole", 4, whole_set_plane=True)
    _, g = opt._gradient(x, y, mask)
    gauss_newton = opt._operators(x, y, mask, opt._flat())
    delta = opt._solve(g, gauss_newton, 1e-3, None, 100, 1e-3)[0]
    d_g_d = opt.whole_set_gram(x, y, mask, [delta])[0, 0].item()
    start = opt._flat()
    opt._set(start + delta)  # as a refused trial leaves the weights: the plane is still taken at the start
    line, g_s, s_g_s, solved_curvature, coef, names = opt._whole_set_plane(x, y, mask, start, g, delta)
    opt._set(start)
    assert solved_curvature == pytest.approx(d_g_d, rel=1e-12) and coef == [pytest.approx(-(g @ delta).item() / d_g_d)]
    assert names == ["solved"]
    assert torch.allclose(line, (-(g @ delta).item() / d_g_d) * delta, rtol=1e-12, atol=0)
    last = torch.randn(delta.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    opt.previous = 3.0 * delta  # the plane of two parallel steps is their line
    assert len(opt._whole_set_plane(x, y, mask, start, g, delta)[4]) == 1
    opt.previous = last
    plane, g_p, p_g_p, _, coef, names = opt._whole_set_plane(x, y, mask, start, g, delta)
    assert len(coef) == 2 and names == ["solved", "last"]
    gram = opt.whole_set_gram(x, y, mask, [delta, last, plane])
    # d/dc of g.s + s.G.s / 2 at s = plane, along delta and the last step: g.v + v.G.plane = 0
    for i, v in enumerate((delta, last)):
        assert abs((g @ v).item() + gram[i, 2].item()) < 1e-9 * abs((g @ v).item())
    assert g_p + 0.5 * p_g_p < g_s + 0.5 * s_g_s < 0


def test_a_whole_set_plane_step_is_taken_and_its_damping_follows_rho():
    """The plane step is the whole set's: mu follows its rho (the slice's fidelity to the whole set's model is
    recorded, not followed), by the ratio rule."""
    opt, args = _slice_setup("whole", 4, whole_set_plane=True, damping_down=0.5)
    before = opt.loss(*args)
    opt.step(*args)
    last = opt.last
    assert last["accepted"] and opt.loss(*args) < before and len(last["plane"]) == 1  # no last step: a line
    assert last["rho"] > 0.5 and opt.damping == 1e-3 * 0.5 and last["slice_fidelity"] < last["rho"], last
    opt.step(*args)
    assert opt.last["accepted"] and opt.last["plane_directions"] == ["solved", "last"]


def test_whole_set_plane_is_a_cg_option_on_the_whole_sets_gradient():
    with pytest.raises(ValueError, match="apply to solver 'cg' only"):
        LevenbergMarquardtConfig(whole_set_plane=True)
    with pytest.raises(ValueError, match="whole_set_plane takes the step on the whole set's model: it needs gradient"):
        LevenbergMarquardtConfig(solver="cg", whole_set_plane=True, gradient="slice")
    cfg = make_run_config(task=SMALL_TASK, model=SMALL_BASECONV, optimizer=CG)
    on = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"whole_set_plane": True})})
    assert '"whole_set_plane"' not in cfg.canonical_json() and '"whole_set_plane":true' in on.canonical_json()
    assert '"plane_damping":"rho"' in on.canonical_json()  # what the plane's mu follows, as its records name it
