"""Out-of-tree mixers by import path ("package.module:Class"): the README's and docs/plugins.md's
examples and both constructor shapes run from a folder outside the repo, how a class is built
(by keyword, or positionally), every bad-input message, hashing, weights, grid substitution, tables."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import architectures as A
from bench.cli import main
from bench.harness.config import RunConfigError, load_run_config, make_run_config
from bench.harness.sweep import with_model
from bench.harness.train import preflight
from primitives import make_task

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")

MIXERS = '''
import torch
import torch.nn as nn


class Gate(nn.Module):
    """x * sigmoid(W x): no sequence mixing, `scale` multiplies the output."""

    def __init__(self, d_model, l_max, scale=1.0):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.scale = scale

    def forward(self, x):
        return self.scale * x * torch.sigmoid(self.proj(x))


class GateTwin(Gate):
    """The same class under another name."""


class Headed(Gate):
    def __init__(self, d_model, l_max, heads=1):
        super().__init__(d_model, l_max)
        self.heads = heads


class Filtered(nn.Module):
    """A parameter that is not an nn.Linear (kept from the constructor) and a zero-argument
    reset_parameters (the nn.Module convention, which the backbone must not call with a generator)."""

    def __init__(self, d_model, l_max):
        super().__init__()
        self.filter = nn.Parameter(torch.randn(l_max, d_model))

    def reset_parameters(self):
        raise AssertionError("not called")

    def forward(self, x):
        return x * self.filter[: x.shape[1]]


class Narrow(nn.Module):
    def __init__(self, d_model, l_max):
        super().__init__()

    def forward(self, x):
        return x[..., :3]


class Pair(Narrow):
    def forward(self, x):
        return x, x


class Broken(Narrow):
    def __init__(self, d_model, l_max):
        raise RuntimeError("no weights today")


class Needs(Narrow):
    def __init__(self, d_model, l_max, order):
        super().__init__(d_model, l_max)


class OneArg(nn.Module):
    def __init__(self, d_model):
        super().__init__()

    def forward(self, x):
        return x


class NoWidth(nn.Module):
    def __init__(self, dim):
        super().__init__()


class Recorder(nn.Module):
    """zoology's shape: keyword-built, no l_max; keeps what it was given."""

    def __init__(self, d_model, num_heads=1, causal=False, layer_idx=None, **kwargs):
        super().__init__()
        self.given = dict(d_model=d_model, num_heads=num_heads, causal=causal, layer_idx=layer_idx, **kwargs)

    def forward(self, x):
        return x


class Positional(Recorder):
    """The positional form under other names: (dim, seq_len) with no defaults."""

    def __init__(self, dim, seq_len, layer_idx=None):
        nn.Module.__init__(self)
        self.given = dict(dim=dim, seq_len=seq_len, layer_idx=layer_idx)


class NotAModule:
    def __init__(self, d_model, l_max):
        pass


def a_function(d_model, l_max):
    return None


instance = Gate(4, 4)
'''


@pytest.fixture(scope="module")
def mixers(tmp_path_factory):
    """The module above as pb_test_mixers (and one that fails to import) on sys.path."""
    folder = tmp_path_factory.mktemp("mixers")
    (folder / "pb_test_mixers.py").write_text(MIXERS)
    (folder / "pb_test_broken_import.py").write_text("import pb_test_no_such_dependency\n")
    sys.path.insert(0, str(folder))
    yield "pb_test_mixers"
    sys.path.remove(str(folder))
    for name in ("pb_test_mixers", "pb_test_broken_import"):
        sys.modules.pop(name, None)


def run_config(name: str, steps: int = 2, **params):
    return make_run_config(task={"name": "multiply"}, model={"name": name, "params": params}, steps=steps,
                           batch_size=4, eval_size=8)


def config_error(name: str, **params) -> str:
    with pytest.raises(RunConfigError) as info:
        run_config(name, **params)
    return str(info.value)


# ---- the README's example, from a folder outside the repo -----------------------------------


def test_readme_example_runs_from_a_folder_outside_the_repo(tmp_path, monkeypatch):
    """The mixer of README "Benchmark your own architecture", trained a few steps by `python -m bench run`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Benchmark your own architecture\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.startswith("# mymixer.py\n") and "--model mymixer:MyMixer" in section
    (tmp_path / "mymixer.py").write_text(code)
    record = train_outside(tmp_path, ["--task", "multiply", "--model", "mymixer:MyMixer", "--model-param", "width=16"])
    assert record["config"]["model"] == {"name": "mymixer:MyMixer", "params": {"width": 16}}
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_run_config(record["config"]).hash == record["config_hash"]  # the record loads, under its hash
    finally:
        sys.modules.pop("mymixer", None)


# ---- bad input, in the user's language, before anything trains -------------------------------


def test_a_module_that_is_not_on_the_path_says_where_it_looked(mixers):
    msg = config_error("pb_test_no_such_module:Mixer")
    assert msg.startswith("invalid run config: model.name: model 'pb_test_no_such_module:Mixer': cannot import module "
                          "'pb_test_no_such_module': no module named 'pb_test_no_such_module' in sys.path (")
    assert sys.path[1] in msg  # the folders it tried
    assert "the folder that holds pb_test_no_such_module.py (or the package pb_test_no_such_module/) must be on " \
           "PYTHONPATH" in msg


def test_a_missing_submodule_names_the_package_that_was_found(mixers):
    msg = config_error("bench.no_such_module:Mixer")
    assert msg == ("invalid run config: model.name: model 'bench.no_such_module:Mixer': cannot import module "
                   f"'bench.no_such_module': package 'bench' ({REPO / 'bench'}) has no module 'no_such_module'")


def test_a_module_that_fails_to_import_names_the_failure(mixers):
    msg = config_error("pb_test_broken_import:Mixer")
    assert msg == ("invalid run config: model.name: model 'pb_test_broken_import:Mixer': importing module "
                   "'pb_test_broken_import' failed: No module named 'pb_test_no_such_dependency'")


def test_a_missing_attribute_lists_what_the_module_defines(mixers):
    msg = config_error(f"{mixers}:Gaet")
    assert msg.startswith(f"invalid run config: model.name: model '{mixers}:Gaet': module '{mixers}' (")
    assert msg.endswith("has no attribute 'Gaet'; it defines Broken, Filtered, Gate, GateTwin, Headed, Narrow, "
                        "Needs, NoWidth, NotAModule, OneArg, Pair, Positional, Recorder, a_function, instance")


@pytest.mark.parametrize("attr, what", [("NotAModule", "the class NotAModule"), ("a_function", "an instance of function"),
                                        ("instance", "an instance of Gate")])
def test_not_an_nn_module_class(mixers, attr, what):
    assert config_error(f"{mixers}:{attr}") == (
        f"invalid run config: model.name: model '{mixers}:{attr}' is {what}, not a torch.nn.Module subclass; a mixer is "
        "a class built as Class(d_model=..., **params) whose forward maps (b, l, d_model) -> (b, l, d_model)")


@pytest.mark.parametrize("name", ["pb_test_mixers:", "pb test:Gate", "pb_test_mixers:Gate:x"])
def test_a_malformed_import_path(mixers, name):
    assert config_error(name).endswith(f"an import path is MODULE:NAME (e.g. mypkg.mixers:MyMixer), got {name!r}")


def test_unknown_parameters_are_named_with_what_the_class_and_the_backbone_take(mixers):
    assert config_error(f"{mixers}:Gate", scale=2.0, sclae=2.0, depht=1) == (
        f"invalid run config: model.params: model '{mixers}:Gate': sclae, depht: neither a backbone parameter nor one "
        "Gate accepts (Gate takes scale; the backbone takes width, depth, prenorm, mlp, mlp_norm, mlp_factor, "
        "activation, residual, pos_emb, final_norm, max_len, init_std, seed)")


def test_heads_for_a_class_that_does_not_take_them_is_an_error_not_a_silent_no_op(mixers):
    assert config_error(f"{mixers}:Gate", heads=4) == (
        f"invalid run config: model.params: model '{mixers}:Gate': heads=4: only mixers read this and Gate does not "
        "take it (Gate takes scale)")
    run_config(f"{mixers}:Gate", heads=2)  # the default: nothing is lost
    assert run_config(f"{mixers}:Headed", heads=4).resolved_model.mixer_params() == {"heads": 4}


def test_a_required_parameter_and_a_signature_without_d_model(mixers):
    assert config_error(f"{mixers}:Needs") == (
        f"invalid run config: model.params: model '{mixers}:Needs': Needs needs order (no default); pass order=... as "
        "model parameters")
    assert config_error(f"{mixers}:NoWidth") == (
        f"invalid run config: model.params: model '{mixers}:NoWidth': the class must take d_model (built as "
        "NoWidth(d_model=..., **params)) or two positional parameters (NoWidth(d_model, l_max, **params)), but its "
        "signature is NoWidth(dim)")
    run_config(f"{mixers}:OneArg")  # (d_model) alone is a mixer: built as OneArg(d_model=64)


def test_backbone_parameters_keep_their_own_messages(mixers):
    assert config_error(f"{mixers}:Gate", width=0).startswith(
        f"invalid run config: model.params: model '{mixers}:Gate': width must be a positive integer (>= 1), got 0")


@pytest.mark.parametrize("attr, problem", [
    ("Narrow", "Narrow(d_model=64, l_max=40).forward must map (b, l, d_model) -> (b, l, d_model); on an input of "
               "shape (2, 40, 64) it returned (2, 40, 3)"),
    ("Pair", "Pair(d_model=64, l_max=40).forward must map (b, l, d_model) -> (b, l, d_model); on an input of shape "
             "(2, 40, 64) it returned tuple"),
    ("Broken", "Broken(d_model=64, l_max=40) raised RuntimeError: no weights today"),
])
def test_the_build_checks_the_shape_on_a_tiny_input(mixers, attr, problem):
    cfg = run_config(f"{mixers}:{attr}")  # valid as data: validating builds nothing
    with pytest.raises(RunConfigError) as info:
        preflight(cfg)
    assert str(info.value) == f"invalid run config: model.params: model '{mixers}:{attr}': {problem}"


# ---- the model: where it goes, its weights, its hash ------------------------------------------


def test_the_mixer_sits_where_a_builtin_one_does(mixers):
    task = make_task("multiply")
    model = A.build_model(f"{mixers}:Gate", task, width=8, depth=3, scale=0.5)
    builtin = A.build_model("mlp", task, width=8, depth=3)
    assert [type(b.mixer).__name__ for b in model.blocks] == ["Gate"] * 3
    assert model.blocks[0].mixer.scale == 0.5
    # the same backbone around it: everything outside the mixers has the same names and shapes
    outside = lambda m: {k: v.shape for k, v in m.state_dict().items() if ".mixer." not in k}
    assert outside(model) == outside(builtin)
    assert model(torch.randn(2, 40, 20)).shape == (2, 40, 10)


def test_the_seed_fixes_every_weight_and_the_config_rebuilds_the_model(mixers):
    task = make_task("multiply")
    build = lambda **p: A.build_model(f"{mixers}:Filtered", task, width=8, depth=2, **p)
    torch.manual_seed(123)
    a = build(seed=1)
    torch.manual_seed(456)  # the global RNG's state does not matter
    b = build(seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0].mixer.filter, build(seed=2).blocks[0].mixer.filter)
    assert not torch.equal(a.blocks[0].mixer.filter, a.blocks[1].mixer.filter)  # each block draws its own
    again = A.model_from_config(a.config.model_dump())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), again.state_dict().values()))


def test_the_hash_covers_the_class_path_and_its_parameters(mixers):
    base = run_config(f"{mixers}:Gate", width=8)
    assert base.model.name == f"{mixers}:Gate" and f'"name":"{mixers}:Gate"' in base.canonical_json()
    twin = run_config(f"{mixers}:GateTwin", width=8)  # the same class body, another path
    assert len({base.hash, twin.hash, run_config(f"{mixers}:Gate", width=8, scale=2.0).hash}) == 3
    assert run_config(f"{mixers}:Gate", width=8).hash == base.hash
    # the hashes these configs had when every class was built positionally: building by keyword renames no record
    assert (base.hash, run_config(f"{mixers}:Gate", width=8, scale=2.0).hash) == ("44ec15634e212148", "e0cbb6ac1c00559f")


# ---- how a class is built: by keyword where it names d_model, else positionally ------------------


def mixers_of(name: str, depth: int = 2, **params):
    return [b.mixer for b in A.build_model(name, make_task("multiply"), width=8, depth=depth, **params).blocks]


def test_a_class_that_names_d_model_is_built_by_keyword_with_what_it_names(mixers):
    # zoology's MHA shape: (d_model, num_heads=1, ..., layer_idx=None); l_max is not passed as it is not named
    assert [m.given for m in mixers_of(f"{mixers}:Recorder")] == [
        {"d_model": 8, "num_heads": 1, "causal": True, "layer_idx": 0},
        {"d_model": 8, "num_heads": 1, "causal": True, "layer_idx": 1}]
    # heads or num_heads names its heads parameter; other parameters go through **kwargs by name
    assert mixers_of(f"{mixers}:Recorder", heads=4, order=3)[0].given == {
        "d_model": 8, "num_heads": 4, "causal": True, "layer_idx": 0, "order": 3}
    assert mixers_of(f"{mixers}:Recorder", num_heads=2, causal=False)[1].given == {
        "d_model": 8, "num_heads": 2, "causal": False, "layer_idx": 1}
    assert mixers_of(f"{mixers}:Headed", num_heads=4)[0].heads == 4  # and num_heads for a class that names heads
    assert A.shared_parameter_names(f"{mixers}:Recorder")[-2:] == ["heads", "causal"]
    assert "heads" not in A.shared_parameter_names(f"{mixers}:Gate")


def test_the_positional_form_under_other_names_is_built_as_before(mixers):
    assert [m.given for m in mixers_of(f"{mixers}:Positional")] == [
        {"dim": 8, "seq_len": 40, "layer_idx": 0}, {"dim": 8, "seq_len": 40, "layer_idx": 1}]


@pytest.mark.parametrize("params, problem", [
    ({"l_max": 64}, "l_max: set by the backbone, not a parameter (l_max is the task's seq_len, or max_len)"),
    ({"d_model": 8, "layer_idx": 1}, "d_model, layer_idx: set by the backbone, not a parameter (d_model is width; "
                                     "layer_idx is the block's index)"),
    ({"heads": 4, "num_heads": 2}, "heads=4, num_heads=2: both name Recorder's num_heads; pass one"),
])
def test_what_the_backbone_supplies_is_not_a_parameter(mixers, params, problem):
    assert config_error(f"{mixers}:Recorder", **params) == (
        f"invalid run config: model.params: model '{mixers}:Recorder': {problem}")
    run_config(f"{mixers}:Recorder", heads=2, num_heads=2)  # the same value twice is one


# ---- both constructor shapes, trained from a folder outside the repo -----------------------------

LONG_CONV = '''
import torch
import torch.nn as nn


class LongConv(nn.Module):
    """A causal convolution whose filter spans the whole sequence: it needs l_max."""

    def __init__(self, d_model, l_max, decay=0.5):
        super().__init__()
        self.filter = nn.Parameter(torch.randn(d_model, l_max) * decay ** torch.arange(l_max))
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):  # (b, l, d) -> (b, l, d)
        L = x.shape[1]
        y = torch.fft.irfft(torch.fft.rfft(x.transpose(1, 2), n=2 * L) * torch.fft.rfft(self.filter[:, :L], n=2 * L),
                            n=2 * L)[..., :L]
        return self.proj(y.transpose(1, 2)) * x
'''


def docs_block(name: str) -> str:
    """The ```python block of docs/plugins.md that starts with `# name`."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "plugins.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(f"# {name}\n"))


def train_outside(folder: Path, argv: list[str]) -> dict:
    """`python -m bench run ARGV` from `folder`, with the folder and the repo on PYTHONPATH; its record."""
    assert REPO not in folder.resolve().parents
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "bench", "run", *argv, "--steps", "3", "--batch-size", "8", "--eval-size", "16",
            "--eval-every", "1", "--progress", "off", "--results", str(folder / "results")]
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    record = json.loads(Path(summary["record"]).read_text())
    assert record["status"] == "ok" and record["steps_done"] == 3 and math.isfinite(record["eval_mse"])
    return record


@pytest.mark.parametrize("module, code, cls, params, built", [
    ("pb_long_conv", LONG_CONV, "LongConv", {"decay": 0.9}, lambda m: tuple(m.filter.shape) == (16, 6)),
    ("mymixer", None, "CausalAttention", {"num_heads": 2}, lambda m: m.num_heads == 2),
], ids=["(d_model, l_max, ...)", "(d_model, num_heads=1, ...)"])
def test_both_constructor_shapes_train_from_a_folder_outside_the_repo(tmp_path, monkeypatch, module, code, cls, params,
                                                                      built):
    (tmp_path / f"{module}.py").write_text(code or docs_block(f"{module}.py"))
    argv = ["--task", "multiply", "--task-param", "length=6", "--task-param", "width=4", "--model", f"{module}:{cls}",
            "--model-param", "width=16"] + [a for k, v in params.items() for a in ("--model-param", f"{k}={v}")]
    record = train_outside(tmp_path, argv)
    assert record["config"]["model"] == {"name": f"{module}:{cls}", "params": {"width": 16, **params}}
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = load_run_config(record["config"])
        assert cfg.hash == record["config_hash"]
        assert all(built(b.mixer) for b in cfg.build_model().blocks)
    finally:
        sys.modules.pop(module, None)


# ---- every grid with the mixer in place of its models ------------------------------------------


def small_grid():
    def cfg(model, depth, **params):
        return make_run_config(task={"name": "multiply"}, steps=2,
                               model={"name": model, "params": {"width": 16, "heads": 2, "depth": depth, **params}})
    return [cfg("attention", 1), cfg("baseconv", 1, conv_kind="long"), cfg("attention", 1, heads=1),
            cfg("attention", 2, prenorm=False)]


def test_with_model_keeps_the_backbone_drops_the_mixer_and_merges(mixers):
    grid = small_grid()
    out = with_model(grid, f"{mixers}:Gate", {"scale": 2.0})
    assert [c.model.params for c in out] == [{"width": 16, "depth": 1, "scale": 2.0},
                                             {"width": 16, "depth": 2, "prenorm": False, "scale": 2.0}]
    assert {c.model.name for c in out} == {f"{mixers}:Gate"}
    # a class that takes heads keeps them: the heads=1 run stays apart
    assert [c.model.params.get("heads") for c in with_model(grid, f"{mixers}:Headed")] == [2, 1, 2]
    # a built-in target works alike: baseconv's conv_kind is dropped, heads kept
    assert [c.model.params for c in with_model(grid, "hyena")][:2] == [{"width": 16, "heads": 2, "depth": 1},
                                                                       {"width": 16, "heads": 1, "depth": 1}]
    with pytest.raises(RunConfigError, match=r"multiply/attention/adam/float32/seed0 \(config \w+\) with model "
                                             rf"'{mixers}:Gate': invalid run config: model.params: .*sclae"):
        with_model(grid, f"{mixers}:Gate", {"sclae": 1})


def test_sweep_dry_run_shows_the_substituted_and_merged_runs(mixers, tmp_path, capsys, monkeypatch):
    grid_module = types.ModuleType("pb_test_grid")
    grid_module.GRID = small_grid
    monkeypatch.setitem(sys.modules, "pb_test_grid", grid_module)
    argv = ["sweep", "pb_test_grid:GRID", "--model", f"{mixers}:Gate", "--model-param", "scale=2", "--dry-run",
            "--results", str(tmp_path / "r")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"pb_test_grid:GRID with {mixers}:Gate in place of every model: 4 runs -> 2 (runs that " \
                       "differed only in the replaced mixer are merged)"
    assert [line.split("  ", 3)[1:] for line in lines[1:]] == [
        ["todo", f"multiply/{mixers}:Gate/adam/float32/seed0", '{"depth": 1, "scale": 2, "width": 16}'],
        ["todo", f"multiply/{mixers}:Gate/adam/float32/seed0", '{"depth": 2, "prenorm": false, "scale": 2, "width": 16}']]
    assert main(["sweep", "pb_test_grid:GRID", "--model", f"{mixers}:Gaet", "--dry-run"]) == 2
    assert "has no attribute 'Gaet'" in capsys.readouterr().err
    assert main(["sweep", "pb_test_grid:GRID", "--model-param", "scale=2", "--dry-run"]) == 2


def test_every_ci_grid_takes_a_mixer(mixers):
    from bench import grids as G

    for name in G.GRIDS:
        configs = G.GRIDS[name]("ci")
        out = with_model(configs, f"{mixers}:Gate")
        assert 0 < len(out) <= len(configs), name
        assert {c.model.name for c in out} == {f"{mixers}:Gate"}, name


def test_the_headline_table_has_a_column_for_the_mixer(mixers):
    from bench.reporting.frames import grid_frame
    from bench.reporting.tables import headline_table

    configs = small_grid()[:1] + with_model(small_grid()[:1], f"{mixers}:Gate")
    df = grid_frame(configs, {}).assign(status="ok", eval_mse=[1e-3, 2e-5], floor=1e-15)
    table = headline_table(df)
    assert list(table.columns) == ["task", "attention", f"{mixers}:Gate", "float32 floor"]
    assert table.iloc[0].tolist() == ["multiply", "1.00e-03", "2.00e-05", "1.00e-15"]
