"""Tasks of your own by import path ("package.module:Class"): docs/plugins.md's primitive trained by
`python -m bench run --task` from a folder outside the repo, each bad-input case refused before
anything trains in one line (exit 2), the exactness check on every built-in task, and the hash."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.harness.config import RunConfigError, load_run_config, make_run_config
from primitives import TASKS, Task, TaskConfigError, make_task
from primitives.plugin import check_sampler

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


def docs_primitive() -> str:
    """The primitive of docs/plugins.md, the code block that starts with `# mytasks.py`."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "plugins.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith("# mytasks.py\n"))


BROKEN = '''
import torch
import torch.nn as nn

from primitives import Task
from primitives.base import round_to


class Square(Task):
    """y = x * x, token-wise; the base of the broken ones below."""

    length: int = 5
    width: int = 3

    @property
    def seq_len(self):
        return self.length

    @property
    def d_in(self):
        return self.width

    @property
    def d_out(self):
        return self.width

    def inputs(self, batch_size, generator, dtype):
        return self._draw((batch_size, self.length, self.width), generator, dtype)

    def _sample_exact(self, batch_size, generator, dtype):
        x = self.inputs(batch_size, generator, dtype)
        return x, self.targets(x, dtype), torch.ones(self.length, dtype=torch.bool)

    def targets(self, x, dtype):
        return x * x


class SquareTwin(Square):
    """The same class under another name."""


class WideTargets(Square):
    def targets(self, x, dtype):
        return torch.cat([x, x], dim=-1)


class FloatMask(Square):
    def _sample_exact(self, batch_size, generator, dtype):
        x, y, mask = super()._sample_exact(batch_size, generator, dtype)
        return x, y, mask.double()


class GlobalRNG(Square):
    def inputs(self, batch_size, generator, dtype):
        return round_to(torch.randn(batch_size, self.length, self.width, dtype=torch.float64), dtype)


class Log(Square):
    def targets(self, x, dtype):
        return torch.log(x)


class Unrounded(Square):
    def inputs(self, batch_size, generator, dtype):
        return torch.randn(batch_size, self.length, self.width, generator=generator, dtype=torch.float64)


class RoundsItself(Square):
    def inputs(self, batch_size, generator, dtype):
        x = torch.randn(batch_size, self.length, self.width, generator=generator, dtype=torch.float64)
        return x.to(dtype).to(torch.float64)


class RoundedTargets(Square):
    def targets(self, x, dtype):
        return (x * x).to(dtype).to(torch.float64)


class DtypeTargets(Square):
    def targets(self, x, dtype):
        return x * x * (1 + torch.finfo(dtype).eps)


class Raises(Square):
    def targets(self, x, dtype):
        raise RuntimeError("not today")


class NoShapes(Square):
    @property
    def d_out(self):
        raise NotImplementedError


class Module(nn.Module):
    pass
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """docs/plugins.md's mytasks.py and the broken tasks above (pb_test_tasks.py), in a folder outside
    the repo, on sys.path while this module's tests run."""
    path = tmp_path_factory.mktemp("tasks")
    assert REPO not in path.resolve().parents
    (path / "mytasks.py").write_text(docs_primitive())
    (path / "pb_test_tasks.py").write_text(BROKEN)
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))
    for name in ("mytasks", "pb_test_tasks"):
        sys.modules.pop(name, None)


def bench(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -m bench ARGV` in a fresh process, with the folder and the repo on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *argv], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


RUN = ["run", "--task", "mytasks:CumSum", "--task-param", "length=6", "--model", "baseconv", "--model-param", "width=8",
       "--steps", "3", "--batch-size", "8", "--eval-size", "16", "--eval-every", "1", "--progress", "off"]


@pytest.fixture(scope="module")
def trained(folder):
    """The docs' primitive trained by `python -m bench run --task mytasks:CumSum` (a few steps): its record."""
    proc = bench(folder, *RUN, "--results", str(folder / "results"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return json.loads(Path(summary["record"]).read_text())


# ---- the docs' primitive, trained from outside the repo --------------------------------------


def test_the_docs_primitive_trains_through_task(folder, trained):
    assert trained["status"] == "ok" and trained["steps_done"] == 3
    assert math.isfinite(trained["eval_mse"]) and 0 < trained["floor"] < 1e-12  # float32 rounding of a float64 sum
    assert trained["config"]["task"] == {"name": "mytasks:CumSum", "params": {"length": 6}}
    cfg = load_run_config(trained["config"])  # the record loads as data, under its own hash
    assert cfg.hash == trained["config_hash"]
    x, y = (getattr(cfg.build_task().sample(2, generator=torch.Generator().manual_seed(0)), f)
            for f in ("inputs", "exact_targets"))
    assert x.shape == y.shape == (2, 6, 4) and torch.equal(y, x.cumsum(dim=1))


def test_the_readme_shows_the_same_primitive():
    readme = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert docs_primitive() in readme


def test_the_run_appears_in_tables(folder, trained, capsys):
    assert main(["tables", "--results", str(folder / "results")]) == 0
    table = (folder / "results" / "tables" / "other_runs.md").read_text()
    row = next(line for line in table.splitlines() if trained["config_hash"] in line)
    assert "mytasks:CumSum" in row and "| ok " in row


def test_a_bad_task_exits_2_with_one_line_before_training(folder):
    proc = bench(folder, *RUN, "--task-param", "lenght=6", "--results", str(folder / "bad"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: invalid run config: task: task 'mytasks:CumSum': lenght: unknown parameter "
                           "(parameters: seed, length, width)\n")
    assert not (folder / "bad").exists()


# ---- each bad input, one line, before anything trains ----------------------------------------


def cli_error(folder: Path, capsys, task: str, *params: str) -> str:
    """The one line `python -m bench run --task TASK` writes to stderr (exit status 2), less its prefix."""
    argv = ["run", "--task", task, *(a for p in params for a in ("--task-param", p)), "--model", "mlp", "--steps", "1",
            "--results", str(folder / "never")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and not (folder / "never").exists()
    prefix = f"error: invalid run config: task: task {task!r}"
    assert err.startswith(prefix), err
    return err[len(prefix):].rstrip("\n")


def test_the_import(folder, capsys):
    assert cli_error(folder, capsys, "pb_no_such_tasks:Square").startswith(
        ": cannot import module 'pb_no_such_tasks': no module named 'pb_no_such_tasks' in sys.path (")
    assert re.fullmatch(r": module 'pb_test_tasks' \(.*pb_test_tasks.py\) has no attribute 'Sqaure'; it defines "
                        r"DtypeTargets, .*, WideTargets", cli_error(folder, capsys, "pb_test_tasks:Sqaure"))
    assert cli_error(folder, capsys, "pb_test_tasks:") == (
        ": an import path is MODULE:NAME (e.g. mytasks:MyTask), got 'pb_test_tasks:'")


@pytest.mark.parametrize("attr, what", [("Module", "the class Module"), ("torch", "an instance of module")])
def test_the_base_class(folder, capsys, attr, what):
    assert cli_error(folder, capsys, f"pb_test_tasks:{attr}") == (
        f" is {what}, not a subclass of primitives.Task (a task derives from primitives.Task and defines seq_len, "
        "d_in, d_out and _sample_exact; see docs/plugins.md)")


def test_the_parameters(folder, capsys):
    assert cli_error(folder, capsys, "mytasks:CumSum", "lenght=6", "width=2") == (
        ": lenght: unknown parameter (parameters: seed, length, width)")
    assert cli_error(folder, capsys, "mytasks:CumSum", "length=0") == (
        ": length: Input should be greater than 0 (parameters: seed, length, width)")
    assert cli_error(folder, capsys, "mytasks:CumSum", "length=\"six\"").startswith(": length: Input should be")


@pytest.mark.parametrize("attr, problem", [
    ("WideTargets", "_sample_exact(8, ...) must return float64 targets of shape (batch, seq_len, d_out) = (8, 5, 3), "
                    "got float64 (8, 5, 6)"),
    ("FloatMask", "the mask must be a bool tensor of shape (seq_len,) = (5,) with at least one scored position, got "
                  "float64 (5,) with 5 True"),
    ("GlobalRNG", "two draws from generators with the same seed differ: draw every random number from the generator "
                  "passed to _sample_exact (never the global RNG)"),
    ("Log", "targets of a drawn batch are not all finite (58 NaN or Inf entries)"),
    ("Unrounded", "inputs of a float32 draw are not float32 numbers: round them once to the training dtype (self._draw "
                  "or primitives.base.round_to), so the targets are computed from the numbers the model sees"),
    ("RoundsItself", "the inputs of a draw depend on its dtype beyond their rounding, so the exactness of its targets "
                     "cannot be checked: round inputs with self._draw or primitives.base.round_to only"),
    ("RoundedTargets", "targets are not exact: the float64 targets of a float32 draw differ from the class's float64 "
                       "computation on the same inputs by up to 2.92e-07 (they are float32 numbers: rounded to the "
                       "training dtype); compute targets in float64 from the float64 inputs and leave the cast to the "
                       "caller"),
    ("DtypeTargets", "targets are not exact: the float64 targets of a float32 draw differ from the class's float64 "
                     "computation on the same inputs by up to 1.18e-06 (they depend on the dtype the batch is drawn "
                     "in); compute targets in float64 from the float64 inputs and leave the cast to the caller"),
    ("Raises", "drawing a batch of 8 in float32 raised RuntimeError: not today"),
    ("Task", "Task must define the properties seq_len, d_in and d_out"),
    ("NoShapes", "NoShapes must define the properties seq_len, d_in and d_out"),
])
def test_one_drawn_batch(folder, capsys, attr, problem):
    assert cli_error(folder, capsys, f"pb_test_tasks:{attr}") == f": {problem}"


def test_a_task_without_a_sampler(folder):
    class Shaped(Task):
        seq_len = d_in = d_out = property(lambda self: 3)

    with pytest.raises(TaskConfigError, match=r"^Shaped must define _sample_exact\(batch_size, generator, dtype\) -> "):
        check_sampler(Shaped())


def test_the_sound_one_passes_and_validating_builds_no_model(folder, monkeypatch):
    import architectures.registry

    monkeypatch.setattr(architectures.registry, "SequenceModel", None)  # building a model would raise
    cfg = make_run_config(task={"name": "pb_test_tasks:Square"}, model={"name": "baseconv"}, steps=1)
    assert cfg.build_task().d_out == 3


# ---- the exactness check: no false alarm on any built-in task --------------------------------


@pytest.mark.parametrize("name, params", [(n, {}) for n in sorted(TASKS)] + [
    ("newton_schulz", {"operand": "M"}), ("read", {"a": 1, "b": 4}), ("icl_regression", {"sigma": 0.1})])
def test_every_built_in_task_keeps_the_contract_it_checks(name, params):
    check_sampler(make_task(name, **params))


# ---- the hash: the import path and the parameters ---------------------------------------------


def test_the_hash_covers_the_class_path_and_its_parameters(folder):
    def cfg(name, **params):
        return make_run_config(task={"name": name, "params": params}, model={"name": "mlp"}, steps=1)

    base = cfg("pb_test_tasks:Square", length=4)
    assert '"task":{"name":"pb_test_tasks:Square","params":{"length":4}}' in base.canonical_json()
    others = {cfg("pb_test_tasks:SquareTwin", length=4).hash, cfg("pb_test_tasks:Square", length=5).hash,
              cfg("pb_test_tasks:Square").hash, base.hash}
    assert len(others) == 4 and cfg("pb_test_tasks:Square", length=4).hash == base.hash
    assert base.label() == "pb_test_tasks:Square/mlp/adam/float32/seed0"
    with pytest.raises(RunConfigError, match=r"^invalid run config: task: task 'pb_test_tasks:Log': targets of a "):
        cfg("pb_test_tasks:Log")
