"""RunConfig: one training run, typed, validated before anything trains, and hashed.

    cfg = RunConfig(task={"name": "multiply"},
                    model={"name": "baseconv", "params": {"depth": 2}},
                    optimizer={"name": "adam", "lr": 1e-3, "eps": 1e-16},
                    schedule={"name": "step", "gamma": 0.9, "every": 10_000},
                    steps=1_000_000, batch_size=1024, dtype="float32")
    cfg.hash        # 16 hex digits naming results/runs/<hash>.json

The hash is the sha256 of the canonical JSON of every field that can change the
numbers a run produces (`OPERATIONAL_FIELDS`, e.g. checkpoint_every, are left out:
a run checkpointed every 100 steps and one never checkpointed give identical results).
Task and model parameters are hashed as given (not filled with defaults), so a run
keeps its name when a module adds a new parameter with a default; a config field added
since the first schema is hashed only away from the default it came with (HASH_SCHEME,
below). `config_hash(dict)` names a config as a record stores it.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Callable, Literal, Optional, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from architectures.plugin import is_import_path, mixer_class
from bench.solvers.levenberg_marquardt import STORED, LevenbergMarquardtConfig
from primitives import make_task

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Fields that change how a run is executed but never what it computes: not hashed.
OPERATIONAL_FIELDS = ("checkpoint_every", "extends", "keep_final_state")

# Extra model builders (name -> fn(task, **params) -> nn.Module) consulted before
# architectures.build_model: experiments and tests plug stand-in models in here.
EXTRA_MODELS: dict[str, Callable[..., torch.nn.Module]] = {}


class RunConfigError(ValueError):
    """A run configuration is invalid; the message names the field and what is allowed."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_json_params(kind: str, params: dict) -> dict:
    try:
        json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{kind} params must be plain JSON values (numbers, strings, bools, lists): {err}")
    return params


# ---- task and model ---------------------------------------------------------------


class TaskSpec(_Frozen):
    """A task by registry name (primitives.TASKS) or import path ("package.module:Class"), with its parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _json(cls, v):
        return _check_json_params("task", v)

    @model_validator(mode="after")
    def _buildable(self):
        self.build()  # TaskConfigError (a ValueError) names the bad parameter
        return self

    def build(self):
        return make_task(self.name, **self.params)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def __hash__(self):
        return hash(self.canonical())


def known_model_names() -> list[str]:
    names = set(EXTRA_MODELS)
    try:
        import architectures

        names |= set(getattr(architectures, "MODELS", {}))
    except ImportError:
        pass
    return sorted(names)


def build_model(name: str, task, *, seed: int, **params) -> torch.nn.Module:
    """Build model `name` for `task` with weights fixed by `seed`.

    The model's own `seed` parameter (architectures' init generator) defaults to the
    run seed; the global RNG is forked and seeded too, so a builder that draws from it
    is deterministic as well.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in EXTRA_MODELS:
            return EXTRA_MODELS[name](task, **params)
        try:
            import architectures
        except ImportError as err:
            raise RunConfigError(f"model {name!r}: the architectures package cannot be imported ({err})")
        models = getattr(architectures, "MODELS", {})
        if name not in models and not is_import_path(name):
            raise RunConfigError(f"unknown model {name!r}; known models: {', '.join(known_model_names())}")
        params = dict(params)
        params.setdefault("seed", seed)
        return architectures.build_model(name, task, **params)


def resolve_model(name: str, params: dict, task, seed: int):
    """The model's full config (architectures' ModelConfig, defaults filled in) from its
    parameters: pydantic validation only, nothing is built. None for an EXTRA_MODELS
    builder, which has no config class (its parameters are checked when preflight builds it)."""
    if name in EXTRA_MODELS:
        return None
    import architectures

    return architectures.make_config(name, task, **{"seed": seed, **params})


class ModelSpec(_Frozen):
    """A model by registry name (architectures.MODELS or EXTRA_MODELS), or an out-of-tree mixer
    by import path ("package.module:Class", plugged into the shared backbone), with its parameters.

    Validated in RunConfig (the model's config needs the task's shapes). The name and the
    parameters are hashed as given: a plug-in's record names its class path.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _json(cls, v):
        return _check_json_params("model", v)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def __hash__(self):
        return hash(self.canonical())


# ---- optimizers -------------------------------------------------------------------

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# LevenbergMarquardtConfig (both solvers) lives with its solvers: bench.solvers.levenberg_marquardt


class AdamConfig(_Frozen):
    """Adam / AdamW. The paper uses eps=1e-16 (the torch default 1e-8 caps precision)."""

    name: Literal["adam", "adamw"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: NonNegFloat = 1e-16
    weight_decay: NonNegFloat = 0.0


class SGDConfig(_Frozen):
    name: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 1e-2
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: NonNegFloat = 0.0


class LBFGSConfig(_Frozen):
    """Full-batch L-BFGS on a fixed training set of `train_size` samples (drawn once from
    the "train" stream in the run dtype). One run step = one `optimizer.step(closure)`
    with up to `max_iter` inner iterations. Tolerances default to 0: stop only on steps."""

    name: Literal["lbfgs"] = "lbfgs"
    lr: PositiveFloat = 1.0
    max_iter: Annotated[int, Field(ge=1)] = 20
    history_size: Annotated[int, Field(ge=1)] = 100
    line_search: Optional[Literal["strong_wolfe"]] = "strong_wolfe"
    tolerance_grad: NonNegFloat = 0.0
    tolerance_change: NonNegFloat = 0.0
    train_size: Annotated[int, Field(ge=1)] = 4096


OptimizerConfig = Annotated[
    Union[AdamConfig, SGDConfig, LBFGSConfig, LevenbergMarquardtConfig], Field(discriminator="name")
]
FULL_BATCH_OPTIMIZERS = ("lbfgs", "levenberg_marquardt", "gauss_newton")


# ---- schedules --------------------------------------------------------------------


class ConstantSchedule(_Frozen):
    name: Literal["constant"] = "constant"


class StepSchedule(_Frozen):
    """The paper's step decay: lr(t) = max(lr0 * gamma ** (t // every), min_lr)."""

    name: Literal["step"] = "step"
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.9
    every: Annotated[int, Field(ge=1)] = 10_000
    min_lr: NonNegFloat = 1e-10


class AdaptiveSchedule(_Frozen):
    """The paper's adaptive LR, driven by how aligned minibatch gradients are.

    Signal: every `measure_every` steps, `probe_batches` fresh minibatches (from a probe
    stream of the seed, so the training batches are the same as without it) are
    back-propagated at the current weights; c = mean cosine similarity of consecutive
    probe gradients; s <- smoothing * s + (1 - smoothing) * c (s starts at 1).
    Rule: every `every` steps (t > 0), if s >= threshold or t <= warmup the LR is
    multiplied by gamma (< 1, floored at min_lr); otherwise (the signal dropped: the
    minibatch gradients disagree) it is divided by gamma (capped at max_lr if set).
    """

    name: Literal["adaptive"] = "adaptive"
    gamma: Annotated[float, Field(gt=0, lt=1)] = 0.9
    every: Annotated[int, Field(ge=1)] = 10_000
    measure_every: Annotated[int, Field(ge=1)] = 1000
    probe_batches: Annotated[int, Field(ge=2)] = 64
    probe_batch_size: Optional[Annotated[int, Field(ge=1)]] = None  # None -> batch_size
    smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.9
    threshold: Annotated[float, Field(ge=-1, le=1)] = 0.9
    warmup: Annotated[int, Field(ge=0)] = 1000
    min_lr: NonNegFloat = 1e-10
    max_lr: Optional[PositiveFloat] = None


ScheduleConfig = Annotated[
    Union[ConstantSchedule, StepSchedule, AdaptiveSchedule], Field(discriminator="name")
]


DEVICE_PATTERN = r"cpu|mps|cuda(?::\d+)?"


def check_device(device: str, dtype: str) -> str:
    """Raise ValueError unless this machine can run `dtype` on `device` (a preflight check:
    a config naming a device this machine lacks is still a valid config)."""
    if device == "cpu":
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m:
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, which this machine does not have; use 'cpu'")
        index = int(m.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    if device == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' is not available on this machine; use 'cpu'")
        if dtype == "float64":
            raise ValueError("device 'mps' cannot run float64; use dtype 'float32' or device 'cpu'")
        return device
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")


# ---- the run ----------------------------------------------------------------------


class RunConfig(_Frozen):
    """Everything that defines one training run (see module docstring)."""

    task: TaskSpec
    model: ModelSpec
    optimizer: OptimizerConfig = Field(default_factory=AdamConfig)
    schedule: ScheduleConfig = Field(default_factory=ConstantSchedule)

    # gradient processing, in this order: skip -> clip -> EMA filter (first-order optimizers)
    ema_lambda: NonNegFloat = 0.0  # g <- g + ema_lambda * EMA(g); 0 = off
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.98  # EMA(g) <- d * EMA(g) + (1 - d) * g
    grad_clip: Optional[PositiveFloat] = None  # clip the total L2 norm to this
    skip_grad_norm: Optional[PositiveFloat] = None  # skip steps whose raw grad norm exceeds this
    max_consecutive_skips: Annotated[int, Field(ge=1)] = 100  # then the run is diverged

    steps: Annotated[int, Field(ge=1)] = 1000
    batch_size: Annotated[int, Field(ge=1)] = 1024
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    seed: Annotated[int, Field(ge=0)] = 0
    eval_size: Annotated[int, Field(ge=1)] = 1024
    eval_every: Optional[Annotated[int, Field(ge=1)]] = None  # None -> max(1, steps // 100)
    checkpoint_every: Annotated[int, Field(ge=0)] = 1000  # 0 -> only at the end / on interrupt
    # a second optimizer, switched to (at its own constant LR) once the eval MSE has gained less
    # than 5% over the last `polish_patience` evals; e.g. L-BFGS, then Levenberg-Marquardt
    polish: Optional[OptimizerConfig] = None
    polish_patience: Annotated[int, Field(ge=1)] = 5
    # switch to polish at this step at the latest, stalled or not (None: only on a stall). A first-order
    # warm start whose step-decay schedule keeps it from ever stalling within its budget needs it
    polish_after: Optional[Annotated[int, Field(ge=1)]] = None
    # evaluate every this many steps once polish has taken over (None: eval_every): a second-order
    # step can cost a thousand first-order ones
    polish_eval_every: Optional[Annotated[int, Field(ge=1)]] = None
    # a budget in seconds of training (optimizer steps, summed over resumes): the run stops at the
    # first step past it, status "ok", and its message says where it stopped. None: steps decide
    time_limit_s: Optional[PositiveFloat] = None
    # the hash of a run this one continues: this config with a shorter time_limit_s. A run's steps do
    # not depend on its time limit (only where it stops does), so starting from that run's checkpoint
    # is this run from the start, minus the steps already paid for. Without the checkpoint on disk the
    # run trains from the start. Not hashed: it says where to start, not what is computed
    extends: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] = None
    # the hash of a finished run whose final state (weights, training set, optimizer state, steps and
    # seconds so far) this run goes on from with another polish optimizer or dtype, further in steps or seconds:
    # the rest of its config is that run's; its steps and time_limit_s count that run's too. Hashed:
    # where it starts is what it computes
    starts_from: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] = None
    # checkpoints are not committed (results/checkpoints is ignored); a run whose weights the tables
    # use afterwards (a learned step applied iteratively), or that another run goes on from, keeps its
    # final state in results/final_states/<hash>.pt, which is committed. Not hashed
    keep_final_state: bool = False
    # torch.compile the model for the first-order training step ("default"; "reduce-overhead" adds
    # CUDA graphs). Eval and full-batch optimizers run the plain model. None: off (not hashed)
    compile: Optional[Literal["default", "reduce-overhead"]] = None

    # the model's full config, defaults filled in (not hashed: see the module docstring)
    _resolved_model: Any = PrivateAttr(default=None)

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not isinstance(v, str) or not re.fullmatch(DEVICE_PATTERN, v):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_run(self):
        """Checks on the data alone: nothing is built and no device is touched, so a record made
        on a GPU loads anywhere. What needs the model or the device is `bench.harness.train.preflight`."""
        if is_import_path(self.model.name):
            try:  # the import path alone: its module, attribute and class
                mixer_class(self.model.name)
            except ValueError as err:
                raise ValueError(f"model.name: {err}") from None
        elif self.model.name not in known_model_names():
            raise ValueError(
                f"model.name: unknown model {self.model.name!r}; known models: {', '.join(known_model_names())}, "
                "or an out-of-tree mixer as package.module:Class"
            )
        try:
            self._resolved_model = resolve_model(self.model.name, self.model.params, self.task.build(), self.seed)
        except ValueError as err:
            raise ValueError(f"model.params: {err}") from None
        name = self.optimizer.name
        if name in FULL_BATCH_OPTIMIZERS:
            if self.schedule.name == "adaptive":
                raise ValueError(f"schedule: 'adaptive' needs minibatch gradients; optimizer {name!r} is full-batch "
                                 "(use 'constant' or 'step')")
            if self.ema_lambda or self.grad_clip is not None or self.skip_grad_norm is not None:
                raise ValueError(f"ema_lambda, grad_clip and skip_grad_norm apply to first-order optimizers only, "
                                 f"not {name!r}; leave them unset")
        if self.extends is not None and self.time_limit_s is None:
            raise ValueError("extends: only a time-capped run can extend another (the same config with a shorter "
                             "time_limit_s); set time_limit_s or leave extends unset")
        if self.starts_from is not None and self.polish is None:
            raise ValueError("starts_from: a run goes on from another one with its own polish optimizer; set polish "
                             "or leave starts_from unset")
        for key in ("polish_after", "polish_eval_every"):
            if getattr(self, key) is not None and self.polish is None:
                raise ValueError(f"{key}: there is no polish optimizer to switch to; set polish or leave "
                                 f"{key} unset")
        return self

    @property
    def resolved_model(self):
        """architectures' ModelConfig of this run's model with every default filled in (None for
        an EXTRA_MODELS builder)."""
        return self._resolved_model

    # ---- derived values -----------------------------------------------------------
    @property
    def resolved_eval_every(self) -> int:
        return self.eval_every if self.eval_every is not None else max(1, self.steps // 100)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_task(self):
        return self.task.build()

    def build_model(self, task=None) -> torch.nn.Module:
        task = task if task is not None else self.build_task()
        return build_model(self.model.name, task, seed=self.seed, **self.model.params)

    # ---- identity -----------------------------------------------------------------
    def canonical_json(self) -> str:
        """The JSON its hash is taken of, in the hash scheme HASH_SCHEME (see `hashed_fields`)."""
        return json.dumps(hashed_fields(self), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def __hash__(self):
        return int(self.hash, 16)

    def label(self) -> str:
        """A short human-readable name: task/model/optimizer/dtype/seed."""
        return f"{self.task.name}/{self.model.name}/{self.optimizer.name}/{self.dtype}/seed{self.seed}"


# ---- the hash: one versioned scheme -------------------------------------------------------------------------

# Scheme 1, every committed record's: the JSON of the config in its record layout (the optimizers' as
# LevenbergMarquardtConfig.record_layout writes them), without the OPERATIONAL_FIELDS, a CUDA device read as
# "cuda" (which GPU is not what a run computes), and each field hashed by when it came:
#   - a field of the first schema (FIRST_FIELDS; all of them for a config kind not named there) always;
#   - a field added since (ADDED_FIELDS, with the default it was added with, which pins it: a default changed
#     later renames no run) only where it is away from that default. Fields added together are hashed together.
# So a new field with a default keeps every hash: add it to ADDED_FIELDS (a test checks that every field is in
# one of the two). A scheme 2 would be a new entry beside these, and the records it named would say so.
HASH_SCHEME = 1
FIRST_FIELDS = {
    "run": ("task", "model", "optimizer", "schedule", "ema_lambda", "ema_decay", "grad_clip", "skip_grad_norm",
            "max_consecutive_skips", "steps", "batch_size", "dtype", "device", "seed", "eval_size", "eval_every"),
    "levenberg_marquardt": ("name", "lr", "damping", "damping_up", "damping_down", "min_damping", "max_retries",
                            "train_size", "max_params"),
}
ADDED_FIELDS = {
    "run": ({"polish": None, "polish_patience": 5}, {"polish_after": None}, {"polish_eval_every": None},
            {"time_limit_s": None}, {"starts_from": None}, {"compile": None}),
    # the record layout's: the CG solve's fields under their flat names, and the retired ones
    "levenberg_marquardt": tuple({k: v} for k, v in {
        "solver": "dense", "curvature_size": None, "cg_max_iter": 100, "cg_tol": 1e-3, "warm_start": True,
        "scaling": "identity", "preconditioner": "diagonal", "precondition_power": 0.75, "diag_probes": 4,
        "damping_rule": "nielsen", "backtracks": 0, "products": "jvp", "working_dtype": "model",
        "line_search": False, "gradient": "whole", "whole_set_plane": False, "plane_damping": "slice_fidelity",
        "plane_gradient": False, "recycle": 0, "restart_damping": False}.items()),
}


def _scheme_1(kind: str, data: dict) -> dict:
    """`data` (one config's fields) without the added fields that are at the default they came with."""
    for group in ADDED_FIELDS.get(kind, ()):
        if all(data.get(k, default) == default for k, default in group.items()):
            for k in group:
                data.pop(k, None)
    return data


def _optimizer_fields(opt) -> Optional[dict]:
    if opt is None:
        return None
    if isinstance(opt, LevenbergMarquardtConfig):
        return _scheme_1("levenberg_marquardt", opt.record_layout())
    return opt.model_dump(mode="json")


def hashed_fields(cfg: RunConfig) -> dict:
    """The fields of `cfg` its hash covers, in the record layout (scheme HASH_SCHEME)."""
    data = cfg.model_dump(mode="json", exclude=set(OPERATIONAL_FIELDS) | {"optimizer", "polish"})
    data.update(optimizer=_optimizer_fields(cfg.optimizer), polish=_optimizer_fields(cfg.polish))
    if data["device"].startswith("cuda"):
        data["device"] = "cuda"
    return _scheme_1("run", data)


def load_stored_config(config: dict | str) -> RunConfig:
    """The RunConfig of a config as a record stores it (a dict or its JSON), retired fields included: they
    name the run it was (LevenbergMarquardtConfig.retired); RunConfigError names a bad field."""
    try:
        if isinstance(config, str):
            return RunConfig.model_validate_json(config, context=STORED)
        return RunConfig.model_validate(config, context=STORED)
    except ValidationError as err:
        raise RunConfigError(validation_message(err)) from None


def config_hash(config: dict) -> str:
    """The hash of a config dict, as a record stores it (retired fields included) or as a user writes it
    (defaults filled in): RunConfig.hash's scheme. A committed record's config gives its stored hash."""
    return (config if isinstance(config, RunConfig) else load_stored_config(config)).hash


def validation_message(err: ValidationError) -> str:
    """One line per bad field: 'field.path: what is wrong, got <value>'."""
    return "invalid run config: " + describe_validation_error(err)


def describe_validation_error(err: ValidationError) -> str:
    """A pydantic error as one line: 'field.path: what is wrong, got <value>; ...'."""
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ())]
        if len(loc) > 2 and loc[0] in ("optimizer", "polish", "schedule"):
            del loc[1]  # pydantic puts the union tag (e.g. 'adam') in the path
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif not isinstance(e.get("input"), (dict, list)) and loc and e.get("type") != "missing":
            msg += f", got {e.get('input')!r}"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def make_run_config(**fields) -> RunConfig:
    """RunConfig(**fields), raising RunConfigError with one readable line per bad field."""
    try:
        return RunConfig(**fields)
    except ValidationError as err:
        raise RunConfigError(validation_message(err)) from None


def unique_configs(configs) -> list[RunConfig]:
    """The configs in order, each config hash once."""
    seen, out = set(), []
    for c in configs:
        if c.hash not in seen:
            seen.add(c.hash)
            out.append(c)
    return out


def load_run_config(text_or_dict: str | dict) -> RunConfig:
    data = json.loads(text_or_dict) if isinstance(text_or_dict, str) else text_or_dict
    return make_run_config(**data)
