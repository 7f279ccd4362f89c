"""Matrix-free Levenberg-Marquardt: LevenbergMarquardtConfig(solver="cg").

The dense solver (bench.solvers.levenberg_marquardt.LevenbergMarquardt) builds J^T J, params x params: 80 GB
in float64 for the paper's 101k-weight primitive model. This one never forms a matrix. With the training
set's residuals r (n of them), the MSE's half f = |r|^2 / (2n) has gradient g = J^T r / n and
Gauss-Newton curvature G = J^T J / n; one step solves

    (G + mu I) d = -g                       by preconditioned conjugate gradients, in float64,

where each product G v = J^T (J v) / n_c is a forward-mode jvp and a reverse-mode vjp
(torch.func) on n_c = `curvature_size` samples of the training set (a different slice each step:
Martens' curvature minibatch, so a CG iteration costs a fraction of a pass over the set) while g
and the loss use the whole set. The step is taken if it lowers the loss on the whole set, and mu
follows the ratio rho = actual / predicted reduction (a trust region in all but name). With gradient
"slice" the slice stands for the whole set in all of that: each step is the LM step of the slice's own
problem, a block-Kaczmarz step for a model that can fit every sample. Memory: the parameters, a few
float64 vectors of their size, and the activations of the curvature slice.

What each option does and what it gave: docs/optimizers.md.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional

import torch
from torch import nn
from torch.func import functional_call, jvp, linearize, vjp

from bench.harness.allocator import give_back_freed_memory
from bench.harness.config import RunConfigError
from bench.harness.interrupt import StopRequested, check_stop
from bench.solvers.cg import CurvatureEstimate, Operator, pcg
from bench.solvers.levenberg_marquardt import LevenbergMarquardtConfig

# a refused step is tried at these fractions of its length before a new solve (a loss evaluation each)
BACKTRACKS = (0.5, 0.25, 0.125)
# a taken step whose rho is below 0.5 is also tried at these fractions with `line_search`
LINE_SEARCH = (0.5, 0.25)
DIAG_PROBES = 4  # random probes J^T z a step for the preconditioner's estimate of G


class NonFiniteCurvature(FloatingPointError):
    """A Gauss-Newton product or the gradient came out NaN/Inf (the trainer records the run diverged)."""


def available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def quiet_linearize(f, primal: torch.Tensor):
    """torch.func.linearize without the warning torch's constant folding prints about its own graph."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        return linearize(f, primal)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Point(NamedTuple):
    """Where a step starts: the set it is judged on, the weights, the MSE there and g = J^T r / n."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    start: torch.Tensor
    mse: float
    g: torch.Tensor


class MatrixFreeLevenbergMarquardt:
    """See the module docstring. `step(inputs, targets, mask)` is one LM step on the fixed set;
    `last` holds its diagnostics (CG products and residual, damping, rho)."""

    def __init__(self, model: nn.Module, cfg: LevenbergMarquardtConfig):
        if cfg.solver != "cg":
            raise ValueError(f"MatrixFreeLevenbergMarquardt needs solver 'cg', got {cfg.solver!r}")
        self.model = model
        self.cfg = cfg
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dtype = self.params[0].dtype
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.damping = cfg.damping
        self.param_groups = [{"lr": cfg.lr}]  # so set_lr works like on torch optimizers
        self.previous: Optional[torch.Tensor] = None  # the last step taken (float64): CG's start
        self.curvature = CurvatureEstimate(self.shapes, kronecker=cfg.cg.preconditioner == "kronecker")
        self.steps_done = 0
        self.last: dict = {}

    # ---- state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"damping": self.damping, "lr": self.param_groups[0]["lr"], "previous": self.previous,
                "curvature_diag": self.curvature.diag, "curvature_factors": dict(self.curvature.factors),
                "steps_done": self.steps_done, "last": dict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        """A state of this solver (a state written with options since retired carries more keys: they are
        not read)."""
        # at least this config's floor: a run going on from another one (RunConfig.starts_from) may raise it
        self.damping = max(float(state["damping"]), self.cfg.min_damping)
        self.param_groups[0]["lr"] = float(state["lr"])
        device = self.params[0].device  # checkpoints load on the CPU: the float64 state goes where the weights are

        def here(t):
            return None if t is None else t.to(device=device, dtype=torch.float64)

        self.previous = here(state["previous"])
        self.curvature.diag = here(state["curvature_diag"])
        self.curvature.factors = {i: (here(left), here(right))
                                  for i, (left, right) in dict(state["curvature_factors"]).items()}
        self.steps_done = int(state["steps_done"])
        self.last = dict(state["last"])

    def _snapshot(self) -> tuple:
        return (self._flat(), self.damping, self.previous, self.curvature.diag, dict(self.curvature.factors),
                self.steps_done, self.last)

    def _restore(self, snapshot: tuple) -> None:
        flat, self.damping, self.previous, self.curvature.diag, factors, self.steps_done, self.last = snapshot
        self.curvature.factors = factors
        self._set(flat)

    # ---- functional view of the model ---------------------------------------------
    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def _set(self, flat: torch.Tensor) -> None:
        for p, piece in zip(self.params, flat.split(self.numels)):
            p.copy_(piece.view_as(p))

    def _here(self, *tensors: torch.Tensor):
        """Inputs and targets in the model's dtype (floating ones only)."""
        return [t.to(self.dtype) if t.is_floating_point() else t for t in tensors]

    def _residual_fn(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        x, y = self._here(x, y)
        buffers = dict(self.model.named_buffers())
        frozen = {n: p.detach() for n, p in self.model.named_parameters() if not p.requires_grad}

        def residuals(flat: torch.Tensor) -> torch.Tensor:
            params = {n: piece.view(shape) for n, piece, shape in zip(self.names, flat.split(self.numels), self.shapes)}
            out = functional_call(self.model, {**params, **frozen, **buffers}, (x,))
            return (out - y)[:, mask, :]

        return residuals

    def _chunks(self, n: int, per_chunk: int):
        for i in range(0, n, per_chunk):
            yield slice(i, i + per_chunk)

    def _chunk_size(self, n: int) -> int:
        return max(1, min(n, self.cfg.curvature_size or n))

    @torch.no_grad()
    def loss(self, inputs, targets, mask) -> float:
        """The MSE on the set (float64 sum)."""
        check_stop()
        total, count = 0.0, 0
        for sl in self._chunks(inputs.shape[0], self._chunk_size(inputs.shape[0])):
            x, y = self._here(inputs[sl], targets[sl])
            err = (self.model(x) - y)[:, mask, :].to(torch.float64)
            total += err.pow(2).sum().item()
            count += err.numel()
        return total / count

    def _gradient(self, inputs, targets, mask) -> tuple[float, torch.Tensor]:
        """(MSE, g = J^T r / n in float64) on the whole set, chunk by chunk."""
        grad = torch.zeros(sum(self.numels), dtype=torch.float64, device=inputs.device)
        total, count = 0.0, 0
        for sl in self._chunks(inputs.shape[0], self._chunk_size(inputs.shape[0])):
            x, y = self._here(inputs[sl], targets[sl])
            with torch.enable_grad():
                r = (self.model(x) - y)[:, mask, :]
                half_sq = 0.5 * r.pow(2).sum()
                grads = torch.autograd.grad(half_sq, self.params, allow_unused=True)
            grad += torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, self.params)]).to(torch.float64)
            total += r.detach().to(torch.float64).pow(2).sum().item()
            count += r.numel()
        return total / count, grad / count

    # ---- preflight ----------------------------------------------------------------
    def check(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, what: str = "optimizer") -> None:
        """Before training: the model must support torch.func.jvp, and the activations of one
        curvature slice must fit in memory. Raises RunConfigError naming the field and the way out."""
        f = self._residual_fn(inputs[:1], targets[:1], mask)
        flat = self._flat()
        try:
            jvp(f, (flat,), (torch.zeros_like(flat),))
        except (NotImplementedError, RuntimeError) as err:
            raise RunConfigError(
                f"{what}: solver 'cg' needs forward-mode autodiff (torch.func.jvp) through the model "
                f"{type(self.model).__name__}, which fails: {first_line(err)}. Give its custom autograd.Function a "
                "jvp, choose a conv_backend that has one (direct, fft), or use solver 'dense' (small models)") from None
        if self.cfg.cg.products == "linearize":
            try:
                quiet_linearize(f, flat)
            except Exception as err:  # tracing can fail in many ways; every one has the same way out
                raise RunConfigError(f"{what}: cg.products 'linearize' cannot trace the model "
                                     f"{type(self.model).__name__}: {first_line(err)}. Use products: 'jvp'") from None
        n_c = self._chunk_size(inputs.shape[0])
        need = self.curvature_bytes(inputs, targets, mask)
        have = available_memory_bytes()
        if inputs.device.type == "cuda":
            have, _ = torch.cuda.mem_get_info(inputs.device)
        if have is not None and need > 0.25 * have and inputs.device.type == "cpu":
            give_back_freed_memory()  # a heap that keeps every freed block outgrows a live set this size
        if have is not None and need > 0.8 * have:
            raise RunConfigError(
                f"{what}: Gauss-Newton products on {n_c} samples need about {need / 2**30:.1f} GiB of activations, "
                f"this machine has {have / 2**30:.1f} GiB available; lower {what}.curvature_size "
                f"(or train_size), e.g. to {max(1, int(0.5 * have * n_c / need))}")

    def curvature_bytes(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> int:
        """About what a step's Gauss-Newton products keep in memory: vjp's saved activations of the curvature
        slice, plus jvp's primal and tangent (measured on one sample, times the slice's size)."""
        f = self._residual_fn(inputs[:1], targets[:1], mask)
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            f(self._flat().clone().requires_grad_(True))  # what autograd keeps for the backward of one sample
        return 3 * saved[0] * self._chunk_size(inputs.shape[0])

    # ---- the solve ----------------------------------------------------------------
    def _curvature_slice(self, n: int) -> slice:
        """This step's slice of a set of n samples (all of a set no larger than curvature_size)."""
        n_c = self._chunk_size(n)
        slices = max(1, n // n_c)
        start = (self.steps_done % slices) * n_c
        return slice(start, start + n_c)

    def _step_set(self, inputs: torch.Tensor, targets: torch.Tensor):
        """The samples this step's gradient, acceptance and rho use: the whole set, or with gradient "slice"
        the curvature slice (whose own LM problem the step then solves)."""
        if self.cfg.gradient == "whole":
            return inputs, targets
        sl = self._curvature_slice(inputs.shape[0])
        return inputs[sl], targets[sl]

    def _operators(self, inputs, targets, mask, start) -> Operator:
        """The Gauss-Newton product on this step's curvature slice; the preconditioner's estimate of G takes
        this step's probes."""
        sl = self._curvature_slice(inputs.shape[0])
        f = self._residual_fn(inputs[sl], targets[sl], mask)
        r_c, pullback = vjp(f, start)
        n_c = r_c.numel()
        # linearize traces the tangent map once a step: each J v then reuses it, where jvp recomputes the primal
        forward = quiet_linearize(f, start)[1] if self.cfg.cg.products == "linearize" else None

        def gauss_newton(v: torch.Tensor) -> torch.Tensor:
            check_stop()
            jv = forward(v.to(self.dtype)) if forward is not None else jvp(f, (start,), (v.to(self.dtype),))[1]
            out = pullback(jv)[0].to(torch.float64) / n_c
            if not torch.isfinite(out).all():
                raise NonFiniteCurvature("a Gauss-Newton product came out non-finite")
            return out

        if self.cfg.cg.preconditioner != "none":
            gen = torch.Generator(device=r_c.device).manual_seed(self.steps_done)
            probes = []
            for _ in range(DIAG_PROBES):
                z = torch.randint(0, 2, r_c.shape, generator=gen, device=r_c.device).to(self.dtype) * 2 - 1
                probes.append(pullback(z)[0].to(torch.float64))
            self.curvature.update(probes, n_c)
        return gauss_newton

    def _preconditioner(self, mu: float) -> Optional[Operator]:
        """CG's preconditioner v -> M^-1 v at mu (None: plain CG)."""
        return None if self.cfg.cg.preconditioner == "none" else self.curvature.inverse(mu)

    def _solve(self, g, gauss_newton, mu, x0, max_iter=None, tol=None, scale_start=False):
        """(G + mu I) d = -g by preconditioned CG: (d, CG's residual, products used, (g.d, d.G.d))."""
        cg = self.cfg.cg

        def damped(v: torch.Tensor) -> torch.Tensor:
            return gauss_newton(v) + mu * v

        delta, residual, used = pcg(damped, -g, x0, self._preconditioner(mu), max_iter or cg.max_iter,
                                    tol or cg.tol, scale_start)
        # for the predicted reduction of f = MSE/2 along t * delta, -(t g.d + t^2 d.G.d / 2):
        # d.G.d = d.(A d) - mu d.d, with A d = -g - residual
        d_g_d = (delta @ (-g - residual) - mu * delta @ delta).item()
        return delta, residual, used, ((g @ delta).item(), d_g_d)

    def direction(self, inputs, targets, mask, damping: float, max_iter: int = 10_000, tol: float = 1e-13):
        """The LM step at the current weights for damping `damping`, CG run to convergence (from zero):
        (J^T J / n + damping I) d = -J^T r / n. For tests."""
        inputs, targets = self._step_set(inputs, targets)
        _, g = self._gradient(inputs, targets, mask)
        gauss_newton = self._operators(inputs, targets, mask, self._flat())
        return self._solve(g, gauss_newton, damping, None, max_iter, tol)[0]

    # ---- the whole set's model ------------------------------------------------------
    def whole_set_gram(self, inputs, targets, mask, directions: list[torch.Tensor],
                       at: Optional[torch.Tensor] = None) -> torch.Tensor:
        """u.G.v for every pair of `directions`, G the Gauss-Newton curvature of the whole set (J^T J / n) at the
        weights `at` (default: the current ones): (J u).(J v) / n, one forward-mode product a direction and
        chunk of the set."""
        start = self._flat() if at is None else at
        gram = torch.zeros(len(directions), len(directions), dtype=torch.float64, device=start.device)
        count = 0
        for sl in self._chunks(inputs.shape[0], self._chunk_size(inputs.shape[0])):
            check_stop()
            f = self._residual_fn(inputs[sl], targets[sl], mask)
            jv = torch.stack([jvp(f, (start,), (v.to(self.dtype),))[1].detach().to(torch.float64).reshape(-1)
                              for v in directions])
            gram += jv @ jv.T
            count += jv.shape[1]
        return gram / count

    def _whole_set_plane(self, inputs, targets, mask, start, g, delta):
        """The minimizer of the whole set's Gauss-Newton model of f at `start`, g.s + s.G.s / 2, over the plane of
        `delta` and the last step taken (its line, if there is none or the two are nearly parallel): (that step,
        g.step, step.G.step, delta.G.delta, its coefficients, the names of the directions they weigh, "solved"
        first). The model is not damped: it is meant where it holds (bench.studies.step_model measures that),
        and mu acts through delta's direction."""
        directions = [delta] + ([self.previous] if self.previous is not None else [])
        names = ["solved", "last"][:len(directions)]
        gram = self.whole_set_gram(inputs, targets, mask, directions, at=start)
        if not torch.isfinite(gram).all():
            raise NonFiniteCurvature("the whole set's curvature along the step came out non-finite")
        if not gram[0, 0] > 0:  # no curvature along the solved step to scale it by: keep it
            return delta, (g @ delta).item(), 0.0, 0.0, [1.0], ["solved"]
        along = torch.stack([g @ v for v in directions])
        # the last step is kept unless it is nearly on delta's line (their J images' Gram, normalized,
        # conditioned past its rounding)
        norms = gram.diagonal().sqrt()
        if len(directions) == 2 and not (norms[1] > 0 and torch.linalg.cond(gram / torch.outer(norms, norms))
                                         < 1e-3 / torch.finfo(self.dtype).eps):
            gram, along, directions, names, norms = gram[:1, :1], along[:1], directions[:1], names[:1], norms[:1]
        # solved normalized: the raw Gram's scales would otherwise decide the solve's rounding
        coef = torch.linalg.solve(gram / torch.outer(norms, norms), -along / norms) / norms
        step = sum(c * v for c, v in zip(coef, directions))
        return step, (along @ coef).item(), (coef @ gram @ coef).item(), gram[0, 0].item(), coef.tolist(), names

    def model_check(self, inputs, targets, mask, fractions=(0.125, 0.25, 0.5, 1.0)) -> dict:
        """The step this solver would take next (solved as step() solves it: its damping, CG's start and cap)
        and how well its quadratic model predicts the loss along it. For each fraction t of the step, the
        reduction of f = MSE / 2 predicted by the model step() sets rho by (the curvature slice's), by the
        whole set's Gauss-Newton model, and the actual one. The slice's wrong and the whole set's right: the
        slice limits the step; both wrong alike: the residuals' nonlinearity does (what neither a longer
        solve nor a larger slice mends). The weights are left as they were."""
        lr = self.param_groups[0]["lr"]
        averages = (self.curvature.diag, dict(self.curvature.factors))  # _operators adds this step's probes
        inputs, targets = self._step_set(inputs, targets)
        mse0, g = self._gradient(inputs, targets, mask)
        start = self._flat()
        gauss_newton = self._operators(inputs, targets, mask, start)
        x0 = self.previous if self.cfg.cg.warm_start else None
        delta, residual, used, (g_d, d_g_d) = self._solve(g, gauss_newton, self.damping, x0)
        d_gw_d = self.whole_set_gram(inputs, targets, mask, [delta], at=start)[0, 0].item()
        along = []
        try:
            for t in fractions:
                c = t * lr
                self._set(start + (c * delta).to(start.dtype))
                along.append({"fraction": t, "predicted_slice": -(c * g_d + 0.5 * c * c * d_g_d),
                              "predicted_whole": -(c * g_d + 0.5 * c * c * d_gw_d),
                              "actual": 0.5 * (mse0 - self.loss(inputs, targets, mask))})
        finally:
            self._set(start)
            self.curvature.diag, self.curvature.factors = averages
        return {"mse": mse0, "damping": self.damping, "cg_products": used,
                "cg_rel_residual": (residual.norm() / g.norm()).item(), "step_norm": delta.norm().item(),
                "g_d": g_d, "d_G_slice_d": d_g_d, "d_G_whole_d": d_gw_d, "along": along}

    # ---- one step -----------------------------------------------------------------
    def step(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """One LM step on the fixed set. Returns (MSE before the step, |d MSE / d theta| before it). A stop
        requested in the middle (bench.harness.interrupt) leaves the solver and the weights as they were."""
        before = self._snapshot()
        try:
            return self._step(inputs, targets, mask)
        except StopRequested:
            self._restore(before)
            raise

    def _step(self, inputs, targets, mask) -> tuple[float, float]:
        cfg = self.cfg
        whole_mse = self.loss(inputs, targets, mask) if cfg.gradient == "slice" else None  # reported, not used
        inputs, targets = self._step_set(inputs, targets)
        mse0, g = self._gradient(inputs, targets, mask)
        grad_norm = 2.0 * g.norm().item()  # d/dtheta of the MSE = 2 g
        if not (math.isfinite(mse0) and math.isfinite(grad_norm)):
            raise NonFiniteCurvature(f"non-finite loss or gradient ({mse0:.3g}, {grad_norm:.3g})")
        at = Point(inputs, targets, mask, self._flat(), mse0, g)
        gauss_newton = self._operators(inputs, targets, mask, at.start)
        result = dict(cg_products=0, accepted=False)
        for _ in range(cfg.max_retries + 1):
            mu = self.damping
            trial, delta, rho = self._trial(at, gauss_newton, mu, result)
            if math.isfinite(trial) and trial < mse0:  # taken: the ratio rule sets the next mu
                factor = cfg.damping_down if rho > 0.5 else (1.0 if rho > 0.25 else cfg.damping_up)
                self.damping = max(mu * factor, cfg.min_damping)
                self.previous = delta
                result["accepted"] = True
                break
            self.damping = max(mu, cfg.min_damping) * cfg.damping_up
            self.previous = None  # the refused direction is a poor start for the re-solve
        if not result["accepted"]:
            self._set(at.start)  # no acceptable step: stay put (the damping stays raised)
        self.steps_done += 1
        self.last = result
        return (mse0 if whole_mse is None else whole_mse), grad_norm

    def _trial(self, at: Point, gauss_newton: Operator, mu: float, result: dict):
        """The step solved at damping mu (with whole_set_plane, the whole set's plane step from it), tried:
        (its loss, the step as kept, rho). A step that does not lower the loss is tried shorter; one that does
        but with rho < 0.5 is searched along with `line_search`. The weights are left at the step tried last."""
        cfg, lr = self.cfg, self.param_groups[0]["lr"]
        x0 = self.previous if cfg.cg.warm_start else None
        # a plane step is another length than the slice's solution: CG starts from its best multiple
        delta, residual, used, (g_d, d_g_d) = self._solve(at.g, gauss_newton, mu, x0,
                                                         scale_start=cfg.whole_set_plane)
        result["cg_products"] += used
        if cfg.whole_set_plane:
            delta, g_d, d_g_d = self._plane_step(at, delta, g_d, d_g_d, result)
        self._set(at.start + (lr * delta).to(at.start.dtype))
        trial = self.loss(at.inputs, at.targets, at.mask)
        predicted = -(lr * g_d + 0.5 * lr * lr * d_g_d)
        rho = 0.5 * (at.mse - trial) / predicted if predicted > 0 else 0.0  # no predicted gain: "raise mu"
        result.update(cg_rel_residual=(residual.norm() / at.g.norm()).item(), damping=mu, rho=rho,
                      mse_before=at.mse, mse_after=trial)
        if not (math.isfinite(trial) and trial < at.mse):
            return self._backtrack(at, delta, trial, rho, result)
        if cfg.line_search and rho < 0.5:
            return self._line_search(at, delta, g_d, d_g_d, trial, rho, result)
        return trial, delta, rho

    def _plane_step(self, at: Point, delta, g_d: float, d_g_d: float, result: dict):
        """The whole set's plane step from the solved step `delta` (whose g.d and slice d.G.d are given): (the
        step, its g.d, its whole-set d.G.d). The record keeps how well the slice's model foresaw the whole
        set's at the solved step (slice_fidelity) and the plane's coefficients."""
        lr = self.param_groups[0]["lr"]
        predicted_slice = -(lr * g_d + 0.5 * lr * lr * d_g_d)
        step, step_g_d, step_d_g_d, d_gw_d, coef, kept = self._whole_set_plane(at.inputs, at.targets, at.mask,
                                                                                at.start, at.g, delta)
        fidelity = -(lr * g_d + 0.5 * lr * lr * d_gw_d) / predicted_slice if predicted_slice > 0 else 0.0
        result.update(slice_fidelity=fidelity, plane=coef, plane_directions=kept)
        return step, step_g_d, step_d_g_d

    def _backtrack(self, at: Point, delta, trial: float, rho: float, result: dict):
        """A step that raised the loss, tried at BACKTRACKS of its length before paying for another solve: the
        direction is usually good, only its length is not. A shortened step says "raise mu" (rho 0)."""
        lr = self.param_groups[0]["lr"]
        for fraction in BACKTRACKS:
            self._set(at.start + (fraction * lr * delta).to(at.start.dtype))
            shorter = self.loss(at.inputs, at.targets, at.mask)
            if math.isfinite(shorter) and shorter < at.mse:
                result.update(backtracked=fraction, mse_after=shorter, rho=0.0)
                return shorter, fraction * delta, 0.0
        return trial, delta, rho

    def _line_search(self, at: Point, delta, g_d: float, d_g_d: float, trial: float, rho: float, result: dict):
        """A taken step lr * delta with loss `trial`, tried at LINE_SEARCH fractions of its length too: the
        lowest loss of them is kept. Returns (its loss, its delta, its rho); the weights are left at it."""
        lr = self.param_groups[0]["lr"]
        best = (trial, 1.0, rho)
        for fraction in LINE_SEARCH:
            c = fraction * lr
            self._set(at.start + (c * delta).to(at.start.dtype))
            shorter = self.loss(at.inputs, at.targets, at.mask)
            predicted = -(c * g_d + 0.5 * c * c * d_g_d)
            if math.isfinite(shorter) and shorter < best[0]:
                best = (shorter, fraction, 0.5 * (at.mse - shorter) / predicted if predicted > 0 else 0.0)
        loss, fraction, rho = best
        self._set(at.start + (fraction * lr * delta).to(at.start.dtype))
        result.update(step_fraction=fraction, mse_after=loss, rho=rho)
        return loss, fraction * delta, rho
