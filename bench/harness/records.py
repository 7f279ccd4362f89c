"""Run records and checkpoints on disk, written so they are never half-written.

    results/runs/<hash>.json          RunResult of a run (status ok | diverged | interrupted | failed)
    results/checkpoints/<hash>.pt     training state every `checkpoint_every` steps; after the
                                      run it holds the final weights (load_model reads them)
    results/locks/<hash>.lock         held by the process training the run (bench.harness.train.run)

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed
over the target: a crash leaves either the old file or the new one, never a mix. A file
that cannot be read anyway (cut short by a full disk, edited by hand, written by an older
version) raises BadFileError naming the file and the problem in one line; `set_aside`
renames it to <name>.bad-<UTC time> beside itself (never deleted) so the run can be retrained.
A record written by newer code (its `record_format` above RECORD_FORMAT) raises NewerRecordError
instead: it is left where it is, never set aside or overwritten, and the message says to update.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bench.harness import allocator
from bench.harness.config import STORED, RunConfig, describe_validation_error

log = logging.getLogger("bench")

Status = Literal["ok", "diverged", "interrupted", "failed"]
FINISHED = ("ok", "diverged")  # statuses that are never retrained unless forced
# "failed": the run raised (a bug, out of memory, a killed worker); its record says why, and the
# next sweep trains it again (from its last checkpoint, if it wrote one)
CHECKPOINT_FORMAT = 1
# Raise it whenever RunResult (or RunConfig) gains a field: code older than a record then says
# "update" instead of failing on the unknown field and retraining a finished run.
# 1: records written before the field existed (they read as the current format); 2: record_format;
# 3: CurvePoint.second_order
RECORD_FORMAT = 3


def finite_or_none(x) -> Optional[float]:
    """JSON has no NaN/Inf: a non-finite number is recorded as None (the status says why)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class CurvePoint(BaseModel):
    """One point of the training curve. Train loss and grad-norm stats cover the steps
    since the previous point (skipped steps excluded); eval numbers are at `step`."""

    model_config = ConfigDict(extra="forbid")

    step: int
    train_loss: Optional[float] = None
    eval_mse: Optional[float] = None
    eval_rel: Optional[float] = None
    lr: float
    grad_norm_mean: Optional[float] = None
    grad_norm_max: Optional[float] = None
    skipped: int = 0
    # a second-order optimizer's last step at this point (matrix-free LM: CG products and residual,
    # damping, rho): where a run stalled, and why
    second_order: Optional[dict[str, Any]] = None

    @field_validator("train_loss", "eval_mse", "eval_rel", "grad_norm_mean", "grad_norm_max", mode="before")
    @classmethod
    def _finite(cls, v):
        return finite_or_none(v)


class RunResult(BaseModel):
    """What a run produced. Metrics are on the held-out eval set, in float64 against the
    exact targets; `floor` is task.floor(dtype), the MSE of rounding the targets to dtype.
    A diverged run has eval_* = None (never a number) and says why in `message`; so does a
    failed one (the exception in `message`, the last frames of its traceback in `traceback`)."""

    model_config = ConfigDict(extra="forbid")

    record_format: int = RECORD_FORMAT
    config: RunConfig
    config_hash: str
    status: Status
    message: Optional[str] = None
    steps_done: int

    eval_mse: Optional[float] = None
    eval_rel: Optional[float] = None
    eval_rel_l2: Optional[float] = None
    per_position_mse: Optional[list[Optional[float]]] = None
    best_eval_mse: Optional[float] = None
    best_step: Optional[int] = None
    train_loss: Optional[float] = None
    floor: Optional[float]  # None only for a failed run whose task could not be built
    final_lr: Optional[float] = None

    curve: list[CurvePoint]
    param_count: int
    skipped_steps: int = 0
    wall_time_s: float  # everything: training, evals, checkpoints, over all sessions
    train_time_s: float  # the optimizer steps only
    steps_per_s: Optional[float] = None  # steps_done / train_time_s
    resumed_at: list[int] = []  # steps at which the run was resumed from a checkpoint
    switched_at: Optional[int] = None  # step at which config.polish took over (None: never)
    # the last second-order step (matrix-free LM: CG products and relative residual, damping, rho)
    optimizer_diagnostics: Optional[dict[str, Any]] = None
    environment: dict[str, Any]
    started_at: str
    finished_at: str
    traceback: Optional[str] = None  # a failed run: where it raised

    @field_validator("eval_mse", "eval_rel", "eval_rel_l2", "best_eval_mse", "train_loss", "final_lr",
                     "steps_per_s", mode="before")
    @classmethod
    def _finite(cls, v):
        return finite_or_none(v)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


# ---- paths ------------------------------------------------------------------------


class ResultsDirError(OSError):
    """The results folder cannot be created or written."""


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"


def checkpoints_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "checkpoints"


def final_state_path(cfg_or_hash: RunConfig | str, results_dir: str | Path) -> Path:
    """Where a finished run with keep_final_state keeps its last checkpoint (committed, unlike checkpoints/)."""
    h = cfg_or_hash.hash if isinstance(cfg_or_hash, RunConfig) else cfg_or_hash
    return Path(results_dir) / "final_states" / f"{h}.pt"


def record_path(cfg_or_hash: RunConfig | str, results_dir: str | Path) -> Path:
    h = cfg_or_hash.hash if isinstance(cfg_or_hash, RunConfig) else cfg_or_hash
    return runs_dir(results_dir) / f"{h}.json"


def checkpoint_path(cfg_or_hash: RunConfig | str, results_dir: str | Path) -> Path:
    h = cfg_or_hash.hash if isinstance(cfg_or_hash, RunConfig) else cfg_or_hash
    return checkpoints_dir(results_dir) / f"{h}.pt"


def state_file(cfg_or_hash: RunConfig | str, results_dir: str | Path) -> Optional[Path]:
    """The file that holds the run's latest state: its checkpoint, else its kept final state, else None."""
    for path in (checkpoint_path(cfg_or_hash, results_dir), final_state_path(cfg_or_hash, results_dir)):
        if path.exists():
            return path
    return None


def has_weights(cfg: RunConfig, results_dir: str | Path) -> bool:
    """Whether load_model can load the run without training it: a checkpoint or a kept final state."""
    return state_file(cfg, results_dir) is not None


def locks_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "locks"


def check_writable(results_dir: str | Path) -> None:
    """Create runs/, checkpoints/ and locks/ and prove them writable, or raise ResultsDirError."""
    for folder in (runs_dir(results_dir), checkpoints_dir(results_dir), locks_dir(results_dir)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise ResultsDirError(f"results folder {str(folder)!r} is not writable: {err.strerror or err}") from None


# ---- atomic writes ----------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """Call write(file) on a temp file beside `path`, fsync it, then rename it to `path`: the one
    atomic write of the suite (records, checkpoints, floors, experiment outputs).

    If `write` raises, the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


# ---- bad files and two writers ----------------------------------------------------


class BadFileError(ValueError):
    """A record or checkpoint cannot be read; the message names the file and why, in one line."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class NewerRecordError(BadFileError):
    """A record written by newer code than this (its record_format is higher): the file is fine and
    is kept as it is; this code cannot read it."""


def set_aside(path: str | Path, why: str = "") -> Path:
    """Rename an unreadable file to <name>.bad-<UTC time> beside itself (kept for inspection, never
    deleted; no longer named *.json or *.pt, so nothing reads it again) and warn in one line."""
    path = Path(path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.bad-{stamp}-{n}"), n + 1
    os.replace(path, target)
    log.warning(f"{why or path}; moved aside to {target.name}, the run is trained again")
    return target


def run_lock(cfg_or_hash: RunConfig | str, results_dir: str | Path) -> FileLock:
    """The lock of one run: whoever holds it is the only process training the run and writing its
    record and checkpoint. An OS file lock, released when its holder exits or is killed."""
    h = cfg_or_hash.hash if isinstance(cfg_or_hash, RunConfig) else cfg_or_hash
    return FileLock(locks_dir(results_dir) / f"{h}.lock")


def acquire(lock: FileLock, what: str) -> FileLock:
    """Take `lock`, saying (once, in one line) when another process holds it and this one waits."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning(f"{what}: another process holds {lock.lock_file}; waiting for it to finish")
        lock.acquire()
    return lock


# ---- records ----------------------------------------------------------------------


def write_result(result: RunResult, results_dir: str | Path) -> Path:
    path = record_path(result.config_hash, results_dir)
    atomic_write_text(path, result.model_dump_json(indent=1) + "\n")
    return path


def record_failure(cfg: RunConfig, results_dir: str | Path, error: BaseException | str, *,
                   traceback_text: Optional[str] = None, started_at: Optional[str] = None,
                   wall_time_s: float = 0.0, partial: Optional[dict[str, Any]] = None) -> Optional[RunResult]:
    """Write the record of a run that raised (or whose worker died): status "failed", the error in
    `message`. `partial` holds what the run had reached (steps_done, curve, param_count,
    train_time_s, ...). A finished record is never replaced by a failed one (a forced retrain that
    fails keeps the earlier result); then nothing is written and None is returned."""
    try:
        existing = load_result(cfg, results_dir)
    except NewerRecordError as err:
        log.warning(f"run {cfg.hash} ({cfg.label()}) failed; {err}: its record is kept")
        return None
    except BadFileError:
        existing = None
    if existing is not None and existing.finished:
        log.warning(f"run {cfg.hash} ({cfg.label()}) failed again; its finished record is kept")
        return None
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        floor = cfg.build_task().floor(cfg.torch_dtype)
    except Exception:  # the failure may be in building the task itself
        floor = None
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fields = {"steps_done": 0, "curve": [], "param_count": 0, "train_time_s": 0.0, **(partial or {})}
    result = RunResult(config=cfg, config_hash=cfg.hash, status="failed", message=message, floor=floor,
                       wall_time_s=wall_time_s, environment=environment(cfg.device),
                       started_at=started_at or stamp, finished_at=stamp, traceback=traceback_text, **fields)
    write_result(result, results_dir)
    return result


def read_record(path: str | Path) -> RunResult:
    """The RunResult in `path`; BadFileError (one line naming the file) if it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        record = RunResult.model_validate_json(raw, context=STORED)  # a retired field names the run it was
    except ValidationError as err:
        _refuse_newer(path, _format_of(raw))  # newer code's fields are unknown here: say so, not "bad file"
        raise BadFileError(path, f"not a readable run record ({describe_validation_error(err)})") from None
    except OSError as err:
        raise BadFileError(path, f"cannot be read ({err.strerror or err})") from None
    _refuse_newer(path, record.record_format)
    return record


def _format_of(raw: bytes) -> Optional[int]:
    """The record_format of a record's JSON that did not validate (1 if absent, None if not JSON)."""
    try:
        found = json.loads(raw).get("record_format", 1)
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, int) else None


def _refuse_newer(path: Path, found: Optional[int]) -> None:
    if found is not None and found > RECORD_FORMAT:
        raise NewerRecordError(path, f"written by newer code (record format {found}; this code reads up to "
                                     f"{RECORD_FORMAT}): update this checkout (git pull) to read it; "
                                     "the file is left as it is")


def load_result(cfg_or_hash: RunConfig | str, results_dir: str | Path = "results") -> Optional[RunResult]:
    """The stored RunResult of a config (or hash), or None if there is none (BadFileError if it
    cannot be read)."""
    path = record_path(cfg_or_hash, results_dir)
    if not path.exists():
        return None
    return read_record(path)


def load_results(results_dir: str | Path = "results", *, on_bad: Callable[[str], None] = log.warning
                 ) -> list[RunResult]:
    """Every readable record under results_dir/runs (for tables and figures); each unreadable one
    is skipped, and `on_bad` gets one line naming it."""
    out = []
    for p in sorted(runs_dir(results_dir).glob("*.json")):
        try:
            out.append(read_record(p))
        except BadFileError as err:
            on_bad(f"skipping {err}")
    return out


def is_finished(cfg: RunConfig, results_dir: str | Path = "results") -> bool:
    path = record_path(cfg, results_dir)
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("status") in FINISHED
    except (OSError, ValueError):
        return False


def load_checkpoint(cfg: RunConfig | str, results_dir: str | Path) -> Optional[dict]:
    """The checkpoint of `cfg` (or of the run with that config hash), or None if there is none (or
    it is another run's or format's); BadFileError if the file cannot be read. Without a checkpoint, a
    finished run's kept final state (final_state_path) stands in for it."""
    path = state_file(cfg, results_dir)
    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise BadFileError(path, f"not a readable checkpoint ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
    wanted = cfg.hash if isinstance(cfg, RunConfig) else cfg
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("config_hash") != wanted:
        return None
    return state


def load_model(cfg: RunConfig, results_dir: str | Path = "results", device: str = "cpu") -> torch.nn.Module:
    """The model of a run with its latest weights (the final ones once the run finished)."""
    state = load_checkpoint(cfg, results_dir)
    if state is None:
        raise FileNotFoundError(f"no checkpoint for run {cfg.hash} under {results_dir}")
    model = cfg.build_model().to(device=device, dtype=cfg.torch_dtype)
    model.load_state_dict(state["model"])
    return model


# ---- environment ------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu") -> dict[str, Any]:
    """Library versions and hardware, recorded with every result and benchmark."""
    try:  # from package metadata: importing triton itself takes seconds
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # optional on CPU-only machines
        triton_version = None
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "triton": triton_version,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": cpu_name(),
        "keep_freed_memory": allocator.applied(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env


def finished_state(cfg_hash: str, results_dir: str | Path) -> tuple["RunResult", dict]:
    """The record of run `cfg_hash` and its saved state (kept final state or checkpoint), for the studies
    that look again at a run's end; RunConfigError naming what is missing."""
    from bench.harness.config import RunConfigError

    record = load_result(cfg_hash, results_dir)
    if record is None:
        raise RunConfigError(f"no record of run {cfg_hash} under {results_dir}")
    state = load_checkpoint(record.config, results_dir)
    if state is None:
        raise RunConfigError(f"run {cfg_hash} has no kept final state or checkpoint under {results_dir}: "
                             "its weights are needed (keep_final_state keeps them)")
    return record, state
