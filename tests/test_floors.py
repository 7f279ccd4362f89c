"""bench.reporting.floors: the precision gate fails on a worse, diverged or missing case and passes otherwise;
results/floors.json covers every smoke case with a measured MSE times the stated margin."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench.reporting import floors
from bench import grids
from bench.benchmarks import sharp

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread_module")


def bench_json(path: Path, cases: dict[str, dict]) -> Path:
    """A pytest-benchmark JSON of precision cases (extra_info as bench/benchmarks/test_precision.py writes it)."""
    benchmarks = [{"name": f"test_precision[{c}]", "stats": {"mean": 1.0},
                   "extra_info": {"case_id": c, "status": "ok", "config_hash": "0123456789abcdef", **info}}
                  for c, info in cases.items()]
    path.write_text(json.dumps({"machine_info": {"profile": "smoke", "cpu": {"brand_raw": "test"}},
                                "benchmarks": benchmarks}))
    return path


def floors_file(path: Path, floors_by_case: dict[str, float], margin: float = 10.0) -> Path:
    path.write_text(json.dumps({"margin_rule": "test", "cases": {
        c: {"floor_mse": f, "measured_mse": f / margin, "config_hash": "0123456789abcdef"}
        for c, f in floors_by_case.items()}}))
    return path


def test_case_ids_are_readable_and_distinct():
    configs = grids.primitives("smoke")
    ids = [floors.case_id(c) for c in configs]
    assert len(set(ids)) == len(ids)
    assert "multiply/attention/depth1/prenorm=False/adam/float32" in ids
    assert floors.case_id(configs[0]) == floors.case_id(grids.primitives("smoke")[0])


def test_check_passes_within_and_fails_when_worse(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4, "b": 1e-2})
    within = bench_json(tmp_path / "within.json", {"a": {"eval_mse": 9.9e-5}, "b": {"eval_mse": 1e-2}})
    assert floors.main(["--check", str(within), "--floors", str(f)]) == 0
    assert "precision gate: ok" in capsys.readouterr().out

    worse = bench_json(tmp_path / "worse.json", {"a": {"eval_mse": 2e-4}, "b": {"eval_mse": 1e-3}})
    assert floors.main(["--check", str(worse), "--floors", str(f)]) == 1
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if line.startswith("| a "))
    assert "worse" in row and "2.000e-04" in row and "1.000e-04" in row
    assert "FAILED, 1 of 2" in out.err


def test_a_diverged_case_fails_the_gate(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4})
    diverged = bench_json(tmp_path / "out.json", {"a": {"eval_mse": None, "status": "diverged"}})
    assert floors.main(["--check", str(diverged), "--floors", str(f)]) == 1
    assert "diverged" in capsys.readouterr().out
    verdicts = floors.check(json.loads(f.read_text()), {"a": {"status": "ok", "eval_mse": math.nan}})
    assert [v.outcome for v in verdicts] == ["diverged"]


def test_a_missing_case_fails_and_a_new_one_does_not(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4, "b": 1e-4})
    out = bench_json(tmp_path / "out.json", {"a": {"eval_mse": 1e-5}, "c": {"eval_mse": 1.0}})
    assert floors.main(["--check", str(out), "--floors", str(f)]) == 1
    text = capsys.readouterr().out
    assert "| b " in text and "missing" in text and "no floor" in text
    only_new = bench_json(tmp_path / "new.json", {"a": {"eval_mse": 1e-5}, "b": {"eval_mse": 1e-5},
                                                  "c": {"eval_mse": 1.0}})
    assert floors.main(["--check", str(only_new), "--floors", str(f)]) == 0


def test_update_takes_each_margin_from_the_case_s_spread_or_kind(tmp_path):
    measured = {"a": {"status": "ok", "eval_mse": 1e-3}, "b": {"status": "ok", "eval_mse": 2e-2},
                "exact": {"status": "ok", "eval_mse": 6e-16, "kind": "bit_exact"},
                "level": {"status": "ok", "eval_mse": 8e-15, "kind": "level"}}
    made = floors.make_floors(measured, {}, spread={"a": {"ratio": 1.5}})
    margins = {c: e["margin"] for c, e in made["cases"].items()}
    assert margins == {"a": 2.0, "b": floors.MARGIN, "exact": 1.0, "level": 2.0}
    assert made["cases"]["a"]["floor_mse"] == 2e-3 and "1.5" in made["cases"]["a"]["margin_from"]


def test_update_sets_floor_to_measured_times_margin(tmp_path):
    out = bench_json(tmp_path / "out.json", {"a": {"eval_mse": 3e-6}, "b": {"eval_mse": 0.5}})
    f = tmp_path / "floors.json"
    assert floors.main(["--update", str(out), "--floors", str(f), "--margin", "4"]) == 0
    written = json.loads(f.read_text())
    assert written["cases"]["a"]["margin"] == 4 and "--margin" in written["margin_rule"]
    assert written["cases"]["a"]["floor_mse"] == pytest.approx(1.2e-5)
    assert written["cases"]["b"]["measured_mse"] == 0.5
    assert floors.main(["--check", str(out), "--floors", str(f)]) == 0  # a run passes its own floors
    with pytest.raises(SystemExit, match="did not finish"):
        floors.make_floors({"a": {"status": "diverged", "eval_mse": None}}, {})


def test_committed_floors_cover_every_case_with_its_own_margin():
    data = json.loads((REPO / "results" / "floors.json").read_text())
    smoke = {floors.case_id(c): c.hash for c in grids.primitives("smoke")}
    assert set(data["cases"]) == set(smoke) | set(sharp.CASES)
    assert data["margin_rule"] == floors.MARGIN_RULE
    margins = {}
    for case, entry in data["cases"].items():
        assert entry["floor_mse"] == entry["measured_mse"] * entry["margin"]
        if case in smoke:
            assert entry["config_hash"] == smoke[case]  # measured with the config the smoke profile runs now
            ratio = data["spread"][case]["ratio"]
            assert entry["margin"] == 2 * ratio - 1  # the case's own measured spread, twice over
        margins[case] = entry["margin"]
    # the READ cases move 1.02x between seeds: their floors are now within 5% of what they measured
    assert all(m < 1.06 for c, m in margins.items() if c.startswith("read/"))
    assert margins["construction/multiply/baseconv/float32"] == 1.0  # bit-exact: exactly its rounding floor
    assert margins["construction/gd_step_iterated/baseconv/float32"] == 2.0
    # the sharp cases are not trained (no untrained version to fail): their floors sit at most 2x above
    # the exact float32 reference (true GD in float32; the targets' rounding), where no inexact model is
    for case in sharp.CASES:
        assert data["cases"][case]["floor_mse"] <= 2 * max(data["cases"][case]["measured_mse"], 1e-300)


@pytest.fixture(scope="module")
def committed():
    return json.loads((REPO / "results" / "floors.json").read_text())


def test_an_untrained_model_fails_every_trained_case(committed, tmp_path_factory):
    """The same configs at step 0 (weights as initialised), scored like the trained runs."""
    from bench.harness.train import Trainer

    folder = tmp_path_factory.mktemp("untrained")
    measured = {}
    for cfg in grids.primitives("smoke"):
        mse = Trainer(cfg, folder, progress=False).evaluate()["mse"]
        measured[floors.case_id(cfg)] = {"status": "ok", "eval_mse": mse}
    verdicts = floors.check(committed, measured)
    assert {v.case: v.outcome for v in verdicts if v.case in measured} == {c: "worse" for c in measured}
    # the closest call: bare softmax attention on MULTIPLY (it cannot express a product) reaches 0.94;
    # predicting zero scores the target's variance (about 1), the untrained model 1.11
    bare = "multiply/attention/depth1/final_norm=False,mlp=False,pos_emb=False,prenorm=False/adam/float32"
    assert committed["cases"][bare]["floor_mse"] < 1.0 < measured[bare]["eval_mse"]
    # READ: the identity map scores about 0.05 (it is right wherever the read position is the query)
    assert all(e["floor_mse"] < 0.03 for c, e in committed["cases"].items() if c.startswith("read/"))


def noisy(fn, ulps: float):
    """fn with its output perturbed by a relative error of `ulps` float32 units (fixed draw): a kernel
    or mixer `ulps` times less precise than one rounding."""
    def wrapped(*args, **kwargs):
        y = fn(*args, **kwargs)
        g = torch.Generator().manual_seed(0)
        return y + y * (ulps * 2.0 ** -24) * torch.randn(y.shape, generator=g, dtype=y.dtype)

    return wrapped


@pytest.mark.parametrize("where,case", [
    ("kernel", "construction/gd_step_iterated/baseconv/float32"),
    ("mixer", "construction/gd_step_iterated/linear_attention/float32"),
])
def test_a_10x_precision_regression_in_a_kernel_or_a_mixer_fails_the_gate(committed, monkeypatch, where, case):
    before = floors.check(committed, {case: sharp.measure(case)})
    assert [v.outcome for v in before if v.case == case] == ["ok"]
    if where == "kernel":  # BaseConv's conv: kernels.causal_conv, direct backend, channels first
        from kernels.fftconv import dispatch

        monkeypatch.setattr(dispatch, "causal_conv_direct_channels_first",
                            noisy(dispatch.causal_conv_direct_channels_first, 10))
    else:
        from architectures.mixers.linear_attention import LinearAttention

        monkeypatch.setattr(LinearAttention, "forward", noisy(LinearAttention.forward, 10))
    info = sharp.measure(case)
    (after,) = [v for v in floors.check(committed, {case: info}) if v.case == case]
    assert after.outcome == "worse", (after.measured, after.floor)
