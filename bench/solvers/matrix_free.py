"""Matrix-free Levenberg-Marquardt: LevenbergMarquardtConfig(solver="cg").

The dense solver (bench.solvers.optimizers.LevenbergMarquardt) builds J^T J, params x params: 80 GB in float64
for the paper's 101k-weight primitive model. This one never forms a matrix. With the training
set's residuals r (n of them), the MSE's half f = |r|^2 / (2n) has gradient g = J^T r / n and
Gauss-Newton curvature G = J^T J / n; one step solves

    (G + mu D) d = -g                       by preconditioned conjugate gradients, in float64,

where each product G v = J^T (J v) / n_c is a forward-mode jvp and a reverse-mode vjp
(torch.func) on n_c = `curvature_size` samples of the training set (a different slice each step:
Martens' curvature minibatch, so a CG iteration costs a fraction of a pass over the set) while g
and the loss use the whole set. The step is taken if it lowers the loss on the whole set, and mu
follows the ratio rho = actual / predicted reduction (Nielsen's rule, a trust region in all but
name). With gradient "slice" the slice stands for the whole set in all of that: each step is the LM
step of the slice's own problem, a block-Kaczmarz step for a model that can fit every sample.
Memory: the parameters, a few float64 vectors of their size, and the activations of the curvature
slice.

Each choice that decides how fast this converges is a config field (see the config's docstring),
measured against the others in the README ("Matrix-free Levenberg-Marquardt: what each choice
gave").
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Optional

import torch
from torch import nn
from torch.func import functional_call, jvp, linearize, vjp

from bench.harness.allocator import give_back_freed_memory
from bench.harness.config import LevenbergMarquardtConfig, RunConfigError


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


Operator = Callable[[torch.Tensor], torch.Tensor]


def quiet_linearize(f, primal: torch.Tensor):
    """torch.func.linearize without the warning torch's constant folding prints about its own graph."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        return linearize(f, primal)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pcg(matvec: Operator, b: torch.Tensor, x0: Optional[torch.Tensor], precond: Optional[Operator], max_iter: int,
        tol: float, scale_start: bool = False, pairs: Optional[list] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Preconditioned conjugate gradients for A x = b, A symmetric positive definite.

    precond: v -> M^-1 v, symmetric positive definite (None: no preconditioner). Stops when
    |b - A x| <= tol |b| or after max_iter products of A (a warm start x0 costs one). With
    `scale_start`, CG starts from the multiple of x0 that minimizes its quadratic (b.x0 / x0.A x0, zero if
    that is negative), at no extra product: a start of the right direction but another length. With a list
    `pairs`, each search direction p and its product A p are appended to it (for limited_memory_preconditioner).
    Returns (x, b - A x, products used)."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if x0 is not None and scale_start:
        a_x0 = matvec(x)
        curvature = x @ a_x0
        alpha = max((b @ x / curvature).item(), 0.0) if curvature > 0 else 0.0
        x, r = alpha * x, b - alpha * a_x0
    else:
        r = b - matvec(x) if x0 is not None else b.clone()
    used = 1 if x0 is not None else 0
    b_norm = b.norm()
    z = precond(r) if precond is not None else r
    p = z.clone()
    rz = r @ z
    for _ in range(max_iter - used):  # the warm start's residual counts as one product
        if r.norm() <= tol * b_norm:
            break
        ap = matvec(p)
        used += 1
        curvature = p @ ap
        if not curvature > 0:  # A is positive definite in exact arithmetic; stop where rounding says otherwise
            break
        if pairs is not None:
            pairs.append((p, ap))
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * ap
        z = precond(r) if precond is not None else r
        rz_next = r @ z
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x, r, used


def limited_memory_preconditioner(first: Optional[Operator], s: torch.Tensor, a_s: torch.Tensor) -> Optional[Operator]:
    """The limited-memory preconditioner (LMP) of the directions s (k x n, rows) and their products a_s = A s
    (Gratton, Sartenaer & Tshimanga 2011), on top of the first-level preconditioner `first` (None: identity):

        H = (I - S L^-1 Y^T) M (I - Y L^-1 S^T) + S L^-1 S^T,    S = s^T, Y = a_s^T, L = S^T Y

    symmetric positive definite, and H A s = s: on the span of s, H is A's inverse. For CG's own search
    directions L is diagonal in exact arithmetic; it is formed whole (and symmetrized) because conjugacy fades
    in rounding, and directions whose L-eigenvalue is rounding (below 1e-10 of the largest, after scaling each
    to unit curvature) are dropped. None when no direction has positive curvature."""
    lam = s @ a_s.T
    lam = 0.5 * (lam + lam.T)
    curv = lam.diagonal()
    good = curv > 0
    if not bool(good.any()):
        return None
    s, a_s, lam = s[good], a_s[good], lam[good][:, good]
    d = curv[good].sqrt()
    e, q = torch.linalg.eigh(lam / torch.outer(d, d))
    keep = e > 1e-10 * e.max()
    # rows of a basis c s with (c s) . A (c s)^T = I: then L = I and H has the plain form below
    c = (q[:, keep] / e[keep].sqrt()).T / d
    s, y = c @ s, c @ a_s

    def apply(v: torch.Tensor) -> torch.Tensor:
        inner = v - y.T @ (s @ v)
        inner = first(inner) if first is not None else inner
        return inner - s.T @ (y @ inner) + s.T @ (s @ v)

    return apply


class CurvatureEstimate:
    """Running estimates of the Gauss-Newton matrix G's blocks, from probes M = J^T z (z Rademacher
    over the residuals, so E[M M^T] = J^T J): its diagonal for every weight (Hutchinson), and for each
    2-D weight W (m x n) the Kronecker factors L = E[M_W M_W^T], R = E[M_W^T M_W] (Shampoo's
    statistics): if the block is A (x) B, the map V -> L V R / tr(L) is exactly V -> A V B. Averaged
    over steps with weight `decay` on the past."""

    def __init__(self, shapes, kronecker: bool, decay: float = 0.5):
        self.shapes = list(shapes)
        self.numels = [int(torch.Size(s).numel()) for s in self.shapes]
        self.kronecker = kronecker
        self.decay = decay
        self.diag: Optional[torch.Tensor] = None
        self.factors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def is_matrix(self, i: int) -> bool:
        return self.kronecker and len(self.shapes[i]) == 2 and min(self.shapes[i]) > 1

    def update(self, probes: list[torch.Tensor], scale: float) -> None:
        diag = sum(p.pow(2) for p in probes) / (len(probes) * scale)
        self.diag = diag if self.diag is None else self.decay * self.diag + (1 - self.decay) * diag
        for i, shape in enumerate(self.shapes):
            if not self.is_matrix(i):
                continue
            ms = [piece.view(shape) for piece in (p.split(self.numels)[i] for p in probes)]
            left = sum(m @ m.T for m in ms) / (len(ms) * scale)
            right = sum(m.T @ m for m in ms) / (len(ms) * scale)
            if i in self.factors:
                old_l, old_r = self.factors[i]
                left, right = self.decay * old_l + (1 - self.decay) * left, self.decay * old_r + (1 - self.decay) * right
            self.factors[i] = (left, right)

    def floored_diag(self) -> torch.Tensor:
        # a floor keeps directions the probes missed (and unused weights) from a zero scale
        return self.diag.clamp_min(1e-12 * float(self.diag.mean()) + 1e-300)

    def inverse(self, mu: float, scale: torch.Tensor, power: float) -> Operator:
        """v -> (G_est + mu D)^-power v, block by block (D = diag(scale); a Kronecker block uses
        D's mean over the block)."""
        diag = self.floored_diag()
        inv_diag = (diag + mu * scale).pow(-power)
        blocks = {}
        for i, (left, right) in self.factors.items():
            t = torch.trace(left).clamp_min(1e-300)
            el, ql = torch.linalg.eigh(left)
            er, qr = torch.linalg.eigh(right)
            d = mu * float(scale.split(self.numels)[i].mean())
            eig = (el.clamp_min(0)[:, None] * er.clamp_min(0)[None, :] / t + d).clamp_min(1e-300)
            blocks[i] = (ql, qr, eig.pow(-power))

        def apply(v: torch.Tensor) -> torch.Tensor:
            out = v * inv_diag
            if blocks:
                pieces = list(out.split(self.numels))
                for i, (ql, qr, w) in blocks.items():
                    m = v.split(self.numels)[i].view(self.shapes[i])
                    pieces[i] = (ql @ ((ql.T @ m @ qr) * w) @ qr.T).reshape(-1)
                out = torch.cat(pieces)
            return out

        return apply


class MatrixFreeLevenbergMarquardt:
    """See the module docstring. `step(inputs, targets, mask)` is one LM step on the fixed set;
    `last` holds its diagnostics (CG products and residual, damping, rho)."""

    def __init__(self, model: nn.Module, cfg: LevenbergMarquardtConfig):
        if cfg.solver != "cg":
            raise ValueError(f"MatrixFreeLevenbergMarquardt needs solver 'cg', got {cfg.solver!r}")
        self.model = model  # the model trained: its weights are the ones evaluated
        self.cfg = cfg
        # the model every residual, product and loss is computed on: the model itself, or (working_dtype
        # "float64") a float64 twin whose weights are the master copy. It rules float32 rounding in or out:
        # in float32 the gradient of a fit near 1e-12 is a sum of cancelling rounded terms, and a step
        # below a weight's last bit is lost; in the master copy it adds up. (On the paper's MULTIPLY
        # model near 1e-11 the twin takes float32's steps, 2.3x slower: README, "Near the level".)
        self.work = model if cfg.working_dtype == "model" else copy.deepcopy(model).to(torch.float64)
        self.names = [n for n, p in self.work.named_parameters() if p.requires_grad]
        self.params = [p for p in self.work.parameters() if p.requires_grad]
        self.model_params = [p for p in model.parameters() if p.requires_grad]
        self.dtype = self.params[0].dtype
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.damping = cfg.damping
        self.nu = 2.0
        self.param_groups = [{"lr": cfg.lr}]  # so set_lr works like on torch optimizers
        self.previous: Optional[torch.Tensor] = None  # the last step taken (float64): CG's start
        self.curvature = CurvatureEstimate(self.shapes, kronecker=cfg.preconditioner == "kronecker")
        self.steps_done = 0
        self.last: dict = {}
        # recycle: the latest CG search directions and their Gauss-Newton products G p (rows), newest last
        self.recycled: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    # ---- state --------------------------------------------------------------------
    # what a kept final state leaves out (Trainer.save_checkpoint): the recycled directions are 2 x recycle vectors
    # of the parameters' size, too large to commit; a run that goes on from a final state finds them again in its
    # first solve, while a checkpoint keeps them, so a killed run resumes bit-identically
    transient_state = ("recycled",)

    def state_dict(self) -> dict:
        return {"damping": self.damping, "nu": self.nu, "lr": self.param_groups[0]["lr"],
                "previous": self.previous, "curvature_diag": self.curvature.diag,
                "curvature_factors": dict(self.curvature.factors), "steps_done": self.steps_done, "last": dict(self.last),
                "master": None if self.work is self.model else self._flat(), "recycled": self.recycled}

    def load_state_dict(self, state: dict) -> None:
        # at least this config's floor: a run going on from another one (RunConfig.starts_from) may raise it
        self.damping = max(float(state["damping"]), self.cfg.min_damping)
        self.nu = float(state["nu"])
        self.param_groups[0]["lr"] = float(state["lr"])
        # checkpoints load on the CPU: move the float64 state to where the parameters are
        device = self.params[0].device

        def here(t):
            return None if t is None else t.to(device=device, dtype=torch.float64)

        self.previous = here(state["previous"])
        self.curvature.diag = here(state["curvature_diag"])
        self.curvature.factors = {i: (here(left), here(right))
                                  for i, (left, right) in dict(state["curvature_factors"]).items()}
        self.steps_done = int(state["steps_done"])
        self.last = dict(state["last"])
        recycled = state.get("recycled")
        self.recycled = None if recycled is None else (here(recycled[0]), here(recycled[1]))
        if self.work is not self.model:  # the master copy, or (a checkpoint without one) the model's weights
            master = state.get("master")
            self._set(here(master) if master is not None else
                      torch.cat([p.detach().reshape(-1) for p in self.model_params]).to(self.dtype))

    # ---- functional view of the model ---------------------------------------------
    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def _set(self, flat: torch.Tensor) -> None:
        for p, piece in zip(self.params, flat.split(self.numels)):
            p.copy_(piece.view_as(p))
        if self.work is not self.model:  # the model holds the master copy rounded to its dtype
            for p, piece in zip(self.model_params, flat.split(self.numels)):
                p.copy_(piece.view_as(p))

    def _here(self, *tensors: torch.Tensor):
        """Inputs and targets in the working dtype (floating ones only)."""
        return [t.to(self.dtype) if t.is_floating_point() else t for t in tensors]

    def _residual_fn(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        x, y = self._here(x, y)
        buffers = dict(self.work.named_buffers())
        frozen = {n: p.detach() for n, p in self.work.named_parameters() if not p.requires_grad}

        def residuals(flat: torch.Tensor) -> torch.Tensor:
            params = {n: piece.view(shape) for n, piece, shape in zip(self.names, flat.split(self.numels), self.shapes)}
            out = functional_call(self.work, {**params, **frozen, **buffers}, (x,))
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
        total, count = 0.0, 0
        for sl in self._chunks(inputs.shape[0], self._chunk_size(inputs.shape[0])):
            x, y = self._here(inputs[sl], targets[sl])
            err = (self.work(x) - y)[:, mask, :].to(torch.float64)
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
                r = (self.work(x) - y)[:, mask, :]
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
        x, y = inputs[:1], targets[:1]
        f = self._residual_fn(x, y, mask)
        flat = self._flat()
        try:
            jvp(f, (flat,), (torch.zeros_like(flat),))
        except (NotImplementedError, RuntimeError) as err:
            first = first_line(err)
            raise RunConfigError(
                f"{what}: solver 'cg' needs forward-mode autodiff (torch.func.jvp) through the model "
                f"{type(self.model).__name__}, which fails: {first}. Give its custom autograd.Function a jvp, choose "
                "a conv_backend that has one (direct, fft), or use solver 'dense' (small models)") from None
        if self.cfg.products == "linearize":
            try:
                quiet_linearize(f, flat)
            except Exception as err:  # tracing can fail in many ways; every one has the same way out
                first = first_line(err)
                raise RunConfigError(f"{what}: products 'linearize' cannot trace the model {type(self.model).__name__}: "
                                     f"{first}. Use products: 'jvp'") from None
        n_c = self._chunk_size(inputs.shape[0])
        need = self.curvature_bytes(inputs, targets, mask)
        have = available_memory_bytes()
        if inputs.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(inputs.device)
            have = free
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

    # ---- one step -----------------------------------------------------------------
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

    def _operators(self, inputs, targets, mask, start):
        """(g on the whole set, the Gauss-Newton product on this step's curvature slice, its diag)."""
        cfg = self.cfg
        dtype = self.dtype
        sl = self._curvature_slice(inputs.shape[0])
        f = self._residual_fn(inputs[sl], targets[sl], mask)
        r_c, pullback = vjp(f, start)
        n_c = r_c.numel()
        forward = None
        if cfg.products == "linearize":
            # linearize traces the tangent map once a step: each J v then costs ~1.5 forward passes
            # instead of jvp's ~3.4 (primal and tangent recomputed), for a one-off trace of ~35
            _, forward = quiet_linearize(f, start)

        def gauss_newton(v: torch.Tensor) -> torch.Tensor:
            jv = forward(v.to(dtype)) if forward is not None else jvp(f, (start,), (v.to(dtype),))[1]
            out = pullback(jv)[0].to(torch.float64) / n_c
            if not torch.isfinite(out).all():
                raise NonFiniteCurvature("a Gauss-Newton product came out non-finite")
            return out

        diag = None
        if cfg.scaling == "marquardt" or cfg.preconditioner != "none":
            gen = torch.Generator(device=r_c.device).manual_seed(self.steps_done)
            probes = []
            for _ in range(cfg.diag_probes):
                z = torch.randint(0, 2, r_c.shape, generator=gen, device=r_c.device).to(dtype) * 2 - 1
                probes.append(pullback(z)[0].to(torch.float64))
            self.curvature.update(probes, n_c)
            diag = self.curvature.floored_diag()
        return gauss_newton, diag

    def _preconditioner(self, g, diag, mu) -> tuple[torch.Tensor, Optional[Operator]]:
        """The damping's scale D and CG's preconditioner v -> M^-1 v at mu (None: no preconditioner)."""
        cfg = self.cfg
        scale = diag if cfg.scaling == "marquardt" else torch.ones_like(g)
        precond = None if cfg.preconditioner == "none" else self.curvature.inverse(mu, scale, cfg.precondition_power)
        return scale, precond

    def _solve(self, g, gauss_newton, diag, mu, x0, max_iter, tol, scale_start=False):
        scale, precond = self._preconditioner(g, diag, mu)
        pairs = None
        if self.cfg.recycle:
            pairs = []
            if self.recycled is not None:
                s, g_s = self.recycled  # the products at this mu: G s + mu D s
                precond = limited_memory_preconditioner(precond, s, g_s + mu * scale * s) or precond

        def damped(v: torch.Tensor) -> torch.Tensor:
            return gauss_newton(v) + mu * scale * v

        delta, residual, used = pcg(damped, -g, x0, precond, max_iter, tol, scale_start, pairs)
        if pairs:
            self._recycle(pairs, mu, scale)
        # for the predicted reduction of f = MSE/2 along t * delta, -(t g.d + t^2 d.G.d / 2):
        # d.G.d = d.(A d) - mu d.D.d, with A d = -g - residual
        d_g_d = (delta @ (-g - residual) - mu * (delta * scale) @ delta).item()
        return delta, residual, used, ((g @ delta).item(), d_g_d)

    def _recycle(self, pairs: list, mu: float, scale: torch.Tensor) -> None:
        """Keep the newest `recycle` search directions of the solves so far and their Gauss-Newton products (the
        damping taken back out, so that the next solve can put its own in)."""
        s = torch.stack([p for p, _ in pairs])
        g_s = torch.stack([ap for _, ap in pairs]) - mu * scale * s
        if self.recycled is not None:
            s, g_s = torch.cat([self.recycled[0], s]), torch.cat([self.recycled[1], g_s])
        self.recycled = (s[-self.cfg.recycle:], g_s[-self.cfg.recycle:])

    def direction(self, inputs, targets, mask, damping: float, max_iter: int = 10_000, tol: float = 1e-13):
        """The LM step at the current weights for damping `damping`, CG run to convergence (from zero).
        For tests: with scaling "identity" it solves (J^T J / n + damping I) d = -J^T r / n."""
        inputs, targets = self._step_set(inputs, targets)
        _, g = self._gradient(inputs, targets, mask)
        gauss_newton, diag = self._operators(inputs, targets, mask, self._flat())
        return self._solve(g, gauss_newton, diag, damping, None, max_iter, tol)[0]

    def whole_set_gram(self, inputs, targets, mask, directions: list[torch.Tensor],
                       at: Optional[torch.Tensor] = None) -> torch.Tensor:
        """u.G.v for every pair of `directions`, G the Gauss-Newton curvature of the whole set (J^T J / n) at the
        weights `at` (default: the current ones): (J u).(J v) / n, one forward-mode product a direction and
        chunk of the set."""
        start = self._flat() if at is None else at
        gram = torch.zeros(len(directions), len(directions), dtype=torch.float64, device=start.device)
        count = 0
        for sl in self._chunks(inputs.shape[0], self._chunk_size(inputs.shape[0])):
            f = self._residual_fn(inputs[sl], targets[sl], mask)
            jv = torch.stack([jvp(f, (start,), (v.to(self.dtype),))[1].detach().to(torch.float64).reshape(-1)
                              for v in directions])
            gram += jv @ jv.T
            count += jv.shape[1]
        return gram / count

    def _whole_set_plane(self, inputs, targets, mask, start, g, delta, extra=()):
        """The minimizer of the whole set's Gauss-Newton model of f at `start`, g.s + s.G.s / 2, over the plane of
        `delta` and the last step taken (its line, if there is none or the two are nearly parallel), and of the
        `extra` directions too ("gradient"): (that step, g.step, step.G.step, delta.G.delta, its coefficients, the
        names of the directions they weigh, "solved" first). The model is not damped: it is meant where it holds
        (bench.studies.step_model measures that), and mu acts through delta's direction."""
        directions = [delta] + ([self.previous] if self.previous is not None else []) + list(extra)
        names = ["solved"] + (["last"] if self.previous is not None else []) + ["gradient"] * len(extra)
        gram = self.whole_set_gram(inputs, targets, mask, directions, at=start)
        if not torch.isfinite(gram).all():
            raise NonFiniteCurvature("the whole set's curvature along the step came out non-finite")
        if not gram[0, 0] > 0:  # no curvature along the solved step to scale it by: keep it
            return delta, (g @ delta).item(), 0.0, 0.0, [1.0], ["solved"]
        along = torch.stack([g @ v for v in directions])
        # each direction in turn is kept unless it is nearly in the span of those kept (their J images' Gram,
        # normalized, conditioned past its rounding): delta's line at least
        keep, limit = [0], 1e-3 / torch.finfo(self.dtype).eps
        for i in range(1, len(directions)):
            trial = keep + [i]
            sub = gram[trial][:, trial]
            norms = sub.diagonal().sqrt()
            if norms[-1] > 0 and torch.linalg.cond(sub / torch.outer(norms, norms)) < limit:
                keep = trial
        gram, along, directions = gram[keep][:, keep], along[keep], [directions[i] for i in keep]
        # solved normalized: at a damping floor of 1e-15 the preconditioned gradient can be orders of magnitude
        # longer than delta, and the raw Gram's scales would then decide the solve's rounding
        norms = gram.diagonal().sqrt()
        coef = torch.linalg.solve(gram / torch.outer(norms, norms), -along / norms) / norms
        step = sum(c * v for c, v in zip(coef, directions))
        return (step, (along @ coef).item(), (coef @ gram @ coef).item(), gram[0, 0].item(), coef.tolist(),
                [names[i] for i in keep])

    def model_check(self, inputs, targets, mask, fractions=(0.125, 0.25, 0.5, 1.0)) -> dict:
        """The step this solver would take next (solved as step() solves it: its damping, CG's start and cap)
        and how well its quadratic model predicts the loss along it. For each fraction t of the step, the
        reduction of f = MSE / 2 predicted by the model step() sets rho by (the curvature slice's), by the
        whole set's Gauss-Newton model, and the actual one. The slice's wrong and the whole set's right: the
        slice limits the step; both wrong alike: the residuals' nonlinearity does (what neither a longer
        solve nor a larger slice mends). The weights are left as they were."""
        cfg, lr = self.cfg, self.param_groups[0]["lr"]
        averages = (self.curvature.diag, dict(self.curvature.factors))  # _operators adds this step's probes
        inputs, targets = self._step_set(inputs, targets)
        mse0, g = self._gradient(inputs, targets, mask)
        start = self._flat()
        gauss_newton, diag = self._operators(inputs, targets, mask, start)
        x0 = self.previous if (cfg.warm_start and self.previous is not None) else None
        delta, residual, used, (g_d, d_g_d) = self._solve(g, gauss_newton, diag, self.damping, x0, cfg.cg_max_iter,
                                                         cfg.cg_tol)
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

    def _line_search(self, inputs, targets, mask, start, delta, lr, g_d, d_g_d, mse0, trial, rho, result):
        """A taken step lr * delta with loss `trial`, tried at 1/2 and 1/4 of its length too: the lowest loss of
        the three is kept. Returns (its loss, its delta, its rho); the weights are left at it."""
        best = (trial, 1.0, rho)
        for fraction in (0.5, 0.25):
            c = fraction * lr
            self._set(start + (c * delta).to(start.dtype))
            shorter = self.loss(inputs, targets, mask)
            predicted = -(c * g_d + 0.5 * c * c * d_g_d)
            if math.isfinite(shorter) and shorter < best[0]:
                best = (shorter, fraction, 0.5 * (mse0 - shorter) / predicted if predicted > 0 else 0.0)
        loss, fraction, rho = best
        self._set(start + (fraction * lr * delta).to(start.dtype))
        result.update(step_fraction=fraction, mse_after=loss, rho=rho)
        return loss, fraction * delta, rho

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """One LM step on the fixed set. Returns (MSE before the step, |d MSE / d theta| before it)."""
        cfg = self.cfg
        whole_mse = self.loss(inputs, targets, mask) if cfg.gradient == "slice" else None  # reported, not used
        inputs, targets = self._step_set(inputs, targets)
        mse0, g = self._gradient(inputs, targets, mask)
        grad_norm = 2.0 * g.norm().item()  # d/dtheta of the MSE = 2 g
        if not (math.isfinite(mse0) and math.isfinite(grad_norm)):
            raise NonFiniteCurvature(f"non-finite loss or gradient ({mse0:.3g}, {grad_norm:.3g})")
        start = self._flat()
        gauss_newton, diag = self._operators(inputs, targets, mask, start)
        lr = self.param_groups[0]["lr"]
        result = dict(cg_products=0, accepted=False)
        for _ in range(cfg.max_retries + 1):
            mu = self.damping
            x0 = self.previous if (cfg.warm_start and self.previous is not None) else None
            # a plane step is another length than the slice's solution: CG starts from its best multiple
            delta, residual, used, (g_d, d_g_d) = self._solve(g, gauss_newton, diag, mu, x0, cfg.cg_max_iter,
                                                             cfg.cg_tol, scale_start=cfg.whole_set_plane)
            result["cg_products"] += used
            fidelity = None
            if cfg.whole_set_plane:
                # the step is the whole set's; mu answers how well the slice's model foresaw the whole set's at the
                # solved step (a loss on the whole set would say the same where its model holds)
                solved_g_d, predicted_slice = g_d, -(lr * g_d + 0.5 * lr * lr * d_g_d)
                # the solve's preconditioned gradient: the plane's step is then at least as good in the model as
                # one more step of CG on the whole set's curvature from the last step (nonlinear CG's choice)
                extra = []
                if cfg.plane_gradient:
                    precond = self._preconditioner(g, diag, mu)[1]
                    extra = [g if precond is None else precond(g)]
                delta, g_d, d_g_d, d_gw_d, coef, kept = self._whole_set_plane(inputs, targets, mask, start, g, delta,
                                                                               extra)
                fidelity = -(lr * solved_g_d + 0.5 * lr * lr * d_gw_d) / predicted_slice if predicted_slice > 0 else 0.0
                result.update(slice_fidelity=fidelity, plane=coef, plane_directions=kept)
            self._set(start + (lr * delta).to(start.dtype))
            trial = self.loss(inputs, targets, mask)
            predicted = -(lr * g_d + 0.5 * lr * lr * d_g_d)
            rho = 0.5 * (mse0 - trial) / predicted if predicted > 0 else 0.0  # no predicted gain: "raise mu"
            result.update(cg_rel_residual=(residual.norm() / g.norm()).item(), damping=mu, rho=rho,
                          mse_before=mse0, mse_after=trial)
            if not (math.isfinite(trial) and trial < mse0):
                # before paying for another solve, try shorter steps along this one (a loss
                # evaluation each): the direction is usually good, only its length is not
                for fraction in (0.5, 0.25, 0.125)[:cfg.backtracks]:
                    self._set(start + (fraction * lr * delta).to(start.dtype))
                    shorter = self.loss(inputs, targets, mask)
                    if math.isfinite(shorter) and shorter < mse0:
                        trial, delta, rho = shorter, fraction * delta, 0.0  # a shortened step: rho says "raise mu"
                        result.update(backtracked=fraction, mse_after=trial, rho=rho)
                        break
            elif cfg.line_search and rho < 0.5:
                trial, delta, rho = self._line_search(inputs, targets, mask, start, delta, lr, g_d, d_g_d, mse0, trial,
                                                      rho, result)
            if math.isfinite(trial) and trial < mse0:
                # with the plane's fidelity: the lower of the two, so that a shortened step still says "raise mu"
                judged = rho if fidelity is None or cfg.plane_damping == "rho" else min(fidelity, rho)
                if cfg.damping_rule == "nielsen":
                    factor = max(1 / 3, 1 - (2 * min(max(judged, 0.0), 1.0) - 1) ** 3)
                else:  # "ratio": the textbook trust-region rule, with the config's factors
                    factor = cfg.damping_down if judged > 0.5 else (1.0 if judged > 0.25 else cfg.damping_up)
                self.damping = max(mu * factor, cfg.min_damping)
                self.nu = 2.0
                self.previous = delta
                result["accepted"] = True
                break
            if cfg.damping_rule == "nielsen":
                self.damping = max(mu, cfg.min_damping) * self.nu
                self.nu *= 2
            else:
                self.damping = max(mu, cfg.min_damping) * cfg.damping_up
            self.previous = None  # the refused direction is a poor start for the re-solve
        if not result["accepted"]:
            self._set(start)  # no acceptable step: stay put (the damping stays raised)
        self.steps_done += 1
        self.last = result
        return (mse0 if whole_mse is None else whole_mse), grad_norm
