"""Final states kept as weights only: what a table or script reads of a finished run, without the optimizer's
and trainer's state (most of a full final state's bytes) that only training on from it would need.

A weights-only final state is a checkpoint dict that load_checkpoint and load_model read like any other
(format, config_hash, config, model) with the run's status and record (so a lost record can be rewritten
from it) and `weights_only: True`; training cannot go on from it (RunConfig.starts_from and extends need the
full state a run with keep_final_state writes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from bench.harness.records import atomic_torch_save, final_state_path

KEPT = ("format", "config_hash", "config", "status", "result", "model")


def weights_only(state: dict, result_json: Optional[str] = None) -> dict:
    """A checkpoint or final state reduced to what loading the run's model needs (KEPT); `result_json`
    replaces the record it carries (e.g. the committed record of a run trained again)."""
    out = {k: state[k] for k in KEPT if k in state}
    if result_json is not None:
        out["result"] = result_json
    out["model"] = {k: v.detach().to("cpu").clone() for k, v in state["model"].items()}
    out["weights_only"] = True
    return out


def is_weights_only(state: dict) -> bool:
    return bool(state.get("weights_only"))


def save_weights(state: dict, results_dir: str | Path, result_json: Optional[str] = None) -> Path:
    """Write `state` as RESULTS/final_states/<hash>.pt, weights only (atomically); its path."""
    path = final_state_path(state["config_hash"], results_dir)
    atomic_torch_save(weights_only(state, result_json), path)
    return path


def strip(path: str | Path) -> tuple[int, int]:
    """Rewrite the final state at `path` as weights only; (bytes before, bytes after)."""
    path = Path(path)
    before = path.stat().st_size
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not is_weights_only(state):
        atomic_torch_save(weights_only(state), path)
    return before, path.stat().st_size
