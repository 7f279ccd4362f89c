"""The manifest of results/final_states/ (MANIFEST.json beside the files): each file, its size and checksum,
what it holds (weights only, or the full state training and the solver need) and what reads it.

A final state is committed only where something reads it (docs/results.md): a table (through its stored
evaluation, bench.harness.evaluations, whose weights the table checks against the file), or a subcommand
that loads it. `readers` derives who reads each file from the code and the committed data; `build` makes the
manifest from the folder and `readers`; `python -m bench evaluate --manifest` writes it, and
tests/test_final_states_manifest.py checks it both ways (every file listed, every listed file here and
unchanged, every reader real).
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import torch

from bench.harness import evaluations as E
from bench.harness.final_states import is_weights_only
from bench.harness.records import atomic_write_text, load_result

MANIFEST = "MANIFEST.json"
# the subcommands that need more than the weights: they rebuild the run's optimizer from its final state
NEEDS_FULL_STATE = ("step-model",)


def manifest_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / "final_states" / MANIFEST


def readers(results_dir: str | Path, budget: str = "ci") -> dict[str, dict[str, list[str]]]:
    """Per run hash: the tables and subcommands that read its final state."""
    from bench import grids as G
    from bench.grids import registry
    from bench.reporting import learned_steps as L
    from bench.reporting.tables import frames_at

    results_dir = Path(results_dir)
    _, frames = frames_at(results_dir, G.get_budget(budget), log=lambda m: None)
    out: dict[str, dict[str, set]] = defaultdict(lambda: {"tables": set(), "subcommands": set()})
    for steps, names in ((L.grid3_steps(frames), ("gd_iteration", "ood")),
                         (L.grid8_steps(frames), ("to_the_limit_gd_iteration", "to_the_limit_ood"))):
        for _, r in steps.iterrows():
            out[r["hash"]]["tables"].update(names if r["dtype"] == "float32" else names[:1])
            out[r["hash"]]["subcommands"].add("evaluate")
    for data in E.stored(results_dir, "eval_spread", on_bad=lambda m: None):
        out[data["run"]]["tables"].add("eval_spread")
        out[data["run"]]["subcommands"].add("eval-spread")
    for path in (results_dir / "step_model").glob("*.json"):
        out[path.stem]["subcommands"].add("step-model")
    if budget in registry.grid_budgets("ode"):  # the ode subcommand loads grid 9's trained models
        for cfg in registry.grid_configs("ode", budget):
            out[cfg.hash]["subcommands"].add("ode")
    return {h: {k: sorted(v) for k, v in r.items()} for h, r in out.items()}


def describe(run: str, results_dir: Path) -> str:
    record = load_result(run, results_dir)
    if record is None:
        return "no record"
    eval_mse = "—" if record.eval_mse is None else f"{record.eval_mse:.3g}"
    return f"{record.config.label()}, {record.param_count:,} weights, eval MSE {eval_mse}"


def entry(path: Path, results_dir: Path, read_by: dict) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    full = not is_weights_only(state)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "holds": "full state (weights, optimizer and trainer)" if full else "weights",
            "run": describe(path.stem, results_dir),
            "read_by": read_by.get(path.stem, {"tables": [], "subcommands": []})}


def build(results_dir: str | Path, budget: str = "ci") -> dict:
    """The manifest of RESULTS/final_states as it is now."""
    results_dir = Path(results_dir)
    read_by = readers(results_dir, budget)
    files = sorted((results_dir / "final_states").glob("*.pt"))
    return {"about": "Each file of results/final_states: its size, sha256, what it holds and what reads it (tables "
                     "through their stored evaluations in results/evaluations; subcommands: python -m bench "
                     "SUBCOMMAND). Written by `python -m bench evaluate --manifest`; policy: docs/results.md.",
            "files": [entry(p, results_dir, read_by) for p in files]}


def write(results_dir: str | Path, budget: str = "ci") -> Path:
    path = manifest_path(results_dir)
    atomic_write_text(path, json.dumps(build(results_dir, budget), indent=1) + "\n")
    return path
