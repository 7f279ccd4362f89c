"""Levenberg-Marquardt: its config (both solvers), the layout its records and hashes are written in, and the
dense solver.

One step solves (J^T J + mu I) d = -J^T r on a fixed training set of `train_size` samples. The dense solver
builds J^T J (params x params, float64; models up to `max_params` weights) and solves it exactly; the
matrix-free one (solver "cg", bench.solvers.matrix_free) never forms a matrix. What each option does, and the
options that were retired with the measurements that retired them: docs/optimizers.md.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal, NamedTuple, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_serializer, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import nn

from bench.harness.interrupt import StopRequested, check_stop

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# the validation context a stored config (a run record, a checkpoint's result) is read with: its retired
# fields are kept, to name the run it was, where a config a user writes is refused for naming them
STORED = {"stored": True}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CGSolve(_Frozen):
    """How the matrix-free solver solves each step's damped system, in float64: preconditioned CG, at most
    `max_iter` Gauss-Newton products, to a residual of `tol` |g|, started from the last step taken
    (`warm_start`). The preconditioner is (G_est + mu I)^-3/4 with G_est the Gauss-Newton diagonal
    ("diagonal") or Kronecker factors for every 2-D weight ("kronecker"), both estimated from random probes
    J^T z; "none" is plain CG. `products`: each J v by torch.func.jvp, or by a tangent map traced once a step
    (torch.func.linearize: the same numbers, faster where it can trace the model)."""

    max_iter: Annotated[int, Field(ge=1)] = 100
    tol: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    warm_start: bool = True
    preconditioner: Literal["none", "diagonal", "kronecker"] = "diagonal"
    products: Literal["jvp", "linearize"] = "jvp"


# the flat names the CG solve's fields have in the record layout (every committed record is written so)
RECORD_NAMES = {"cg_max_iter": "max_iter", "cg_tol": "tol", "warm_start": "warm_start",
                "preconditioner": "preconditioner", "products": "products"}


class Retired(NamedTuple):
    """A field the config no longer has: why it went (for the refusal), the default it was added with (what a
    stored config that does not name it did), and what the solver does now, as that field's value (a value
    or a function of the config): a stored run that did the same has nothing retired to keep."""

    why: str
    default: object
    now: object


RETIRED: dict[str, Retired] = {
    "recycle": Retired("gained ~1% a step", 0, 0),
    "plane_gradient": Retired("no gain a step, for one more product a chunk", False, False),
    "plane_damping": Retired("'slice_fidelity' was 13x behind 'rho' in 40 minutes; whole_set_plane follows rho",
                             "slice_fidelity", lambda c: "rho" if c.whole_set_plane else "slice_fidelity"),
    "damping_rule": Retired("Nielsen's rule was 1.7x behind the ratio rule; the ratio rule is the rule", "nielsen",
                            lambda c: "ratio" if c.solver == "cg" else "nielsen"),
    "backtracks": Retired("every committed run used 3; a refused step is now always tried at 1/2, 1/4, 1/8", 0,
                          lambda c: 3 if c.solver == "cg" else 0),
    "scaling": Retired("'marquardt' was 2.6x behind 'identity'", "identity", "identity"),
    "working_dtype": Retired("'float64' took float32's steps 2.3x slower", "model", "model"),
    "precondition_power": Retired("never varied: the preconditioner's power is 3/4", 0.75, 0.75),
    "diag_probes": Retired("never varied: 4 probes a step", 4, 4),
    "restart_damping": Retired("no committed run set it", False, False),
}


def _retired_errors(data: dict) -> list:
    return [InitErrorDetails(type=PydanticCustomError(
        "retired", "retired ({why}, docs/optimizers.md); remove it", {"why": RETIRED[name].why}),
        loc=(name,), input=data) for name in data if name in RETIRED]


def _nested(data: dict) -> dict:
    """`data` with the record layout's flat names of the CG solve (RECORD_NAMES) moved into `cg`."""
    flat = {RECORD_NAMES[k]: data[k] for k in data if k in RECORD_NAMES}
    if not flat:
        return data
    cg = data.get("cg", {})
    cg = cg.model_dump() if isinstance(cg, CGSolve) else dict(cg)
    clash = [k for k in flat if k in cg and cg[k] != flat[k]]
    if clash:
        raise ValueError(f"cg.{clash[0]} is given twice, as cg.{clash[0]} and in the record layout; give it once")
    return {**{k: v for k, v in data.items() if k not in RECORD_NAMES}, "cg": {**cg, **flat}}


class LevenbergMarquardtConfig(_Frozen):
    """Levenberg-Marquardt on a fixed training set of `train_size` samples: solve (J^T J + mu I) d = -J^T r.

    A step that lowers the loss is taken at `lr` times its length; mu follows rho, the ratio of actual to
    predicted reduction (dense: mu *= damping_down on a taken step; cg: mu *= damping_down when rho > 0.5,
    unchanged down to 0.25, mu *= damping_up below), never below `min_damping`. A refused step raises mu by
    damping_up and is solved again, up to `max_retries` times (cg tries it at 1/2, 1/4, 1/8 of its length
    first). "gauss_newton" is the undamped dense method (mu = 0, least-squares solve, every step taken).

    solver "dense": J^T J built and solved exactly, for models of at most `max_params` weights. solver "cg"
    (bench.solvers.matrix_free): Gauss-Newton products on `curvature_size` samples a step (None: all),
    solved as `cg` says; mu is relative to the MSE's curvature, so it does not depend on the set's size.
    `gradient` "slice" takes the gradient, the acceptance and rho from the curvature slice too (each step the
    slice's own LM problem). `line_search`: a taken step whose rho is below 0.5 is also tried at 1/2 and 1/4
    of its length, the lowest training loss kept. `whole_set_plane`: the step taken minimizes the whole set's
    Gauss-Newton model over the plane of the solved step and the last one.

    The record layout (`record_layout`) is the flat spelling every committed record is written in; a dict
    in it is read too. Retired fields (RETIRED) are refused, and kept where a stored run is read (STORED).
    """

    name: Literal["levenberg_marquardt", "gauss_newton"] = "levenberg_marquardt"
    lr: PositiveFloat = 1.0  # scales the solved step
    damping: NonNegFloat = 1e-3
    damping_up: Annotated[float, Field(gt=1)] = 10.0
    damping_down: Annotated[float, Field(gt=0, lt=1)] = 0.1
    min_damping: NonNegFloat = 1e-15
    max_retries: Annotated[int, Field(ge=0)] = 10
    train_size: Annotated[int, Field(ge=1)] = 256
    max_params: Annotated[int, Field(ge=1)] = 5000
    solver: Literal["dense", "cg"] = "dense"
    curvature_size: Optional[Annotated[int, Field(ge=1)]] = None
    gradient: Literal["whole", "slice"] = "whole"
    line_search: bool = False
    whole_set_plane: bool = False
    cg: CGSolve = Field(default_factory=CGSolve)

    # a stored run's retired fields whose values the solver no longer computes (they name that run)
    _retired: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _read(cls, data, handler, info):
        """The record layout read, retired fields refused (or, in a stored config, kept aside)."""
        if not isinstance(data, dict):
            return handler(data)
        stored = bool(info.context and info.context.get("stored"))
        errors = _retired_errors(data)
        if errors and not stored:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        config = handler(_nested({k: v for k, v in data.items() if k not in RETIRED}))
        if stored:  # what it did for each retired field, kept where the solver now does otherwise
            now = config.built_in()
            # in the record layout (no "cg") a retired field not named had the default it was added with
            did = {k: data.get(k, now[k] if "cg" in data else r.default) for k, r in RETIRED.items()}
            config._retired.update({k: v for k, v in did.items() if v != now[k]})
        return config

    @model_validator(mode="after")
    def _solver_fields(self):
        if self.solver == "dense":
            cg_only = [f for f in ("curvature_size", "gradient", "line_search", "whole_set_plane")
                       if getattr(self, f) != type(self).model_fields[f].default]
            cg_only += [f"cg.{f}" for f in CGSolve.model_fields if getattr(self.cg, f) != getattr(CGSolve(), f)]
            if cg_only:
                raise ValueError(f"{', '.join(cg_only)} apply to solver 'cg' only; set solver: 'cg' or leave them unset")
        elif self.name == "gauss_newton":
            raise ValueError("solver 'cg' is damped (levenberg_marquardt); gauss_newton is dense only")
        if self.solver == "cg" and self.damping == 0 and self.min_damping == 0:
            raise ValueError("solver 'cg' needs damping > 0 or min_damping > 0: with both 0 a refused step is "
                             "solved again unchanged")
        if self.whole_set_plane and self.gradient == "slice":
            raise ValueError("whole_set_plane takes the step on the whole set's model: it needs gradient 'whole', "
                             "not 'slice'")
        if self.curvature_size is not None and self.curvature_size > self.train_size:
            raise ValueError(f"curvature_size ({self.curvature_size}) cannot exceed train_size ({self.train_size})")
        return self

    @model_serializer(mode="wrap")
    def _with_retired(self, handler):
        data = handler(self)
        return {**data, **self._retired} if self._retired and isinstance(data, dict) else data

    @property
    def retired(self) -> dict:
        """A stored run's retired fields and their values where the solver no longer does what they asked
        ({} for every config a user writes): such a run loads and tabulates, and is not trained again."""
        return dict(self._retired)

    def built_in(self) -> dict:
        """What the solver does for each retired field, as that field's value."""
        return {k: r.now(self) if callable(r.now) else r.now for k, r in RETIRED.items()}

    def record_layout(self) -> dict:
        """The flat dict every record is written in (and hashed in: bench.harness.config): the CG solve's
        fields under their flat names, each retired field at what the solver does, or a stored run's value."""
        data = self.model_dump(mode="json", exclude={"cg"})
        data.update({flat: getattr(self.cg, name) for flat, name in RECORD_NAMES.items()})
        return {**data, **self.built_in(), **self._retired}

    def model_copy(self, *, update: Optional[dict] = None, deep: bool = False):
        """A copy, with `update` (in either layout) validated like any config; a stored run's retired fields
        stay with it."""
        if not update:
            return super().model_copy(deep=deep)
        data = {k: v for k, v in self.model_dump().items() if k not in RETIRED}
        update = _nested(update)
        if isinstance(update.get("cg"), dict):
            update = {**update, "cg": {**data["cg"], **update["cg"]}}
        copy = type(self).model_validate({**data, **update})
        copy._retired.update(self._retired)
        return copy


# ---- the dense solver ---------------------------------------------------------------------------------------


class LevenbergMarquardt:
    """Levenberg-Marquardt / Gauss-Newton for small models (see LevenbergMarquardtConfig).

    Residuals r (all scored entries of a fixed training set) and the Jacobian J of r
    with respect to the flat parameter vector are built in chunks of samples; the step d
    solves (J^T J + mu I) d = -J^T r in float64. The loss is the task's MSE = |r|^2 / n.
    """

    def __init__(self, model: nn.Module, cfg: LevenbergMarquardtConfig):
        self.model = model
        self.cfg = cfg
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.damping = 0.0 if cfg.name == "gauss_newton" else cfg.damping
        self.param_groups = [{"lr": cfg.lr}]  # so set_lr works like on torch optimizers
        self.last: dict = {}  # diagnostics of the last step (the matrix-free solver's are richer)

    def state_dict(self) -> dict:
        return {"damping": self.damping, "lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, state: dict) -> None:
        self.damping = float(state["damping"])
        self.param_groups[0]["lr"] = float(state["lr"])

    def _chunks(self, inputs: torch.Tensor, rows_per_sample: int):
        n_params = sum(p.numel() for p in self.params)
        per_chunk = max(1, int(2e7 // max(1, rows_per_sample * n_params)))
        for i in range(0, inputs.shape[0], per_chunk):
            yield slice(i, i + per_chunk)

    @torch.no_grad()
    def loss(self, inputs, targets, mask) -> float:
        check_stop()
        total, count = 0.0, 0
        for sl in self._chunks(inputs, int(mask.sum()) * targets.shape[-1]):
            err = (self.model(inputs[sl]) - targets[sl])[:, mask, :].to(torch.float64)
            total += err.pow(2).sum().item()
            count += err.numel()
        return total / count

    def _normal_equations(self, inputs, targets, mask):
        """J^T J, J^T r (float64) and the loss at the current parameters."""
        from torch.func import functional_call, jacrev, vmap

        buffers = dict(self.model.named_buffers())
        current = {n: p.detach() for n, p in zip(self.names, self.params)}
        n_params = sum(p.numel() for p in self.params)
        jtj = torch.zeros(n_params, n_params, dtype=torch.float64, device=inputs.device)
        jtr = torch.zeros(n_params, dtype=torch.float64, device=inputs.device)
        total, count = 0.0, 0

        def sample_residuals(params, x1, y1):
            out = functional_call(self.model, {**params, **buffers}, (x1.unsqueeze(0),))
            return (out - y1.unsqueeze(0))[:, mask, :].reshape(-1)

        # Samples are independent (no model mixes the batch), so J is built per sample: one
        # backward pass per residual of a single sequence, vectorised over the chunk. That is
        # batch-size times cheaper than jacrev over the residuals of the whole chunk.
        per_sample_jacobian = vmap(jacrev(sample_residuals), in_dims=(None, 0, 0))
        for sl in self._chunks(inputs, int(mask.sum()) * targets.shape[-1]):
            check_stop()
            x, y = inputs[sl], targets[sl]
            try:
                with torch.no_grad():
                    r = (self.model(x) - y)[:, mask, :].reshape(-1)
                jac = per_sample_jacobian(current, x, y)
                J = torch.cat([jac[n].reshape(r.numel(), -1) for n in self.names], dim=1)
            except RuntimeError:  # a custom autograd.Function without functorch support
                r, J = self._jacobian_by_rows(x, y, mask)
            J = J.to(torch.float64)
            r64 = r.to(torch.float64)
            jtj += J.T @ J
            jtr += J.T @ r64
            total += r64.pow(2).sum().item()
            count += r64.numel()
        return jtj, jtr, total / count, count

    def _jacobian_by_rows(self, x, y, mask):
        """Residuals and Jacobian with one backward pass per residual (slow, always works)."""
        with torch.enable_grad():
            r = (self.model(x) - y)[:, mask, :].reshape(-1)
            rows = []
            for i in range(r.numel()):
                grads = torch.autograd.grad(r[i], self.params, retain_graph=True, allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, self.params)]))
        return r.detach(), torch.stack(rows)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """One LM step on the fixed set. Returns (loss before the step, grad norm before it). A stop requested
        in the middle (bench.harness.interrupt) leaves the weights and the damping as they were before it."""
        start = torch.nn.utils.parameters_to_vector(self.params).detach().clone()
        damping = self.damping
        try:
            return self._step(inputs, targets, mask, start)
        except StopRequested:
            self._set(start)
            self.damping = damping
            raise

    def _step(self, inputs, targets, mask, start):
        jtj, jtr, loss0, count = self._normal_equations(inputs, targets, mask)
        grad_norm = (2.0 / count) * jtr.norm().item()  # d/dtheta of |r|^2 / n
        if not math.isfinite(loss0):
            return loss0, grad_norm
        lr = self.param_groups[0]["lr"]
        eye = torch.eye(jtj.shape[0], dtype=jtj.dtype, device=jtj.device)
        check_stop()
        if self.cfg.name == "gauss_newton":
            delta = torch.linalg.lstsq(jtj.cpu(), -jtr.cpu().unsqueeze(1)).solution.squeeze(1).to(jtj.device)
            self._set(start + lr * delta.to(start.dtype))
            return loss0, grad_norm
        for _ in range(self.cfg.max_retries + 1):
            check_stop()
            delta = torch.linalg.solve(jtj + self.damping * eye, -jtr)
            self._set(start + lr * delta.to(start.dtype))
            trial = self.loss(inputs, targets, mask)
            if math.isfinite(trial) and trial < loss0:
                self.damping = max(self.damping * self.cfg.damping_down, self.cfg.min_damping)
                return loss0, grad_norm
            self.damping = max(self.damping, self.cfg.min_damping) * self.cfg.damping_up
        self._set(start)  # no acceptable step: stay put (the damping stays raised)
        return loss0, grad_norm

    @torch.no_grad()
    def _set(self, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.params)
