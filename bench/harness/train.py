"""The train loop: one RunConfig in, one RunResult out (and in results/runs/<hash>.json).

    from bench.harness.train import run
    result = run(cfg, results_dir="results")   # skips a finished run unless force=True

Data: minibatches from primitives.stream_generator(seed, "train"); full-batch optimizers
(lbfgs, levenberg_marquardt, gauss_newton) draw one fixed training set from it instead.
Eval: a fixed held-out set of eval_size samples from the "eval" stream, scored in float64
against the exact targets at step 0, every eval_every steps and at the end.
Divergence: a non-finite eval MSE, non-finite weights, or max_consecutive_skips skipped
steps in a row ends the run with status "diverged" (its metrics are None, never numbers).
Failures: an exception (a bug, out of memory) writes a record with status "failed" and the
error, then propagates; the next run() of the config trains it again from its last checkpoint.
Interrupts (bench.harness.interrupt): the first SIGINT/SIGTERM/SIGUSR2 is honoured between steps,
and within a full-batch step wherever it calls check_stop() (between a Levenberg-Marquardt step's
products and trial losses): the step in flight is dropped, the state of the last completed step is
checkpointed, the record says "interrupted", and the next run() of the config resumes
bit-identically. A second SIGINT/SIGTERM exits at once (status 130); the last checkpoint stays.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from primitives import stream_generator

from bench.harness import interrupt
from bench.harness.allocator import keep_freed_memory
from bench.harness.config import (
    DTYPES,
    FULL_BATCH_OPTIMIZERS,
    ConstantSchedule,
    OptimizerConfig,
    RunConfig,
    RunConfigError,
    build_model,
    check_device,
)
from bench.solvers.matrix_free import MatrixFreeLevenbergMarquardt, NonFiniteCurvature
from bench.solvers.optimizers import (
    EMAFilter,
    LevenbergMarquardt,
    clip_grads_,
    cosine,
    flat_grad,
    make_optimizer,
    make_schedule,
    set_lr,
    total_grad_norm,
)
from bench.harness.records import (
    CHECKPOINT_FORMAT,
    FINISHED,
    CurvePoint,
    RunResult,
    acquire,
    atomic_torch_save,
    check_writable,
    checkpoint_path,
    environment,
    final_state_path,
    load_checkpoint,
    load_result,
    record_failure,
    run_lock,
    write_result,
)
from bench.harness.resume import branch_start, extended_start, readable
from bench.harness.run_state import Interval, RunState, StepOutcome, now, stalled

__all__ = ["CHECKPOINT_EVERY_S", "Diverged", "RunState", "Trainer", "branch_start", "extended_start", "preflight",
           "probe_generator", "run", "set_ieee_precision", "stalled", "synchronize", "traceback_tail"]


# a checkpoint at least this often (wall seconds), whatever checkpoint_every says: a second-order
# phase can spend an hour between two multiples of a step count sized for first-order steps
CHECKPOINT_EVERY_S = 600.0


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timing covers the work it claims to."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_ieee_precision() -> None:
    """fp32 means IEEE fp32: no TF32 in matmuls or cuDNN convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


@functools.lru_cache(maxsize=4096)
def _forward_check(name: str, task_json: str, model_json: str, seed: int, device: str, dtype: str) -> int:
    """Build the model and run one sample through it on `device` in `dtype`; the trainable
    parameter count. Cached: a sweep checks each model once."""
    task_spec, model_spec = json.loads(task_json), json.loads(model_json)
    from primitives import make_task

    task = make_task(task_spec["name"], **task_spec["params"])
    model = build_model(name, task, seed=seed, **model_spec["params"])
    torch_dtype = DTYPES[dtype]
    sample = task.sample(1, generator=torch.Generator().manual_seed(0), dtype=torch_dtype)
    try:
        with torch.no_grad():
            model.to(device=device, dtype=torch_dtype)(sample.inputs.to(device))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(f"model {name!r} cannot run on device {device!r} in {dtype}: {err}") from None
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def preflight(cfg: RunConfig) -> int:
    """What validating a config as data cannot tell: that this machine has cfg.device, can build
    the model and run one sample through it there in cfg.dtype (kernel backend included), and
    that a second-order optimizer's params x params matrix fits its max_params. Runs before
    training (run(), and a local sweep before it starts any run). Returns the trainable
    parameter count; raises RunConfigError naming the field."""
    try:
        check_device(cfg.device, cfg.dtype)
    except ValueError as err:
        raise RunConfigError(f"invalid run config: device: {err}") from None
    try:
        n_params = _forward_check(cfg.model.name, cfg.task.canonical(), cfg.model.canonical(), cfg.seed,
                                  cfg.device, cfg.dtype)
    except RunConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise RunConfigError(f"invalid run config: model.params: {err}") from None
    for which, opt in (("optimizer", cfg.optimizer), ("polish", cfg.polish)):
        if (opt is not None and opt.name in ("levenberg_marquardt", "gauss_newton") and opt.solver == "dense"
                and n_params > opt.max_params):
            raise RunConfigError(f"invalid run config: {which}: {opt.name} with solver 'dense' builds a params x params "
                                 f"matrix; this model has {n_params} parameters, more than max_params={opt.max_params} "
                                 "(use solver 'cg', the matrix-free one, or raise max_params if params^2 float64s fit "
                                 "in memory)")
    return n_params


def probe_generator(seed: int) -> torch.Generator:
    """The adaptive schedule's probe batches: a stream of their own, so the training
    batches of a run do not depend on its schedule."""
    return stream_generator(seed, "probe")


class Diverged(Exception):
    pass


class Trainer:
    """Holds every piece of a run's state; `train()` runs it to the end or an interrupt.

    The resumable state is `self.state` (RunState) plus COMPONENTS, each with a state_dict (the
    random streams: get_state); a checkpoint is both, whole."""

    COMPONENTS = ("model", "optimizer", "schedule", "filter")
    GENERATORS = ("train_gen", "probe_gen")

    def __init__(self, cfg: RunConfig, results_dir: str | Path, progress: Optional[bool] = None):
        set_ieee_precision()
        if torch.device(cfg.device).type == "cpu":
            keep_freed_memory()
        self.cfg = cfg
        self.results_dir = Path(results_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.device = torch.device(cfg.device)
        self.dtype = cfg.torch_dtype
        self.task = cfg.build_task()
        self.model = cfg.build_model(self.task).to(device=self.device, dtype=self.dtype)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # the first-order step's forward (compiled on first use if cfg.compile; same weights)
        self.step_model = self.model if cfg.compile is None else torch.compile(self.model, mode=cfg.compile)
        self.param_count = sum(p.numel() for p in self.params)
        self.optimizer = make_optimizer(cfg.optimizer, self.model)
        self.schedule = make_schedule(cfg.schedule, cfg.optimizer.lr)
        self.filter = EMAFilter(cfg.ema_lambda, cfg.ema_decay)
        self.full_batch = cfg.optimizer.name in FULL_BATCH_OPTIMIZERS
        # Training batches are drawn where the run trains: on a GPU by a CUDA generator (no host
        # draw and copy per step; the draws differ from a CPU run's), on the CPU as always.
        self.data_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.train_gen = stream_generator(cfg.seed, "train", device=self.data_device)
        self.probe_gen = probe_generator(cfg.seed)
        self.eval_batch = self.task.sample(cfg.eval_size, generator=stream_generator(cfg.seed, "eval"),
                                           dtype=self.dtype)
        self.train_set = None
        if self.full_batch:
            self.train_set = self.task.sample(cfg.optimizer.train_size, generator=self.train_gen,
                                              dtype=self.dtype).to(self.device)
            self.preflight_optimizer("optimizer")
        self.floor = self.task.floor(self.dtype)

        self.state = RunState()
        self.message: Optional[str] = None  # why the run ended early (diverged, interrupted)
        self.last_metrics: Optional[dict] = None  # a cache of evaluate(), not state
        self.last_metrics_step = -1

    # ---- checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.cfg.hash,
            "config": self.cfg.canonical_json(),
            **{name: getattr(self, name).state_dict() for name in self.COMPONENTS},
            **{name: getattr(self, name).get_state() for name in self.GENERATORS},
            **self.state.saved(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if state.get("switched_at") is not None:  # rebuild the polish phase, then load its state
            self.switch_optimizer(self.cfg.polish, draw_state=state["polish_draw_state"])
        for name in self.COMPONENTS[1:]:
            getattr(self, name).load_state_dict(state[name])
        if self.filter.ema is not None:
            self.filter.ema = [e.to(self.device) for e in self.filter.ema]
        for name in self.GENERATORS:
            getattr(self, name).set_state(state[name])
        self.state = RunState.restored(state)

    def snapshot(self) -> dict:
        """A copy of the whole resumable state, to put back with restore() (a step dropped mid-way)."""
        return copy.deepcopy({"components": {name: getattr(self, name).state_dict() for name in self.COMPONENTS},
                              "generators": {name: getattr(self, name).get_state() for name in self.GENERATORS},
                              "state": self.state})

    def restore(self, snapshot: dict) -> None:
        for name, state in snapshot["components"].items():
            getattr(self, name).load_state_dict(state)
        if self.filter.ema is not None:
            self.filter.ema = [e.to(self.device) for e in self.filter.ema]
        for name, state in snapshot["generators"].items():
            getattr(self, name).set_state(state)
        self.state = snapshot["state"]

    def save_checkpoint(self, result: Optional[RunResult] = None, keep: bool = False) -> None:
        """The state to results/checkpoints; with `keep`, to results/final_states too (keep_final_state)."""
        state = self.state_dict()
        state["result"] = None if result is None else result.model_dump_json()
        atomic_torch_save(state, checkpoint_path(self.cfg, self.results_dir))
        if keep:
            path = final_state_path(self.cfg, self.results_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            # a final state is committed: a component's bulky state that it can rebuild (its transient_state) stays out
            for name in self.COMPONENTS:
                transient = getattr(getattr(self, name), "transient_state", ())
                if transient:
                    state[name] = {k: v for k, v in state[name].items() if k not in transient}
            atomic_torch_save(state, path)

    # ---- the polish phase ---------------------------------------------------------
    def switch_optimizer(self, optimizer: OptimizerConfig, draw_state: Optional[torch.Tensor] = None) -> None:
        """Continue the model with `optimizer` at its own constant LR (the run's schedule was the
        first optimizer's). A full-batch optimizer gets a fresh training set of its train_size from
        the train stream (drawn from `draw_state` when rebuilding the phase on resume)."""
        before = self.optimizer
        self.optimizer = make_optimizer(optimizer, self.model)
        if isinstance(before, MatrixFreeLevenbergMarquardt) and isinstance(self.optimizer, MatrixFreeLevenbergMarquardt):
            # the same solver on a larger set: its trust region carries over (from the config's
            # damping it would spend its first steps walking down again)
            self.optimizer.damping = before.damping
        self.schedule = make_schedule(ConstantSchedule(), optimizer.lr)
        self.full_batch = optimizer.name in FULL_BATCH_OPTIMIZERS
        self.train_set = None
        if self.full_batch:
            gen = self.train_gen
            if draw_state is not None:
                gen = torch.Generator(device=self.data_device).set_state(draw_state)
            self.state.polish_draw_state = gen.get_state()
            self.train_set = self.task.sample(optimizer.train_size, generator=gen, dtype=self.dtype).to(self.device)
            self.preflight_optimizer("polish")

    def preflight_optimizer(self, field: str) -> None:
        """The matrix-free solver's checks (jvp through the model, memory) before it trains."""
        if isinstance(self.optimizer, MatrixFreeLevenbergMarquardt):
            data = self.train_set
            self.optimizer.check(data.inputs, data.targets, data.mask, what=field)

    def maybe_switch(self) -> None:
        """Switch to cfg.polish once the eval MSE has stalled (see `stalled`), or at step
        cfg.polish_after."""
        cfg = self.cfg
        if cfg.polish is None or self.state.switched_at is not None:
            return
        due = cfg.polish_after is not None and self.state.step >= cfg.polish_after
        if due or stalled([p.eval_mse for p in self.state.curve if p.eval_mse is not None], cfg.polish_patience):
            self.switch_optimizer(cfg.polish)
            self.state.switched_at = self.state.step

    # ---- one step -----------------------------------------------------------------
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    def _probe_signal(self) -> None:
        """Mean cosine of consecutive probe-minibatch gradients at the current weights."""
        c = self.cfg.schedule
        size = c.probe_batch_size or self.cfg.batch_size
        previous, total = None, 0.0
        for _ in range(c.probe_batches):
            batch = self.task.sample(size, generator=self.probe_gen, dtype=self.dtype).to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            self.task.loss(self.model(batch.inputs), batch).backward()
            g = flat_grad(self.params).detach().clone()
            if previous is not None:
                total += cosine(previous, g)
            previous = g
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.observe(total / (c.probe_batches - 1))

    def _first_order_step(self) -> StepOutcome:
        cfg = self.cfg
        if self.schedule.wants_signal(self.state.step):
            self._probe_signal()
        set_lr(self.optimizer, self.schedule.lr_at(self.state.step))
        batch = self.task.sample(cfg.batch_size, generator=self.train_gen, dtype=self.dtype)
        if batch.inputs.device != self.device:  # mps: drawn on the host
            batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task.loss(self.step_model(batch.inputs), batch)
        loss.backward()
        loss_value = loss.item()
        norm = total_grad_norm(self.params)
        too_big = cfg.skip_grad_norm is not None and norm > cfg.skip_grad_norm
        if not (math.isfinite(loss_value) and math.isfinite(norm)) or too_big:
            if not self.weights_finite():
                raise Diverged(f"weights became non-finite before step {self.state.step + 1}")
            self.state.consecutive_skips += 1
            if self.state.consecutive_skips >= cfg.max_consecutive_skips:
                raise Diverged(f"{self.state.consecutive_skips} consecutive steps skipped "
                               f"(last loss {loss_value:.3g}, grad norm {norm:.3g}) at step {self.state.step + 1}")
            return StepOutcome(loss_value, norm, skipped=True)
        self.state.consecutive_skips = 0
        if cfg.grad_clip is not None:
            clip_grads_(self.params, cfg.grad_clip, norm)
        self.filter.apply_(self.params)
        self.optimizer.step()
        return StepOutcome(loss_value, norm)

    def _full_batch_step(self) -> StepOutcome:
        set_lr(self.optimizer, self.schedule.lr_at(self.state.step))
        data = self.train_set
        if isinstance(self.optimizer, (LevenbergMarquardt, MatrixFreeLevenbergMarquardt)):
            try:
                loss_value, norm = self.optimizer.step(data.inputs, data.targets, data.mask)
            except NonFiniteCurvature as why:
                raise Diverged(f"step {self.state.step + 1}: {why}") from None
        else:
            def closure():
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.task.loss(self.model(data.inputs), data)
                loss.backward()
                return loss

            loss_value = self.optimizer.step(closure).detach().item()
            norm = total_grad_norm(self.params)
        if not math.isfinite(loss_value) or not self.weights_finite():
            raise Diverged(f"non-finite training loss or weights at step {self.state.step + 1}")
        return StepOutcome(loss_value, norm)

    def step_once(self) -> StepOutcome:
        """One optimizer step with its bookkeeping (raises Diverged). A full-batch step may raise
        StopRequested (interrupt.check_stop between its pieces): the state is then put back to where
        it was before the step, so the checkpoint written next is that of the last completed step."""
        t0 = time.perf_counter()
        if self.full_batch:
            before = self.snapshot()
            try:
                outcome = self._full_batch_step()
            except interrupt.StopRequested:
                self.restore(before)
                raise
        else:
            outcome = self._first_order_step()
        self.state.train_time_s += time.perf_counter() - t0
        self.state.step += 1
        self.state.interval.add(outcome.loss, outcome.grad_norm, outcome.skipped)
        self.state.skipped_total += outcome.skipped
        return outcome

    # ---- eval ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        if self.last_metrics_step == self.state.step and self.last_metrics is not None:
            return self.last_metrics
        self.model.eval()
        chunk = self.cfg.batch_size
        inputs = self.eval_batch.inputs
        preds = [self.model(inputs[i:i + chunk].to(self.device)).to("cpu", torch.float64)
                 for i in range(0, inputs.shape[0], chunk)]
        self.model.train()
        self.last_metrics = self.task.metrics(torch.cat(preds), self.eval_batch)
        self.last_metrics_step = self.state.step
        return self.last_metrics

    def add_curve_point(self) -> CurvePoint:
        metrics = self.evaluate()
        iv = self.state.interval
        point = CurvePoint(
            step=self.state.step,
            train_loss=iv.loss_sum / iv.loss_n if iv.loss_n else None,
            eval_mse=metrics["mse"],
            eval_rel=metrics["rel"],
            lr=self.current_lr() if self.state.step else self.schedule.lr_at(0),
            grad_norm_mean=iv.norm_sum / iv.norm_n if iv.norm_n else None,
            grad_norm_max=iv.norm_max if iv.norm_n else None,
            skipped=iv.skipped,
            second_order=dict(getattr(self.optimizer, "last", None) or {}) or None,
        )
        self.state.curve.append(point)
        self.state.interval = Interval()
        if not math.isfinite(metrics["mse"]):
            raise Diverged(f"eval MSE is {metrics['mse']} at step {self.state.step}")
        return point

    # ---- the loop -----------------------------------------------------------------
    def train(self) -> RunResult:
        """Train to cfg.steps, the time limit, divergence or a stop request; write the checkpoint and record."""
        cfg = self.cfg
        session_start, wall_before = time.perf_counter(), self.state.wall_time_s
        bar = None
        if self.progress and cfg.steps >= 50:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.state.step, desc=cfg.label(), file=sys.stderr,
                       mininterval=1.0, dynamic_ncols=True)
        with interrupt.handling_signals():  # to the last write: a second signal there exits at once
            try:
                if not self.state.curve:
                    self.add_curve_point()
                self._loop(bar, lambda: wall_before + time.perf_counter() - session_start)
            except Diverged as why:
                self.state.status, self.message = "diverged", str(why)
            finally:
                if bar is not None:
                    bar.close()
            self.state.wall_time_s = wall_before + time.perf_counter() - session_start
            result = self.result()
            self.save_checkpoint(result if result.finished else None, keep=result.finished and cfg.keep_final_state)
            write_result(result, self.results_dir)
        return result

    def _loop(self, bar, wall_time) -> None:
        """Steps until the run ends; sets its status (a stop request: "interrupted", at the last completed step)."""
        cfg = self.cfg
        last_saved = time.perf_counter()
        while self.state.step < cfg.steps:
            try:
                interrupt.check_stop()
                self.step_once()
            except interrupt.StopRequested:
                self.state.status, self.message = "interrupted", f"interrupted at step {self.state.step}"
                return
            if bar is not None:
                bar.update(1)
            out_of_time = cfg.time_limit_s is not None and self.state.train_time_s >= cfg.time_limit_s
            every = (cfg.polish_eval_every if cfg.polish_eval_every and self.state.switched_at is not None
                     else cfg.resolved_eval_every)
            if self.state.step % every == 0 or self.state.step == cfg.steps or out_of_time:
                point = self.add_curve_point()
                self.maybe_switch()
                if bar is not None:
                    bar.set_postfix(step=self.state.step, mse=f"{point.eval_mse:.3e}", lr=f"{point.lr:.2e}")
            due = cfg.checkpoint_every and (self.state.step % cfg.checkpoint_every == 0
                                            or time.perf_counter() - last_saved >= CHECKPOINT_EVERY_S)
            if due and self.state.step < cfg.steps:
                self.state.wall_time_s = wall_time()
                self.save_checkpoint()
                last_saved = time.perf_counter()
            if out_of_time:
                self.message = (f"time limit of {cfg.time_limit_s:g} s of training reached at step "
                                f"{self.state.step} of {cfg.steps}")
                break
        self.state.status = "ok"

    def partial(self) -> dict:
        """What a run that raised had reached, for its failed record (bench.harness.records.record_failure)."""
        s = self.state
        return {"steps_done": s.step, "curve": s.curve, "param_count": self.param_count,
                "skipped_steps": s.skipped_total, "train_time_s": s.train_time_s, "resumed_at": s.resumed_at,
                "switched_at": s.switched_at}

    def result(self) -> RunResult:
        ok = self.state.status != "diverged"
        metrics = self.evaluate() if ok else {}
        evals = [(p.eval_mse, p.step) for p in self.state.curve if p.eval_mse is not None]
        best = min(evals) if evals and ok else (None, None)
        last_loss = next((p.train_loss for p in reversed(self.state.curve) if p.train_loss is not None), None)
        return RunResult(
            config=self.cfg,
            config_hash=self.cfg.hash,
            status=self.state.status,
            message=self.message,
            steps_done=self.state.step,
            eval_mse=metrics.get("mse"),
            eval_rel=metrics.get("rel"),
            eval_rel_l2=metrics.get("rel_l2"),
            per_position_mse=metrics.get("per_position_mse"),
            best_eval_mse=best[0],
            best_step=best[1],
            train_loss=last_loss if ok else None,
            floor=self.floor,
            final_lr=self.current_lr(),
            curve=self.state.curve,
            param_count=self.param_count,
            skipped_steps=self.state.skipped_total,
            wall_time_s=self.state.wall_time_s,
            train_time_s=self.state.train_time_s,
            steps_per_s=self.state.step / self.state.train_time_s if self.state.train_time_s > 0 else None,
            resumed_at=self.state.resumed_at,
            switched_at=self.state.switched_at,
            optimizer_diagnostics=getattr(self.optimizer, "last", None) or None,
            environment=environment(self.cfg.device),
            started_at=self.state.started_at,
            finished_at=now(),
        )


def run(cfg: RunConfig, results_dir: str | Path = "results", *, force: bool = False,
        progress: Optional[bool] = None) -> RunResult:
    """Train `cfg` (or return its finished record), resuming from a checkpoint if one exists.

    force=True retrains from scratch even if a finished record or a checkpoint exists.
    progress: tqdm bar on stderr; None -> only when stderr is a terminal.
    One process at a time trains a run: another one asking for it waits for the lock, then
    finds the finished record. An unreadable record or checkpoint is set aside (renamed, with
    a one-line warning) and the run is trained again.
    """
    check_writable(results_dir)
    with acquire(run_lock(cfg, results_dir), f"run {cfg.hash} ({cfg.label()})"):
        if not force:
            existing = readable(load_result, cfg, results_dir)
            if existing is not None and existing.finished:
                return existing
        started_at, t0, trainer = now(), time.perf_counter(), None
        try:
            preflight(cfg)
            trainer = Trainer(cfg, results_dir, progress=progress)
            state = None if force else readable(load_checkpoint, cfg, results_dir)
            if state is not None and state.get("result") and state.get("status") in FINISHED:
                # finished, but its record was lost: rewrite the record from the checkpoint
                result = RunResult.model_validate_json(state["result"])
                write_result(result, results_dir)
                return result
            if state is None and not force and cfg.extends is not None:
                state = extended_start(cfg, results_dir)
            if state is None and cfg.starts_from is not None:
                state = branch_start(cfg, results_dir)
            if state is not None:
                trainer.load_state_dict(state)
            return trainer.train()
        except RunConfigError:
            raise  # a config this machine cannot train (preflight, the optimizer's checks) is bad input: no record
        except Exception as err:
            # a sweep goes on past a failed run, so the failure must be on disk, not only in a traceback
            record_failure(cfg, results_dir, err, traceback_text=traceback_tail(err), started_at=started_at,
                           wall_time_s=time.perf_counter() - t0, partial=None if trainer is None else trainer.partial())
            raise



def traceback_tail(err: BaseException, frames: int = 8) -> str:
    """The last frames of err's traceback: where it raised, short enough for a record."""
    return "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-frames))
