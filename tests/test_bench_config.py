"""RunConfig: validation errors name the field, hashes are stable, records are atomic."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from bench.harness.config import RunConfig, RunConfigError, load_run_config, make_run_config
from bench.harness.records import ResultsDirError, atomic_write, atomic_write_text, check_writable
from bench.harness.train import preflight, run

BASE = dict(
    task={"name": "multiply", "params": {"width": 4, "length": 8}},
    model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
    steps=10,
    batch_size=8,
    eval_size=16,
)


def cfg(**overrides) -> RunConfig:
    return make_run_config(**{**BASE, **overrides})


BAD_INPUTS = [
    # (overrides, words the message must contain)
    (dict(task={"name": "nope"}), ["task", "unknown task 'nope'", "multiply"]),
    (dict(task={"name": "multiply", "params": {"width": 21}}), ["task", "even input width", "21"]),
    (dict(task={"name": "multiply", "params": {"colour": 1}}), ["task", "colour", "unknown parameter"]),
    (dict(model={"name": "nope"}), ["model.name", "unknown model 'nope'", "baseconv"]),
    (dict(model={"name": "baseconv", "params": {"width": 0}}), ["model.params", "width", ">= 1"]),
    (dict(model={"name": "baseconv", "params": {"conv_kind": "huge"}}), ["model.params", "conv_kind"]),
    (dict(optimizer={"name": "rmsprop"}), ["optimizer", "'rmsprop'", "adam", "lbfgs"]),
    (dict(optimizer={"name": "adam", "lr": -1.0}), ["optimizer.lr", "greater than 0", "-1"]),
    (dict(optimizer={"name": "adam", "eps": -1e-16}), ["optimizer.eps", "greater than or equal to 0"]),
    (dict(optimizer={"name": "sgd", "momentum": 1.5}), ["optimizer.momentum", "less than 1"]),
    (dict(optimizer={"name": "adam", "momentum": 0.9}), ["optimizer.momentum", "unknown field"]),
    (dict(schedule={"name": "cosine"}), ["schedule", "'cosine'", "constant", "step", "adaptive"]),
    (dict(schedule={"name": "step", "gamma": 2.0}), ["schedule.gamma", "less than or equal to 1"]),
    (dict(schedule={"name": "adaptive", "gamma": 1.1}), ["schedule.gamma", "less than 1"]),
    (dict(dtype="float16"), ["dtype", "'float32' or 'float64'", "float16"]),
    (dict(device="tpu"), ["device", "'cpu', 'cuda'", "tpu"]),
    (dict(steps=0), ["steps", "greater than or equal to 1"]),
    (dict(batch_size=-3), ["batch_size", "greater than or equal to 1"]),
    (dict(eval_size=0), ["eval_size"]),
    (dict(seed=-1), ["seed"]),
    (dict(grad_clip=0.0), ["grad_clip", "greater than 0"]),
    (dict(ema_decay=1.0), ["ema_decay", "less than 1"]),
    (dict(learning_rate=1e-3), ["learning_rate", "unknown field"]),
    (dict(optimizer={"name": "lbfgs"}, schedule={"name": "adaptive"}), ["schedule", "'adaptive'", "full-batch"]),
    (dict(optimizer={"name": "lbfgs"}, grad_clip=1.0), ["grad_clip", "first-order"]),
    (dict(task={"name": "multiply", "params": {"width": float("nan")}}), ["task", "JSON"]),
]


@pytest.mark.parametrize("overrides,words", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_input_names_the_field(overrides, words):
    with pytest.raises(RunConfigError) as info:
        cfg(**overrides)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message  # one readable line, no pydantic dump


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_backend_the_device_cannot_run_is_rejected_before_training(monkeypatch, tmp_path):
    # Triton runs CPU tensors only in its interpreter; other test modules may have switched it on.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    c = cfg(model={"name": "baseconv", "params": {"width": 8, "depth": 1, "conv_backend": "triton"}})  # valid data
    with pytest.raises(RunConfigError) as info:
        run(c, tmp_path)
    assert "model.params" in str(info.value) and "cannot run on device 'cpu'" in str(info.value)
    assert "triton" in str(info.value) and not list((tmp_path / "runs").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_rejected_before_training(tmp_path):
    c = cfg(device="cuda")  # a config is data: it names a device, it does not need one
    with pytest.raises(RunConfigError, match="device: device 'cuda' needs CUDA"):
        preflight(c)
    with pytest.raises(RunConfigError, match="needs CUDA"):
        run(c, tmp_path)


def test_second_order_optimizer_too_many_params_is_rejected_before_training(tmp_path):
    c = cfg(optimizer={"name": "levenberg_marquardt", "max_params": 10})
    with pytest.raises(RunConfigError, match=r"optimizer: levenberg_marquardt .* more than max_params=10"):
        run(c, tmp_path)
    assert preflight(cfg()) == sum(p.numel() for p in cfg().build_model().parameters())


def test_resolved_model_has_the_defaults_and_validating_builds_nothing(monkeypatch):
    import architectures

    def no_building(*a, **k):
        raise AssertionError("validating a config built a model")

    monkeypatch.setattr(architectures.registry, "SequenceModel", no_building)
    c = cfg()
    resolved = c.resolved_model
    assert (resolved.width, resolved.depth, resolved.heads, resolved.mlp_factor) == (8, 1, 2, 4)
    assert (resolved.seq_len, resolved.d_in, resolved.d_out, resolved.seed) == (8, 4, 2, 0)
    assert cfg(seed=5).resolved_model.seed == 5  # the model's init seed defaults to the run's
    assert "resolved" not in c.canonical_json()  # derived, not hashed: hashes stay as they were


def test_missing_task_or_model():
    with pytest.raises(RunConfigError, match="model: Field required"):
        make_run_config(task={"name": "multiply"})


PINNED_CANONICAL_JSON = (
    '{"batch_size":8,"device":"cpu","dtype":"float32","ema_decay":0.98,"ema_lambda":0.0,"eval_every":null,'
    '"eval_size":16,"grad_clip":null,"max_consecutive_skips":100,'
    '"model":{"name":"baseconv","params":{"depth":1,"width":8}},'
    '"optimizer":{"betas":[0.9,0.999],"eps":1e-16,"lr":0.001,"name":"adam","weight_decay":0.0},'
    '"schedule":{"name":"constant"},"seed":0,"skip_grad_norm":null,"steps":10,'
    '"task":{"name":"multiply","params":{"length":8,"width":4}}}'
)


def test_hash_is_pinned_and_stable():
    """Changing the canonical form renames every stored result: this test makes it deliberate."""
    c = cfg()
    assert c.canonical_json() == PINNED_CANONICAL_JSON  # sorted keys, defaults in, checkpoint_every out
    assert c.hash == hashlib.sha256(PINNED_CANONICAL_JSON.encode()).hexdigest()[:16] == "182fba8c94b06c46"


def test_hash_ignores_order_and_operational_fields_but_not_numbers():
    a = cfg()
    reordered = make_run_config(**dict(reversed(list(BASE.items()))))
    assert reordered.hash == a.hash
    swapped = cfg(task={"name": "multiply", "params": {"length": 8, "width": 4}})
    assert swapped.hash == a.hash
    assert cfg(checkpoint_every=7).hash == a.hash
    assert cfg(seed=1).hash != a.hash
    assert cfg(optimizer={"name": "adam", "eps": 1e-8}).hash != a.hash
    assert cfg(dtype="float64").hash != a.hash


def test_json_round_trip_and_hashable():
    a = cfg(optimizer={"name": "sgd", "lr": 0.1}, schedule={"name": "step", "every": 3})
    b = load_run_config(a.model_dump_json())
    assert b == a and b.hash == a.hash
    assert len({a, b, cfg()}) == 2
    with pytest.raises(Exception):
        a.steps = 5  # frozen


def test_defaults_are_the_papers():
    c = make_run_config(task={"name": "multiply"}, model={"name": "baseconv"})
    assert c.optimizer.name == "adam" and c.optimizer.eps == 1e-16 and c.optimizer.lr == 1e-3
    assert c.batch_size == 1024 and c.dtype == "float32"
    step = cfg(schedule={"name": "step"}).schedule
    assert (step.gamma, step.every) == (0.9, 10_000)


def test_unwritable_results_folder_errors_before_training(tmp_path):
    from bench.harness.train import run

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ResultsDirError, match="not writable"):
        check_writable(blocker)
    with pytest.raises(ResultsDirError):
        run(cfg(), blocker)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "runs" / "x.json"
    atomic_write_text(target, '{"old": true}\n')

    def crash_mid_write(f):
        f.write('{"new": tr')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash_mid_write)
    assert json.loads(target.read_text()) == {"old": True}
    assert os.listdir(target.parent) == ["x.json"]  # the temp file is gone too

    fresh = tmp_path / "runs" / "y.json"
    with pytest.raises(RuntimeError):
        atomic_write(fresh, crash_mid_write)
    assert not fresh.exists()


def test_result_write_is_atomic(tmp_path, monkeypatch):
    """A crash while a record is serialised leaves the previous record intact."""
    from bench.harness import records
    from bench.harness.train import run

    c = cfg(steps=2)
    first = run(c, tmp_path, progress=False)
    path = records.record_path(c, tmp_path)
    before = path.read_text()

    def exploding_dump(self, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(records.RunResult, "model_dump_json", exploding_dump)
    with pytest.raises(RuntimeError):
        records.write_result(first, tmp_path)
    assert path.read_text() == before
    assert sorted(os.listdir(path.parent)) == [path.name]


# ---- the Levenberg-Marquardt config: its surface, its retired fields, its two layouts --------------------------

CG_LM = {"name": "levenberg_marquardt", "solver": "cg", "train_size": 32}


def test_the_levenberg_marquardt_config_has_at_most_15_top_level_fields():
    from bench.solvers.levenberg_marquardt import CGSolve, LevenbergMarquardtConfig

    assert len(LevenbergMarquardtConfig.model_fields) <= 15, sorted(LevenbergMarquardtConfig.model_fields)
    assert len(CGSolve.model_fields) <= 6


@pytest.mark.parametrize("field,value,why", [
    ("recycle", 300, "gained ~1% a step"),
    ("plane_gradient", True, "no gain a step"),
    ("plane_damping", "rho", "'slice_fidelity' was 13x behind 'rho'"),
    ("damping_rule", "ratio", "Nielsen's rule was 1.7x behind the ratio rule"),
    ("backtracks", 3, "every committed run used 3"),
    ("scaling", "marquardt", "'marquardt' was 2.6x behind 'identity'"),
    ("working_dtype", "float64", "'float64' took float32's steps 2.3x slower"),
    ("precondition_power", 0.5, "never varied"),
    ("diag_probes", 8, "never varied"),
    ("restart_damping", True, "no committed run set it"),
])
def test_a_config_naming_a_retired_field_is_refused_with_the_field_and_why(field, value, why):
    with pytest.raises(RunConfigError) as info:
        cfg(optimizer={**CG_LM, field: value})
    message = str(info.value)
    assert f"optimizer.{field}: retired ({why}" in message and "docs/optimizers.md); remove it" in message, message
    assert "\n" not in message and "got" not in message
    with pytest.raises(RunConfigError, match=rf"polish.{field}: retired \("):
        cfg(polish={**CG_LM, field: value})


def test_the_exact_refusal_of_recycle():
    with pytest.raises(RunConfigError) as info:
        cfg(optimizer={**CG_LM, "recycle": 300, "line_search": True})
    assert str(info.value) == ("invalid run config: optimizer.recycle: retired (gained ~1% a step, docs/optimizers.md); "
                               "remove it")


def test_the_record_layouts_flat_names_read_as_the_cg_solves_fields():
    flat = cfg(optimizer={**CG_LM, "cg_max_iter": 400, "cg_tol": 1e-6, "warm_start": False,
                          "preconditioner": "kronecker", "products": "linearize"})
    nested = cfg(optimizer={**CG_LM, "cg": {"max_iter": 400, "tol": 1e-6, "warm_start": False,
                                            "preconditioner": "kronecker", "products": "linearize"}})
    assert flat == nested and flat.hash == nested.hash
    assert (nested.optimizer.cg.max_iter, nested.optimizer.cg.warm_start) == (400, False)
    layout = nested.optimizer.record_layout()
    assert (layout["cg_max_iter"], layout["warm_start"], layout["backtracks"], layout["damping_rule"]) == (
        400, False, 3, "ratio")  # what the solver does, spelled as its records spell it
    with pytest.raises(RunConfigError, match="cg.max_iter is given twice"):
        cfg(optimizer={**CG_LM, "cg_max_iter": 400, "cg": {"max_iter": 100}})


def test_a_copy_with_changes_is_validated_in_either_layout():
    base = cfg(optimizer=CG_LM).optimizer
    assert base.model_copy(update={"warm_start": False}) == base.model_copy(update={"cg": {"warm_start": False}})
    changed = base.model_copy(update={"cg_max_iter": 7, "line_search": True})
    assert (changed.cg.max_iter, changed.cg.preconditioner, changed.line_search) == (7, "diagonal", True)
    with pytest.raises(ValueError, match="recycle"):
        base.model_copy(update={"recycle": 10})
    with pytest.raises(ValueError, match="curvature_size"):
        base.model_copy(update={"curvature_size": 64})


def test_the_hash_scheme_names_every_field_once():
    """A field added to RunConfig or LevenbergMarquardtConfig must be placed in the scheme (ADDED_FIELDS, with the
    default it came with) or every run's hash would change with it; a retired field stays there."""
    from bench.harness.config import ADDED_FIELDS, FIRST_FIELDS, OPERATIONAL_FIELDS
    from bench.solvers.levenberg_marquardt import RETIRED

    run_added = [k for group in ADDED_FIELDS["run"] for k in group]
    assert sorted(FIRST_FIELDS["run"] + tuple(run_added) + OPERATIONAL_FIELDS) == sorted(RunConfig.model_fields)
    layout = cfg(optimizer=CG_LM).optimizer.record_layout()
    lm_added = [k for group in ADDED_FIELDS["levenberg_marquardt"] for k in group]
    assert sorted(FIRST_FIELDS["levenberg_marquardt"] + tuple(lm_added)) == sorted(layout)
    assert set(RETIRED) <= set(lm_added)
    assert all(ADDED_FIELDS["levenberg_marquardt"][lm_added.index(k)][k] == r.default for k, r in RETIRED.items())


def test_a_field_at_the_default_it_came_with_is_not_hashed_and_away_from_it_is():
    plain = cfg()
    assert '"polish"' not in plain.canonical_json() and '"polish_patience"' not in plain.canonical_json()
    assert cfg(polish_patience=7).hash != plain.hash  # added together with polish: hashed together
    dense = cfg(optimizer={"name": "levenberg_marquardt"})
    assert '"solver"' not in dense.canonical_json() and '"cg_max_iter"' not in dense.canonical_json()
    assert cfg(optimizer={"name": "levenberg_marquardt", "solver": "dense"}).hash == dense.hash
    cg = cfg(optimizer={"name": "levenberg_marquardt", "solver": "cg"})
    assert '"solver":"cg"' in cg.canonical_json() and '"backtracks":3' in cg.canonical_json()
    assert cfg(device="cuda:1").canonical_json() == cfg(device="cuda").canonical_json()
