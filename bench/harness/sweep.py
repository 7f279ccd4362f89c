"""Sweeps: a grid is a plain Python list of RunConfig; run_sweep trains what is not done.

    # mygrids.py
    def lr_grid():
        return [RunConfig(task={"name": "multiply"}, model={"name": "baseconv"},
                          optimizer={"name": "adam", "lr": lr}, seed=s)
                for lr in (1e-3, 3e-4) for s in range(3)]

    python -m bench sweep mygrids:lr_grid --workers 2             # local processes
    python -m bench sweep mygrids:lr_grid --executor ray          # Ray (RAY_ADDRESS or a local instance)
    python -m bench sweep bench.grids:primitives_ci --model mymixer:MyMixer   # your mixer in every run

`--model` (`with_model`) swaps the model of every run of a grid and merges the runs that become
identical.
    python -m bench sweep mygrids:lr_grid --executor submitit     # Slurm job array (local processes without sbatch)

Finished runs (a record with status ok or diverged) are skipped; interrupted and failed ones are
trained again, from their checkpoint if they wrote one. A sweep on this machine (local, or
submitit without Slurm) first checks every run it will train (bench.harness.train.preflight: the device,
the model's forward pass, an optimizer's size limit) and starts none if one fails; on Ray and
Slurm each worker checks its own run (the driver may have no GPU). Two sweeps on one results
folder never train the same run at once (bench.harness.train.run holds the run's file lock).

Failures: a run that raises writes a record with status "failed" and the error (bench.harness.train.run);
a worker that dies without reporting (killed, out of memory) gets that record from the driver.
Either way the sweep goes on and lists the failures at the end.

Every executor shares one loop (run_sweep): it starts runs through a _Backend (at most `workers`
at a time where the executor does not queue them itself), collects each outcome as it arrives,
prints one line per finished run under one tqdm bar for the sweep, and on SIGINT/SIGTERM asks
the runs in flight to checkpoint and stop, and starts no more (a second signal exits at once:
bench.harness.interrupt). Workers outside this process
write their log to <results>/logs/<hash>.log (submitit jobs: <results>/logs/submitit/).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path
from typing import Any, Iterable, Optional

from architectures.plugin import import_object

from bench.harness import interrupt
from bench.harness.config import RunConfig, RunConfigError, load_run_config, make_run_config, unique_configs
from bench.harness.records import check_writable, is_finished, record_failure

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTORS = ("local", "ray", "submitit")


@dataclass
class SweepOutcome:
    config_hash: str
    label: str
    status: str  # ok | diverged | interrupted | failed | skipped (finished before) | not started (stopped first)
    eval_mse: Optional[float] = None
    error: Optional[str] = None  # a failed run: its traceback (or why its worker died)
    message: Optional[str] = None
    wall_time_s: Optional[float] = None


def resolve_grid(spec: str) -> list[RunConfig]:
    """'package.module:NAME' -> the list NAME (or NAME() if it is callable) as RunConfigs."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    grid = import_object(spec, example="bench.grids:primitives_paper")
    if callable(grid):
        grid = grid()
    configs = [c if isinstance(c, RunConfig) else load_run_config(c) for c in grid]
    if not configs:
        raise ValueError(f"grid {spec!r} is empty")
    return configs


def with_model(configs: Iterable[RunConfig], name: str, params: Optional[dict[str, Any]] = None) -> list[RunConfig]:
    """Every config with model `name` in place of its own: the backbone's parameters (width, depth,
    mlp, norms, ...: architectures.shared_parameter_names) are kept, those of the replaced mixer are
    dropped and `params` added. Configs that become identical (they differed only in the replaced
    mixer or its parameters) are merged, in the order they first appear."""
    from architectures import shared_parameter_names

    keep = set(shared_parameter_names(name))
    out = []
    for c in configs:
        data = c.model_dump(mode="json")
        kept = {k: v for k, v in c.model.params.items() if k in keep}
        data["model"] = {"name": name, "params": {**kept, **(params or {})}}
        try:
            out.append(make_run_config(**data))
        except RunConfigError as err:
            raise RunConfigError(f"{c.label()} (config {c.hash}) with model {name!r}: {err}") from None
    return unique_configs(out)


# ---- the worker side: the same entry point under every executor -------------------------------


@contextlib.contextmanager
def _log_to(path: Optional[str]):
    """Send the run's log and prints to `path` (a worker outside the driver: its output would
    break the driver's progress bar); None: leave them where they go."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    bench_log = logging.getLogger("bench")
    with open(path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
        propagate, bench_log.propagate = bench_log.propagate, False
        bench_log.addHandler(handler)
        try:
            yield
        finally:
            bench_log.removeHandler(handler)
            bench_log.propagate = propagate


def _run_one(config_json: str, results_dir: str, force: bool, threads: Optional[int],
             log_path: Optional[str] = None) -> dict[str, Any]:
    """Worker entry point (in process, local processes, Ray, submitit): train one config, never raise.
    A run that raises has written its failed record (bench.harness.train.run); here it becomes an outcome."""
    import torch

    from bench.solvers.matrix_free import first_line
    from bench.harness.train import run, traceback_tail

    with _log_to(log_path):
        if threads:
            torch.set_num_threads(threads)
        cfg = RunConfig.model_validate_json(config_json)
        try:
            result = run(cfg, results_dir, force=force, progress=False)
        except Exception as err:
            return {"status": "failed", "message": f"{type(err).__name__}: {first_line(err)}",
                    "error": traceback_tail(err)}
        return {"status": result.status, "eval_mse": result.eval_mse, "message": result.message,
                "wall_time_s": result.wall_time_s}


def _child(conn, target, args: tuple) -> None:
    """A local worker process: target(*args) (one run: _run_one), its outcome sent back through `conn`.
    It leaves the terminal's process group: Ctrl-C reaches the driver alone, which passes each stop on
    once (two signals in a worker would end it at once, before it checkpoints)."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    conn.send((target or _run_one)(*args))
    conn.close()


# ---- the executors: how runs start and report back -----------------------------------------


@dataclass
class _Job:
    item: Any  # what it does: a RunConfig in a sweep (bench.main: a case of the main job)
    args: tuple  # the worker's arguments (_run_one's in a sweep)
    started: float = 0.0
    handle: Any = None

    @property
    def cfg(self) -> RunConfig:
        return self.item


class WorkerDied(RuntimeError):
    """A worker ended without reporting an outcome."""


class _Backend:
    """One executor. run_sweep decides what to start and when; a backend only starts, waits, reads
    outcomes (raising WorkerDied or the executor's own error when there is none) and stops."""

    limit: Optional[int] = None  # runs in flight at once; None: start all, the scheduler queues them
    logs_own_output = True  # workers run outside this process: _run_one writes a log file

    def start(self, jobs: list[_Job]) -> None:
        raise NotImplementedError

    def wait(self, jobs: list[_Job], timeout: float) -> list[_Job]:
        raise NotImplementedError

    def outcome(self, job: _Job) -> dict:
        raise NotImplementedError

    def stop(self, jobs: list[_Job]) -> None:
        """Ask the runs in flight to checkpoint and stop (they report "interrupted")."""

    def close(self) -> None:
        pass


class _InProcess(_Backend):
    """workers=1: the run trains in this process (a stop request reaches it: it checkpoints)."""

    limit = 1
    logs_own_output = False

    def __init__(self, target=None):
        self.target = target  # None: _run_one

    def start(self, jobs):
        for job in jobs:
            job.handle = (self.target or _run_one)(*job.args)

    def wait(self, jobs, timeout):
        return list(jobs)

    def outcome(self, job):
        return job.handle


def _exit_text(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class _Processes(_Backend):
    """One spawned process per run, `workers` at a time: a dying worker takes only its own run
    with it (a process pool would break for every run in flight), and SIGTERM reaches each."""

    def __init__(self, workers: int, target=None):
        self.limit, self.target = workers, target  # target None: _run_one
        self.ctx = mp.get_context("spawn")

    def start(self, jobs):
        for job in jobs:
            reader, writer = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=_child, args=(writer, self.target, job.args), daemon=False)
            proc.start()
            writer.close()
            job.handle = (proc, reader)

    def wait(self, jobs, timeout):
        # an outcome arriving, or a worker ending without one: an outcome larger than the pipe's buffer
        # is read while its worker writes it (waiting for the worker to end first would wait for ever)
        ready = set(wait_for_any([w for j in jobs for w in (j.handle[0].sentinel, j.handle[1])], timeout))
        return [j for j in jobs if j.handle[0].sentinel in ready or j.handle[1] in ready]

    def outcome(self, job):
        proc, reader = job.handle
        try:
            if reader.poll():
                return reader.recv()
        except (EOFError, OSError):
            pass
        finally:
            reader.close()
            proc.join()
        raise WorkerDied(f"worker process ended without an outcome ({_exit_text(proc.exitcode)})")

    def stop(self, jobs):
        for job in jobs:
            _terminate(job.handle[0].pid)


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended meanwhile; its outcome is on its way
        pass


@contextlib.contextmanager
def _repo_on_pythonpath():
    """Workers started from here (Ray's, submitit's) must import bench: put the repo on their
    PYTHONPATH while they are submitted."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), before) if p)
    try:
        yield os.environ["PYTHONPATH"]
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


class _Ray(_Backend):
    def __init__(self, cpus_per_run: float, gpus_per_run: float):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            with _repo_on_pythonpath() as pythonpath:
                kwargs = {"runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}}
            if address is None:
                kwargs["include_dashboard"] = False
            ray.init(address=address, **kwargs)
        self.remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(_run_one)

    def start(self, jobs):
        for job in jobs:
            job.handle = self.remote.remote(*job.args)

    def wait(self, jobs, timeout):
        done, _ = self.ray.wait([j.handle for j in jobs], num_returns=1, timeout=timeout)
        return [j for j in jobs if j.handle in done]

    def outcome(self, job):
        return self.ray.get(job.handle)

    def stop(self, jobs):
        for job in jobs:
            self.ray.cancel(job.handle)


@dataclass
class SlurmOptions:
    """What a Slurm job array asks for (submitit's AutoExecutor parameters)."""

    partition: Optional[str] = None
    time_min: int = 240  # each run's time limit; the USR2 Slurm sends 90 s before it checkpoints the run
    params: dict[str, Any] = field(default_factory=dict)  # other slurm_* parameters: account, qos, mem_gb, ...


class _Submitit(_Backend):
    """Slurm job arrays where `sbatch` is on PATH, else submitit's local processes."""

    logs_own_output = False  # submitit keeps each job's stdout and stderr in its folder

    def __init__(self, folder: Path, cluster: Optional[str], workers: Optional[int], cpus_per_run: float,
                 gpus_per_run: float, slurm: SlurmOptions):
        import submitit

        self.cluster = cluster or ("slurm" if shutil.which("sbatch") else "local")
        self.executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        common = {"name": "precision-bench", "cpus_per_task": max(1, int(cpus_per_run)),
                  "gpus_per_node": int(gpus_per_run)}
        if self.cluster == "slurm":
            extra = {f"slurm_{k}" if not k.startswith("slurm_") else k: v for k, v in slurm.params.items()}
            if slurm.partition:
                extra["slurm_partition"] = slurm.partition
            if workers:
                extra["slurm_array_parallelism"] = workers
            self.executor.update_parameters(timeout_min=slurm.time_min, **common, **extra)
        else:
            self.limit = workers or 1  # the local executor starts every job it is given at once
            # no time limit on this machine (submitit's local default is 2 minutes)
            self.executor.update_parameters(timeout_min=60 * 24 * 365, **common)

    def start(self, jobs):
        with _repo_on_pythonpath(), self.executor.batch():  # one job array on Slurm
            submitted = [self.executor.submit(_run_one, *job.args) for job in jobs]
        for job, handle in zip(jobs, submitted):
            job.handle = handle

    def wait(self, jobs, timeout):
        deadline = time.monotonic() + timeout
        while True:
            done = [j for j in jobs if j.handle.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.2, timeout))

    def outcome(self, job):
        return job.handle.result()

    def stop(self, jobs):
        for job in jobs:
            if self.cluster == "local":  # the job's controller forwards SIGTERM to the run (cancel sends SIGINT,
                _terminate(int(job.handle.job_id))  # then SIGKILL a second later)
            else:
                job.handle.cancel(check=False)  # scancel: SIGTERM to the run, SIGKILL after KillWait


# ---- the loop every executor shares ---------------------------------------------------------


class SweepProgress:
    """A header line, one tqdm bar for the sweep (runs done / to train, ETA) and one line per
    finished run on stdout, written above the bar."""

    def __init__(self, n_runs: int, n_skipped: int, n_todo: int, where: str, echo: bool, bar: Optional[bool]):
        from tqdm import tqdm

        self.echo, self.n_todo, self.n_done = echo, n_todo, 0
        self.tqdm = tqdm
        if echo:
            print(f"sweep: {n_runs} runs: {n_skipped} done already (skipped), {n_todo} to train {where}", flush=True)
        show = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=n_todo, desc="sweep", unit="run", file=sys.stderr, dynamic_ncols=True,
                        disable=not (echo and show and n_todo))

    def finished(self, o: SweepOutcome) -> None:
        self.n_done += 1
        if self.echo:
            mse = "—" if o.eval_mse is None else f"{o.eval_mse:.3e}"
            wall = "" if o.wall_time_s is None else f"{o.wall_time_s:.1f} s"
            why = f"  {o.message.splitlines()[0]}" if o.status != "ok" and o.message else ""
            width = len(str(self.n_todo))
            self.tqdm.write(f"[{self.n_done:>{width}}/{self.n_todo}] {o.status:<11} mse {mse:<9}  {wall:>9}  "
                            f"{o.config_hash}  {o.label}{why}", file=sys.stdout)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_sweep(configs: Iterable[RunConfig], results_dir: str | Path = "results", *, workers: Optional[int] = None,
              executor: str = "local", force: bool = False, threads_per_run: Optional[int] = None,
              cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, slurm: Optional[SlurmOptions] = None,
              cluster: Optional[str] = None, echo: bool = False, progress: Optional[bool] = None
              ) -> list[SweepOutcome]:
    """Train every config without a finished record; return one outcome per unique config.

    workers: runs at once (local processes, submitit's local jobs, Slurm's array parallelism);
    default 1 on this machine, no limit on Slurm; Ray schedules by cpus_per_run / gpus_per_run.
    cluster: submitit's "slurm" or "local" (default: slurm where sbatch is on PATH).
    echo: print the header and one line per finished run; progress: the bar (None: if stderr is a tty).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results_dir = str(Path(results_dir).resolve())  # workers may run elsewhere
    check_writable(results_dir)
    configs = unique_configs(configs)
    outcomes = {c.hash: SweepOutcome(c.hash, c.label(), "skipped") for c in configs}
    todo = [c for c in configs if force or not is_finished(c, results_dir)]
    for c in todo:
        outcomes[c.hash].status = "not started"
    logs = Path(results_dir) / "logs"
    backend, where, workers = _backend_for(executor, todo, workers, cpus_per_run, gpus_per_run, slurm, cluster, logs)
    if threads_per_run is None:
        threads_per_run = (max(1, (os.cpu_count() or 1) // (workers or 1)) if executor == "local"
                           else max(1, int(cpus_per_run)))
    show = SweepProgress(len(configs), len(configs) - len(todo), len(todo), where, echo, progress)
    if todo and backend.logs_own_output and echo:
        show.tqdm.write(f"logs of each run: {logs}/<hash>.log", file=sys.stdout)
    elif todo and executor == "submitit" and echo:
        show.tqdm.write(f"logs of each job: {logs / 'submitit'}", file=sys.stdout)

    def make_job(c: RunConfig) -> _Job:
        log = str(logs / f"{c.hash}.log") if backend.logs_own_output else None
        return _Job(c, (c.model_dump_json(), results_dir, force, threads_per_run, log), time.perf_counter())

    def report(job: _Job, out: dict) -> None:
        o = outcomes[job.cfg.hash]
        o.status, o.eval_mse, o.error, o.message = out["status"], out.get("eval_mse"), out.get("error"), out.get("message")
        o.wall_time_s = out.get("wall_time_s", time.perf_counter() - job.started)
        show.finished(o)

    redirect = contextlib.nullcontext()
    if echo and not backend.logs_own_output:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # warnings of runs in this process go above the bar
    try:
        with redirect:
            drive(backend, todo, make_job, report, lambda job, err, stopping: _lost(job, err, results_dir, stopping))
    finally:
        show.close()
        backend.close()
    return [outcomes[c.hash] for c in configs]


def _backend_for(executor: str, todo: list[RunConfig], workers: Optional[int], cpus_per_run: float,
                 gpus_per_run: float, slurm: Optional[SlurmOptions], cluster: Optional[str], logs: Path
                 ) -> tuple[_Backend, str, Optional[int]]:
    """The executor's backend, where its runs train (for the header line) and the workers it runs at once.
    Runs on this machine are checked first (_preflight_all); nothing is started when one cannot train."""
    if executor == "submitit":
        backend: _Backend = _Submitit(logs / "submitit", cluster, workers, cpus_per_run, gpus_per_run,
                                      slurm or SlurmOptions())
        if backend.cluster == "local":
            _preflight_all(todo)
        return backend, f"as submitit {backend.cluster} jobs", workers
    if executor == "ray":  # Ray starts only once there is work
        return (_Ray(cpus_per_run, gpus_per_run) if todo else _InProcess()), "on Ray", workers
    workers = workers or 1
    _preflight_all(todo)
    backend = _InProcess() if workers == 1 or len(todo) <= 1 else _Processes(workers)
    return backend, f"locally, {workers} at a time", workers


def drive(backend: _Backend, items: list, make_job, report, lost, ready=None) -> bool:
    """The loop every executor shares (sweeps, and bench.main's cases): start items in order through
    `backend` (at most backend.limit in flight; an item waits until ready(item), when given), call
    report(job, outcome) as each ends (lost(job, error, stopping) gives the outcome of a worker that gave
    none). SIGINT/SIGTERM (bench.harness.interrupt), or an "interrupted" outcome, stops it: no more items
    start, those in flight are asked to checkpoint and stop; a second signal exits at once. Returns
    whether it stopped before every item ran."""
    pending, running, stopping = list(items), [], False
    with interrupt.handling_signals(), interrupt.at_hard_exit(lambda: backend.stop(running)):
        while pending or running:
            if interrupt.stop_requested() and not stopping:
                stopping, pending = True, []
                backend.stop(running)
            room = len(pending) if backend.limit is None else backend.limit - len(running)
            chosen = [i for i, item in enumerate(pending) if ready is None or ready(item)][:max(0, room)]
            if chosen:
                jobs, picked = [make_job(pending[i]) for i in chosen], set(chosen)
                pending = [item for i, item in enumerate(pending) if i not in picked]
                backend.start(jobs)
                running += jobs
            if not running:
                if pending:  # nothing can start: what they wait for will not come
                    raise RuntimeError(f"{len(pending)} items wait for items that never ran")
                continue
            for job in backend.wait(running, timeout=0.2):  # a stop request is passed on within 0.2 s
                running.remove(job)
                try:
                    out = backend.outcome(job)
                except Exception as err:  # the worker died, or the executor lost it
                    out = lost(job, err, stopping)
                report(job, out)
                if out["status"] == "interrupted" and not stopping:
                    # a stop reached a run (it checkpointed): start no more, a rerun resumes
                    stopping, pending = True, []
    return stopping


def _preflight_all(todo: list[RunConfig]) -> None:
    """Check every run before starting any (this machine is the one they train on)."""
    from bench.harness.train import preflight

    failed = []
    for c in todo:
        try:
            preflight(c)
        except RunConfigError as err:
            failed.append(f"{c.hash} {c.label()}: {err}")
    if failed:
        raise RunConfigError(f"{len(failed)} of {len(todo)} runs cannot train on this machine, nothing was "
                             f"started; first: {failed[0]}")


def _lost(job: _Job, err: Exception, results_dir: str, stopping: bool) -> dict:
    """The outcome of a run whose worker gave none. While the sweep stops, a worker ended by the
    stop is an interrupted run; otherwise the run failed, and its record says so."""
    from bench.solvers.matrix_free import first_line

    message = f"{type(err).__name__}: {first_line(err)}"
    if stopping:
        return {"status": "interrupted", "message": f"stopped before it reported ({message})"}
    record_failure(job.cfg, results_dir, message, traceback_text=str(err),
                   wall_time_s=time.perf_counter() - job.started)
    return {"status": "failed", "message": message, "error": str(err)}
