"""Run records on disk: they load anywhere as data, bad files are set aside or skipped by name,
and two processes on one results folder never train one run at once."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.reporting import tables
from bench.cli import main
from bench.harness.config import STORED, RunConfig, load_stored_config, make_run_config
from bench.harness.records import (
    RECORD_FORMAT,
    BadFileError,
    NewerRecordError,
    RunResult,
    checkpoint_path,
    load_checkpoint,
    load_results,
    read_record,
    record_failure,
    record_path,
)
from bench.harness.train import run

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "results" / "runs").glob("*.json"))

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(task={"name": "multiply", "params": {"width": 4, "length": 8}},
            model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
            steps=6, batch_size=8, eval_size=16, eval_every=2)
TINY_FLAGS = ["--task", "multiply", "--task-param", "width=4", "--task-param", "length=8", "--model", "baseconv",
              "--model-param", "width=8", "--model-param", "depth=1", "--steps", "6", "--batch-size", "8",
              "--eval-size", "16", "--eval-every", "2", "--progress", "off"]


def tiny(**overrides) -> RunConfig:
    return make_run_config(**{**TINY, **overrides})


def numbers(r):
    return (r.eval_mse, r.best_eval_mse, r.train_loss, [p.eval_mse for p in r.curve])


def test_committed_records_load_as_data_and_keep_their_hashes(monkeypatch):
    """Every record in results/runs loads without building a model, under the hash that names it."""
    import architectures

    def no_building(*a, **k):
        raise AssertionError("loading a record built a model")

    monkeypatch.setattr(architectures.registry, "SequenceModel", no_building)
    assert len(COMMITTED) >= 161
    t0 = time.perf_counter()
    for path in COMMITTED:
        record = read_record(path)
        assert record.config.hash == record.config_hash == path.stem, path.name
    assert time.perf_counter() - t0 < 30  # data only: well under a second per record


def test_a_gpu_record_loads_and_tabulates_on_a_cpu(tmp_path):
    data = json.loads(COMMITTED[0].read_text())
    data["config"]["device"] = "cuda"
    cfg = load_stored_config(data["config"])  # valid on a machine without CUDA: a config is data
    data["config_hash"] = cfg.hash
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{cfg.hash}.json").write_text(json.dumps(data))
    (record,) = load_results(tmp_path)
    assert record.config.device == "cuda" and record.eval_mse == data["eval_mse"]
    row = tables.grid_frame([cfg], tables.records_by_hash(tmp_path)).iloc[0]
    assert row["status"] == data["status"] and row["eval_mse"] == data["eval_mse"]


def test_a_record_whose_model_parameter_is_gone_is_named_in_one_line(tmp_path):
    data = json.loads(COMMITTED[0].read_text())
    data["config"]["model"]["params"]["retired_knob"] = 3
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "0000000000000000.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadFileError) as info:
        read_record(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "retired_knob" in message and "unknown parameter" in message
    assert "\n" not in message
    skipped = []
    assert load_results(tmp_path, on_bad=skipped.append) == []
    assert len(skipped) == 1 and "retired_knob" in skipped[0] and str(path) in skipped[0]


def test_truncated_record_is_set_aside_and_retrained_by_run(tmp_path, capsys, caplog):
    assert main(["run", *TINY_FLAGS, "--results", str(tmp_path)]) == 0
    first = json.loads(capsys.readouterr().out)
    path = Path(first["record"])
    original = read_record(path)
    path.write_bytes(path.read_bytes()[:100])  # a record cut short, e.g. by a full disk
    with caplog.at_level(logging.WARNING, logger="bench"):
        assert main(["run", *TINY_FLAGS, "--results", str(tmp_path)]) == 0
    again = json.loads(capsys.readouterr().out)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert str(path) in warnings[0] and "moved aside" in warnings[0]
    (aside,) = path.parent.glob(f"{path.name}.bad-*")
    assert len(aside.read_bytes()) == 100  # renamed, never deleted
    assert again["status"] == "ok" and numbers(read_record(path)) == numbers(original)  # retrained, same bits


def test_a_record_from_newer_code_is_kept_and_named_never_retrained(tmp_path, capsys):
    """Newer code writes a field this code does not know and raises record_format: this code says
    so in one line and leaves the file alone (run, a failed-run record and tables alike)."""
    cfg = tiny()
    assert main(["run", *TINY_FLAGS, "--results", str(tmp_path)]) == 0
    path = Path(json.loads(capsys.readouterr().out)["record"])
    data = json.loads(path.read_text())
    assert data["record_format"] == RECORD_FORMAT
    data.update(record_format=RECORD_FORMAT + 1, status="interrupted", a_field_from_the_future=1)
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(NewerRecordError) as info:
        run(cfg, tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "newer code" in message and "git pull" in message
    assert record_failure(cfg, tmp_path, RuntimeError("a worker died")) is None
    skipped = []
    assert load_results(tmp_path, on_bad=skipped.append) == [] and "newer code" in skipped[0]
    assert path.read_bytes() == before and not list(path.parent.glob("*.bad-*"))  # untouched, not set aside


def test_a_record_without_a_format_is_read_as_the_current_one():
    data = json.loads(COMMITTED[0].read_text())
    data.pop("record_format", None)
    assert RunResult.model_validate(data, context=STORED).record_format == RECORD_FORMAT


def test_tables_skip_a_truncated_record_and_name_it(tmp_path, capsys):
    from bench import grids

    cfgs = grids.primitives("ci")[:2]
    for cfg in cfgs:
        src = REPO / "results" / "runs" / f"{cfg.hash}.json"
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / src.name).write_bytes(src.read_bytes())
    bad = tmp_path / "runs" / f"{cfgs[1].hash}.json"
    bad.write_bytes(bad.read_bytes()[:100])
    out = tmp_path / "out"
    assert main(["tables", "--results", str(tmp_path), "--no-iterate", "--tables", str(out / "t"),
                 "--figures", str(out / "f")]) == 0
    err = capsys.readouterr().err
    assert f"skipping {bad}" in err and "Invalid JSON" in err
    assert "1 of " in (out / "t" / "primitives.md").read_text()  # the good record is in the table


def test_corrupt_checkpoint_is_set_aside_and_the_run_trained_again(tmp_path, caplog):
    cfg = tiny(checkpoint_every=2)
    reference = run(cfg, tmp_path / "ref", progress=False)
    record_path(cfg, tmp_path / "ref").unlink()  # a lost record: the checkpoint would be read next
    ckpt = checkpoint_path(cfg, tmp_path / "ref")
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(BadFileError, match="not a readable checkpoint"):
        load_checkpoint(cfg, tmp_path / "ref")
    with caplog.at_level(logging.WARNING, logger="bench"):
        again = run(cfg, tmp_path / "ref", progress=False)
    assert any(str(ckpt) in r.getMessage() and "moved aside" in r.getMessage() for r in caplog.records)
    assert list(ckpt.parent.glob(f"{ckpt.name}.bad-*"))
    assert again.resumed_at == [] and numbers(again) == numbers(reference)
    assert load_checkpoint(cfg, tmp_path / "ref")["step"] == cfg.steps  # a readable checkpoint again


CHILD = """
import json, os, sys, time, torch
torch.set_num_threads(1)
import architectures
from bench.harness.config import EXTRA_MODELS, load_run_config
from bench.harness.train import run

class Slow(torch.nn.Module):  # sleeps, so that the two processes overlap; numerics untouched
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        time.sleep(0.03)
        return self.inner(x)

EXTRA_MODELS["slow_baseconv"] = lambda task, **p: Slow(architectures.build_model("baseconv", task, **p))
if len(sys.argv) > 3:  # the second process: start once the first one is training (it has checkpointed)
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.005)
r = run(load_run_config(sys.argv[1]), sys.argv[2], progress=False)
print(json.dumps({"status": r.status, "started_at": r.started_at, "wall_time_s": r.wall_time_s,
                  "resumed_at": r.resumed_at}))
"""


def test_two_processes_never_train_one_run_at_once(tmp_path):
    """The second process waits for the first one's lock, then returns the record it wrote."""
    import architectures

    from bench.harness.config import EXTRA_MODELS

    EXTRA_MODELS["slow_baseconv"] = lambda task, **p: architectures.build_model("baseconv", task, **p)
    try:
        cfg = tiny(steps=150, eval_every=50, checkpoint_every=10,
                   model={"name": "slow_baseconv", "params": TINY["model"]["params"]})
    finally:
        EXTRA_MODELS.pop("slow_baseconv", None)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def child(*wait_for):
        return subprocess.Popen([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(tmp_path), *wait_for],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = child()
    second = child(str(checkpoint_path(cfg, tmp_path)))
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    a, b = json.loads(out1), json.loads(out2)
    assert a == b and a["status"] == "ok" and a["resumed_at"] == []  # one training, one record
    assert "another process holds" in err2 and "another process holds" not in err1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"{cfg.hash}.json"]  # no temp files
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [f"{cfg.hash}.pt"]
    assert json.loads(record_path(cfg, tmp_path).read_text())["started_at"] == a["started_at"]


def test_run_sets_a_truncated_final_state_aside_in_one_line_and_starts_over(tmp_path):
    """`python -m bench run` meets a cut-short final state (its checkpoint and record gone, as on a fresh
    clone): one warning line naming the file on stderr, the file kept aside, the run trained again."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench", "run", *TINY_FLAGS, "--keep-final-state", "true", "--results", str(tmp_path)]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    original = read_record(Path(json.loads(first.stdout)["record"]))
    cfg = original.config
    kept = tmp_path / "final_states" / f"{cfg.hash}.pt"
    checkpoint_path(cfg, tmp_path).unlink()
    record_path(cfg, tmp_path).unlink()
    kept.write_bytes(kept.read_bytes()[:200])
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(kept) in lines[0] and "moved aside" in lines[0], again.stderr
    (aside,) = kept.parent.glob(f"{kept.name}.bad-*")
    assert len(aside.read_bytes()) == 200  # kept, never deleted
    assert numbers(read_record(record_path(cfg, tmp_path))) == numbers(original)  # trained again, same bits
    assert load_checkpoint(cfg, tmp_path)["step"] == cfg.steps
