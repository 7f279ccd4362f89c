"""results/final_states/MANIFEST.json against the folder and the code, both ways: every file listed, every listed
file here and unchanged, every reader real (derived again from the grids, the stored evaluations and the
studies' committed outputs), each file holding what the manifest says; and a weights-only final state loading
to the model its record scored."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from bench.cli import MODULES
from bench.harness.final_states import is_weights_only
from bench.harness.records import load_model, load_result
from bench.reporting import manifest
from primitives import stream_generator

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDER = RESULTS / "final_states"


@pytest.fixture(scope="module")
def listed() -> dict[str, dict]:
    data = json.loads(manifest.manifest_path(RESULTS).read_text())
    return {e["file"]: e for e in data["files"]}


def test_every_file_is_listed_and_every_listed_file_is_here_unchanged(listed):
    here = {p.name for p in FOLDER.glob("*.pt")}
    assert sorted(here - set(listed)) == [], "final states the manifest does not list"
    assert sorted(set(listed) - here) == [], "listed final states that are not here"
    for name, e in listed.items():
        path = FOLDER / name
        assert path.stat().st_size == e["bytes"], name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"], name


def test_every_reader_is_real_and_every_file_is_read(listed):
    derived = manifest.readers(RESULTS)
    tables_made = {p.stem for p in (RESULTS / "tables").glob("*.md")}
    for name, e in listed.items():
        run = Path(name).stem
        assert e["read_by"] == derived.get(run), f"{name}: the manifest's readers are not what reads it"
        assert e["read_by"]["tables"] or e["read_by"]["subcommands"], f"{name}: nothing reads it"
        assert set(e["read_by"]["tables"]) <= tables_made, name
        assert set(e["read_by"]["subcommands"]) <= set(MODULES), name


def test_each_file_holds_what_the_manifest_says(listed):
    for name, e in listed.items():
        state = torch.load(FOLDER / name, map_location="cpu", weights_only=True)
        assert state["config_hash"] == Path(name).stem and state["status"] == "ok", name
        full = any(s in e["read_by"]["subcommands"] for s in manifest.NEEDS_FULL_STATE)
        assert is_weights_only(state) == (not full), f"{name}: weights only unless a reader needs the full state"
        assert e["holds"] == ("weights" if is_weights_only(state) else "full state (weights, optimizer and trainer)")
        if is_weights_only(state):
            assert set(state) == {"format", "config_hash", "config", "status", "result", "model", "weights_only"}


def test_the_folder_is_small():
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 40e6


def test_a_weights_only_final_state_gives_the_model_its_record_scored(one_thread):
    """The eval MSE of run 7f5a8ebf71daa68b (linear attention, grid 8's GD step on slices) from its weights-only
    final state, computed as training computes it. Within 1e-6 relative, not to the bit: scored again, the run's
    weights give 1.03124266e-2 against the record's 1.03124277e-2, from the full final state as from this one
    (their tensors are bit-identical): the last bits of the arithmetic of a fresh load differ from the run's."""
    run = "7f5a8ebf71daa68b"
    assert is_weights_only(torch.load(FOLDER / f"{run}.pt", weights_only=True))
    record = load_result(run, RESULTS)
    cfg = record.config
    model, task = load_model(cfg, RESULTS).eval(), cfg.build_task()
    batch = task.sample(cfg.eval_size, generator=stream_generator(cfg.seed, "eval"), dtype=cfg.torch_dtype)
    with torch.no_grad():
        preds = [model(batch.inputs[i:i + cfg.batch_size]).to(torch.float64)
                 for i in range(0, cfg.eval_size, cfg.batch_size)]
    assert task.metrics(torch.cat(preds), batch)["mse"] == pytest.approx(record.eval_mse, rel=1e-6)
