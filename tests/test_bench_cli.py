"""python -m bench: every subcommand has --help; run takes flags or a JSON config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import SUBCOMMANDS, main, parse_value
from bench.harness.records import load_result

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command):
    proc = subprocess.run([sys.executable, "-m", "bench", command, "--help"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"usage: python -m bench {command}" in proc.stdout


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in SUBCOMMANDS)


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-16") == 1e-16 and parse_value("true") is True
    assert parse_value("short") == "short" and parse_value("[1, 2]") == [1, 2] and parse_value("null") is None


FLAGS = ["--task", "multiply", "--task-param", "width=4", "--task-param", "length=8", "--model", "baseconv",
         "--model-param", "width=8", "--model-param", "depth=1", "--optim-param", "eps=1e-12", "--lr", "3e-3",
         "--schedule", "step", "--schedule-param", "every=2", "--steps", "4", "--batch-size", "8",
         "--eval-size", "16"]


def test_run_from_flags_and_from_a_config_file(tmp_path, capsys):
    assert main(["run", *FLAGS, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optimizer"] == {"name": "adam", "lr": 3e-3, "betas": [0.9, 0.999], "eps": 1e-12,
                                    "weight_decay": 0.0}
    assert printed["schedule"]["every"] == 2 and printed["task"]["params"] == {"width": 4, "length": 8}

    assert main(["run", *FLAGS, "--results", str(tmp_path), "--progress", "off"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "ok" and summary["config_hash"] == printed["config_hash"]
    assert load_result(summary["config_hash"], tmp_path).steps_done == 4

    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(printed))  # the printed config (with its hash) is a valid --config
    assert main(["run", "--config", str(config_file), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["config_hash"] == printed["config_hash"]
    assert main(["run", "--config", str(config_file), "--seed", "3", "--print-config"]) == 0
    reseeded = json.loads(capsys.readouterr().out)
    assert reseeded["seed"] == 3 and reseeded["optimizer"]["eps"] == 1e-12
    assert main(["run", "--config", str(config_file), "--optimizer", "sgd", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["optimizer"]["name"] == "sgd"  # adam's eps dropped


@pytest.mark.parametrize("argv,words", [
    (["--task", "multiply"], ["model: missing"]),
    (["--task", "nope", "--model", "baseconv"], ["unknown task 'nope'"]),
    (["--task", "multiply", "--model", "baseconv", "--dtype", "float16"], ["dtype", "float16"]),
    (["--task", "multiply", "--model", "baseconv", "--model-param", "width=-1"], ["width"]),
])
def test_bad_run_input_exits_2_with_a_message(argv, words, capsys):
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_unwritable_results_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", *FLAGS, "--results", str(blocker)]) == 2
    assert "not writable" in capsys.readouterr().err


def test_sweep_dry_run_and_bad_grid(tmp_path, capsys, monkeypatch):
    (tmp_path / "cli_grid.py").write_text(
        "from bench.harness.config import RunConfig\n"
        "GRID = [RunConfig(task={'name': 'multiply'}, model={'name': 'baseconv'}, steps=1)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["sweep", "cli_grid:GRID", "--dry-run", "--results", str(tmp_path / "r")]) == 0
    assert "todo" in capsys.readouterr().out
    assert main(["sweep", "cli_grid:NOPE"]) == 2
    assert "no attribute 'NOPE'" in capsys.readouterr().err


def test_every_run_config_field_can_be_set_from_the_command_line(capsys):
    from bench.cli import NESTED_FIELDS, run_parser
    from bench.harness.config import RunConfig

    flags = {a.dest for a in run_parser()._actions}
    assert {f for f in RunConfig.model_fields if f not in NESTED_FIELDS} <= flags  # derived from RunConfig
    argv = [*FLAGS, "--polish-patience", "3", "--set", "polish.name=levenberg_marquardt",
            "--set", "polish.train_size=8", "--set", "model.params.mlp=false", "--set", "optimizer.betas=[0.8,0.9]",
            "--print-config"]
    assert main(["run", *argv]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["polish"]["name"] == "levenberg_marquardt" and printed["polish"]["train_size"] == 8
    assert printed["polish_patience"] == 3 and printed["optimizer"]["betas"] == [0.8, 0.9]
    assert printed["model"]["params"] == {"width": 8, "depth": 1, "mlp": False}  # merged with --model-param
    assert main(["run", *FLAGS, "--set", "polish.colour=1"]) == 2
    assert "polish" in capsys.readouterr().err
