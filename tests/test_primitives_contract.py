"""The task contract for every registered task: shapes, determinism, disjoint streams,
floors, metrics, and readable errors for bad parameters."""
import pytest
import torch

import primitives
from primitives import TASKS, Task, TaskConfigError, make_task, stream_generator

SMALL = {  # small instances so the whole file runs in a few seconds
    "read": dict(length=6, width=4),
    "linear": dict(length=6, width=4),
    "multiply": dict(length=6, width=4),
    "square": dict(length=6, width=4),
    "identity": dict(length=6, width=4),
    "least_squares": dict(D=3, N=6),
    "gd_step": dict(D=3, N=6),
    "gd_k": dict(D=3, N=6, k=3),
    "newton_step": dict(D=3, N=6),
    "newton_schulz": dict(D=3, N=6),
    "icl_regression": dict(D=2, N=5),
    "ode_operator": dict(n_points=5, n_examples=4),
}
EXPECTED_TASKS = set(SMALL)


def sample(task, seed=0, stream="train", batch=4, dtype=torch.float32):
    return task.sample(batch, generator=stream_generator(seed, stream), dtype=dtype)


def test_registry_has_every_task_and_defaults_build():
    assert set(TASKS) == EXPECTED_TASKS
    for name in TASKS:
        task = make_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.describe()["name"] == name
        # configs are values: equal, hashable, rebuildable from their dump
        assert task == make_task(name) and hash(task) == hash(make_task(name))
        assert make_task(name, **task.model_dump()) == task
    explicit = make_task("linear", width=2, matrix=[[1.0], [2.0]])
    assert hash(explicit) == hash(make_task("linear", width=2, matrix=((1.0,), (2.0,))))
    assert make_task("read", seed=0).describe()["resolved_j"] == make_task("read", seed=0).positions[1]


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_shapes_and_mask(name):
    task = make_task(name, **SMALL[name])
    batch = sample(task)
    L = task.seq_len
    assert batch.inputs.shape == (4, L, task.d_in)
    assert batch.targets.shape == batch.exact_targets.shape == (4, L, task.d_out)
    assert batch.mask.shape == (L,) and batch.mask.dtype == torch.bool and batch.mask.any()
    assert torch.isfinite(batch.inputs).all() and torch.isfinite(batch.exact_targets).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_TASKS))
def test_same_seed_same_bits_and_streams_disjoint(name):
    task = make_task(name, **SMALL[name])
    a, b = sample(task, seed=5), sample(task, seed=5)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.exact_targets, b.exact_targets)
    assert torch.equal(a.mask, b.mask)
    other_seed, evaluation = sample(task, seed=6), sample(task, seed=5, stream="eval")
    for other in (other_seed, evaluation):
        # no (nonzero) input value is shared between the streams: the data are disjoint
        shared = set(a.inputs[a.inputs != 0].tolist()) & set(other.inputs[other.inputs != 0].tolist())
        assert not shared - {1.0}  # 1.0: ode_operator's constant feature, in every token by design


def test_stream_generators_are_distinct_and_validated():
    first = {
        torch.randn(1, generator=stream_generator(seed, stream), dtype=torch.float64).item()
        for seed in range(50)
        for stream in ("task", "train", "eval")
    }
    assert len(first) == 150
    with pytest.raises(ValueError, match="stream"):
        stream_generator(0, "test")


def test_task_parameters_do_not_depend_on_data_stream():
    task = make_task("linear", seed=3)
    sample(task, stream="eval")
    assert torch.equal(task.H, make_task("linear", seed=3).H)
    assert make_task("read", seed=2) == make_task("read", seed=2)


@pytest.mark.parametrize("name", ["read", "linear", "multiply", "square"])
def test_float32_inputs_are_the_float64_draw_rounded_once(name):
    task = make_task(name, **SMALL[name])
    f32 = sample(task, dtype=torch.float32)
    f64 = sample(task, dtype=torch.float64)
    assert torch.equal(f64.inputs.to(torch.float32), f32.inputs)


@pytest.mark.parametrize("name", ["multiply", "square", "linear", "gd_step", "least_squares", "newton_schulz", "icl_regression",
                                  "ode_operator"])
def test_floor_float32_is_rounding_scale_and_float64_zero(name):
    task = make_task(name, **SMALL[name])
    f32, f64 = task.floor(torch.float32, n=256), task.floor(torch.float64, n=256)
    assert f64 == 0.0 and task.floor(torch.float32, n=256) == f32  # deterministic (eval stream)
    batch = task.sample(256, generator=stream_generator(0, "eval"))
    mean_sq = batch.exact_targets[:, batch.mask].pow(2).mean().item()
    eps = torch.finfo(torch.float32).eps
    # round-to-nearest: |err| <= eps/2 |t|, uniformish -> MSE ~ eps^2/12 * E[t^2]
    assert eps**2 / 60 * mean_sq < f32 < eps**2 / 4 * mean_sq


def test_floor_zero_when_targets_are_inputs():
    assert make_task("read", **SMALL["read"]).floor(torch.float32, n=8) == 0.0
    assert make_task("identity", **SMALL["identity"]).floor(torch.float32, n=8) == 0.0


def test_metrics_and_loss_score_only_masked_positions():
    task = make_task("gd_step", **SMALL["gd_step"])
    batch = sample(task, dtype=torch.float64)
    pred = batch.exact_targets.clone()
    pred[:, ~batch.mask] = 123.0  # unscored positions must not count
    m = task.metrics(pred, batch)
    assert m["mse"] == 0.0 and m["rel"] == 0.0 and m["rel_l2"] == 0.0
    assert task.loss(pred, batch).item() == 0.0
    pred[:, batch.mask] += 1e-3
    m = task.metrics(pred, batch)
    assert m["mse"] == pytest.approx(1e-6, rel=1e-9)
    t = batch.exact_targets[:, batch.mask]
    assert m["rel"] == pytest.approx(1e-3 / t.abs().mean().item(), rel=1e-9)
    assert m["rel_l2"] == pytest.approx(1e-3 * t.numel() ** 0.5 / t.norm().item(), rel=1e-9)
    assert m["per_position_mse"][:-1] == [None] * (task.seq_len - 1)
    assert m["per_position_mse"][-1] == pytest.approx(1e-6, rel=1e-9)


# ---- bad input: one clear TaskConfigError naming the parameter and the valid range ----

BAD = [
    ("no_such_task", {}, r"unknown task 'no_such_task'; known tasks: .*gd_step.*read"),
    ("multiply", dict(width=21), r"even input width, got 21"),
    ("multiply", dict(width=4, a=3, out_width=2), r"a must be in \[0, width - out_width\] = \[0, 2\], got 3"),
    ("read", dict(i=5, j=3), r"i <= j.*i=5 > j=3"),
    ("read", dict(j=40), r"j must be in \[0, length - 1\] = \[0, 39\], got 40"),
    ("read", dict(a=3, b=3), r"0 <= a < b <= width = 20, got a=3, b=3"),
    ("least_squares", dict(N=3), r"N >= D .*got N=3 < D=5"),
    ("newton_step", dict(D=6, N=5), r"N >= D .*got N=5 < D=6"),
    ("newton_schulz", dict(N=4), r"N >= D .*got N=4 < D=5"),
    ("gd_step", dict(N=2, kappa=3.0), r"N >= D .*got N=2 < D=5"),
    ("gd_step", dict(kappa=0.5), r"kappa .*>= 1, got 0.5"),
    ("least_squares", dict(D=0), r"D must be a positive integer \(>= 1\), got 0"),
    ("gd_step", dict(N=-2), r"N must be a positive integer \(>= 1\), got -2"),
    ("multiply", dict(length=0), r"length must be a positive integer \(>= 1\), got 0"),
    ("icl_regression", dict(N=0), r"N must be a positive integer"),
    ("gd_k", dict(k=0), r"k must be a positive integer \(>= 1\), got 0"),
    ("gd_k", dict(eta=0.0), r"eta must be a finite number > 0, got 0.0"),
    ("gd_step", dict(sigma=-0.1), r"sigma .*>= 0, got -0.1"),
    ("gd_step", dict(a_scale=0.0), r"a_scale must be a finite number > 0"),
    ("newton_schulz", dict(perturbation=1.0), r"perturbation must be in \[0, 1\)"),
    ("newton_schulz", dict(start_iteration=-1), r"start_iteration must be an integer >= 0"),
    ("newton_schulz", dict(operand="B"), r"operand: Input should be 'A' or 'M'"),
    ("linear", dict(width=2, matrix=[[1.0], [2.0, 3.0]]), r"same length"),
    ("linear", dict(width=3, matrix=[[1.0]]), r"matrix must have width = 3 rows, got 1"),
    ("icl_regression", dict(N=4), r"score_from must be in \[0, N - 1\] = \[0, 3\], got 5"),
    ("gd_step", dict(bogus=1), r"bogus: unknown parameter \(parameters: seed, D, N, kappa"),
    ("ode_operator", dict(eqn_class=3), r"eqn_class must be 0 \(every term\), 1 \(no a2 term\) or 2 \(no a1 term\), got 3"),
    ("ode_operator", dict(operator_scale=-1.0), r"operator_scale must be a finite number >= 0, got -1.0"),
    ("ode_operator", dict(u0_scale=-0.5), r"u0_scale must be a finite number >= 0, got -0.5"),
    ("ode_operator", dict(gp_length=0.0), r"gp_length must be a finite number > 0, got 0.0"),
    ("ode_operator", dict(gp_length=float("inf")), r"gp_length must be a finite number > 0, got inf"),
    ("ode_operator", dict(n_points=1), r"n_points \(D, the points c is given at\) must be an integer >= 2, got 1"),
    ("ode_operator", dict(n_examples=1), r"n_examples must be an integer >= 2 .*got 1"),
    ("ode_operator", dict(query_time=1.5), r"query_time must be in \[-1, 1\] .*got 1.5"),
    ("ode_operator", dict(eqn_class="one"), r"eqn_class: Input should be a valid integer"),
    ("gd_step", dict(D="five"), r"D: Input should be a valid integer"),
    ("gd_step", dict(layout="diagonal"), r"layout: Input should be 'first_token' or 'broadcast'"),
    ("newton_step", dict(with_inverse=True, layout="broadcast"), r"with_inverse=True .*set layout='first_token'"),
]


@pytest.mark.parametrize("name, params, message", BAD)
def test_bad_parameters_raise_task_config_error(name, params, message):
    with pytest.raises(TaskConfigError, match=message) as info:
        make_task(name, **params)
    assert info.value.__cause__ is None and "Traceback" not in str(info.value)


def test_direct_construction_raises_task_config_error_too():
    with pytest.raises(TaskConfigError, match="even input width"):
        TASKS["multiply"](width=5)


@pytest.mark.parametrize("bad", [torch.int32, torch.bool, "float32", None])
def test_non_floating_dtype_rejected(bad):
    task = make_task("gd_step")
    with pytest.raises(TaskConfigError, match="floating torch dtype"):
        task.sample(2, generator=stream_generator(0, "train"), dtype=bad)
    with pytest.raises(TaskConfigError, match="floating torch dtype"):
        task.floor(bad)


def test_sample_arguments_validated():
    task = make_task("square")
    with pytest.raises(TaskConfigError, match="batch_size must be a positive integer"):
        task.sample(0, generator=stream_generator(0, "train"))
    with pytest.raises(TaskConfigError, match="explicit torch.Generator"):
        task.sample(2, generator=None)


def test_sampler_rejects_kappa_without_full_rank():
    with pytest.raises(TaskConfigError, match="N >= D"):
        primitives.sample_least_squares(2, D=5, N=3, kappa=2.0, generator=stream_generator(0, "train"))
