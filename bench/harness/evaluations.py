"""Stored evaluations: what is computed once from a run's final weights and kept as data beside its record,
so that `python -m bench tables` only formats.

    results/evaluations/<run hash>/<kind>-<key>.json      (run "reference": no run, e.g. true GD iterated)

Kinds (`SPECS`): the learned GD step applied iteratively (`gd_iteration`), the same step out of its training
distribution (`ood`), true GD and the exact constructions iterated on the same problems
(`gd_iteration_reference`), and a run's eval MSE on other held-out sets (`eval_spread`). Each is keyed by what
it depends on:

- the run: its config hash (the folder) and the fingerprint of its record (`record_fingerprint`: status, steps,
  eval MSE, end time), so a record trained again or edited makes its evaluations stale;
- the weights it was computed from (`weights_fingerprint`: the model's tensors, not the file, so a final state
  stripped to its weights keeps its evaluations);
- its own kind, version and parameters (`Spec.key`, in the file name): other parameters are another file.

`python -m bench evaluate` computes the missing or stale ones; `lookup` reads one back and says in a few words
why it cannot be used (missing, stale, weights changed, unreadable). An evaluation whose weights are gone and
that cannot be recomputed may be carried (source "carried"): kept from the table it was first written to, with
the summary numbers only, and marked as such wherever it is shown. One computed from weights trained again
that did not reproduce the record to the bit has source "retrained" and says so too.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from bench.harness.records import BadFileError, RunResult, atomic_write_text, cpu_name, load_checkpoint

REFERENCE = "reference"  # the folder of evaluations that belong to no run (true GD, the constructions)
# the command that makes a missing evaluation of a run, as tables print it (by kind; the rest: COMMAND)
COMMAND = "python -m bench evaluate --run {run}"
COMMANDS = {"eval_spread": "python -m bench eval-spread {run}"}


def command(kind: str, run: str) -> str:
    if run == REFERENCE:
        return "python -m bench evaluate"
    return COMMANDS.get(kind, COMMAND).format(run=run)


@dataclass(frozen=True)
class Spec:
    """What is evaluated: a kind, the version of the code that computes it, and its parameters."""

    kind: str
    version: int
    params: dict = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        text = json.dumps({"kind": self.kind, "version": self.version, "params": self.params}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def with_params(self, **params) -> "Spec":
        return Spec(self.kind, self.version, {**self.params, **params})


GD_PROBLEMS = {"problems": 256, "D": 5, "N": 20, "eta": 0.5, "seed": 0}
SPECS = {
    "gd_iteration": Spec("gd_iteration", 1, {"iterations": 150, **GD_PROBLEMS}),
    "gd_iteration_reference": Spec("gd_iteration_reference", 1, {
        "iterations": 150, **GD_PROBLEMS, "constructions": ["baseconv", "linear_attention"],
        "dtypes": ["float32", "float64"]}),
    "ood": Spec("ood", 1, {"shifted": ["x_scale", "a_scale"], "scales": [0.25, 0.5, 1.0, 2.0, 4.0],
                           "eval_size": 512, "seed": 0}),
    "eval_spread": Spec("eval_spread", 1, {"fresh": 8, "large": 16384, "fresh_seed": 1000}),
}


def spec(kind: str, **params) -> Spec:
    """SPECS[kind] with some parameters changed (e.g. spec("gd_iteration", iterations=300))."""
    return SPECS[kind].with_params(**params)


def folder(results_dir: str | Path) -> Path:
    return Path(results_dir) / "evaluations"


def path(results_dir: str | Path, run: str, s: Spec) -> Path:
    return folder(results_dir) / run / f"{s.kind}-{s.key}.json"


def record_fingerprint(record: RunResult) -> str:
    """What of a record an evaluation of its weights depends on: the run ended the same way."""
    text = json.dumps([record.config_hash, record.status, record.steps_done, record.eval_mse, record.finished_at])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_fingerprint(model_state: dict[str, torch.Tensor]) -> str:
    """A fingerprint of a model's weights (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha256()
    for name in sorted(model_state):
        t = model_state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def current_weights(run: str, results_dir: str | Path) -> tuple[Optional[str], Optional[str]]:
    """(fingerprint of the weights of `run` here, None) or (None, why not): no checkpoint or final state, or
    an unreadable one (the file named, in one line)."""
    try:
        state = load_checkpoint(run, results_dir)
    except BadFileError as err:
        return None, str(err)
    if state is None:
        return None, "no weights here"
    return weights_fingerprint(state["model"]), None


def jsonable(x: Any) -> Any:
    """Non-finite floats as None (JSON has no NaN), recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def store(results_dir: str | Path, run: str, s: Spec, result: Any, *, record: Optional[RunResult] = None,
          weights: Optional[str] = None, source: str = "computed", seconds: Optional[float] = None,
          note: Optional[str] = None) -> Path:
    """Write one evaluation (atomically); its path."""
    data = {"kind": s.kind, "version": s.version, "params": s.params, "key": s.key, "run": run,
            "record": None if record is None else record_fingerprint(record),
            "record_eval_mse": None if record is None else record.eval_mse,
            "weights": weights, "source": source, "note": note,
            "made": {"seconds": seconds, "machine": cpu_name(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(),
                     "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
            "result": jsonable(result)}
    target = path(results_dir, run, s)
    atomic_write_text(target, json.dumps(data, indent=1) + "\n")
    return target


@dataclass
class Found:
    """One evaluation looked up: `status` ok | carried | retrained (usable, marked) | missing | stale |
    weights changed | unreadable."""

    status: str
    data: Optional[dict] = None
    why: str = ""

    @property
    def usable(self) -> bool:
        return self.status in ("ok", "carried", "retrained")

    @property
    def result(self) -> Any:
        return None if self.data is None else self.data["result"]


def read(file: Path) -> dict:
    """One stored evaluation; BadFileError (one line naming the file) if it cannot be read."""
    try:
        data = json.loads(Path(file).read_text())
    except (OSError, ValueError) as err:
        raise BadFileError(file, f"not a readable evaluation ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or "result" not in data or "kind" not in data:
        raise BadFileError(file, "not a readable evaluation (no kind or result)")
    return data


def lookup(results_dir: str | Path, run: str, s: Spec, *, record: Optional[RunResult] = None,
           weights: tuple[Optional[str], Optional[str]] = (None, None)) -> Found:
    """The stored evaluation `s` of `run`, checked against its record and, where it names the weights it
    was computed from, against `weights` (current_weights: the fingerprint here, or why there is none)."""
    file = path(results_dir, run, s)
    make = f"`{command(s.kind, run)}`"
    if not file.exists():
        return Found("missing", why=f"not evaluated: {make}")
    try:
        data = read(file)
    except BadFileError as err:
        return Found("unreadable", why=f"evaluation unreadable ({err}): {make}")
    if record is not None and data.get("record") != record_fingerprint(record):
        return Found("stale", data, f"stale (the record changed since): {make}")
    fingerprint, problem = weights
    if data.get("weights") and fingerprint is None and problem not in (None, "no weights here"):
        return Found("weights changed", data, f"its final state is unreadable ({problem})")
    if data.get("weights") and fingerprint is not None and fingerprint != data["weights"]:
        return Found("weights changed", data, f"the weights here are not the ones evaluated: {make}")
    if data.get("source") == "carried":
        return Found("carried", data, "carried from an earlier table (the weights were not kept)")
    if data.get("source") == "retrained":
        return Found("retrained", data, data.get("note") or "retrained here")
    return Found("ok", data)


def stored(results_dir: str | Path, kind: str, on_bad: Callable[[str], None] = print) -> list[dict]:
    """Every readable stored evaluation of `kind` (any run, any parameters), by run; each unreadable one is
    skipped and `on_bad` gets one line naming it."""
    out = []
    for file in sorted(folder(results_dir).glob(f"*/{kind}-*.json")):
        try:
            out.append(read(file))
        except BadFileError as err:
            on_bad(f"skipping {err}")
    return out
