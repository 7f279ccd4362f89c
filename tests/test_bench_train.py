"""The train loop: records, determinism, divergence, skipping finished runs, and resuming
(after an interrupt and after kill -9) bit-identically."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.harness.config import EXTRA_MODELS, RunConfigError, make_run_config
from bench.harness.train import preflight
from bench.harness.records import checkpoint_path, load_checkpoint, load_model, load_result, record_path
from bench.harness.train import run

REPO = Path(__file__).resolve().parent.parent

BASE = dict(
    task={"name": "multiply", "params": {"width": 4, "length": 8}},
    model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
    optimizer={"name": "adam", "lr": 3e-3},
    batch_size=8,
    eval_size=32,
)


def tiny(**overrides):
    return make_run_config(**{**BASE, **overrides})


pytestmark = pytest.mark.usefixtures("one_thread")


def numbers(result) -> dict:
    """Everything in a record that training computes (not timings, dates, resume points)."""
    keep = ("status", "steps_done", "eval_mse", "eval_rel", "eval_rel_l2", "per_position_mse", "best_eval_mse",
            "best_step", "train_loss", "floor", "final_lr", "param_count", "skipped_steps", "config_hash")
    data = result.model_dump()
    out = {k: data[k] for k in keep}
    out["curve"] = data["curve"]
    return out


def assert_same_weights(cfg, dir_a, dir_b):
    a, b = load_model(cfg, dir_a).state_dict(), load_model(cfg, dir_b).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_run_writes_a_complete_record(tmp_path):
    cfg = tiny(steps=20, eval_every=5)
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "ok" and result.steps_done == 20
    assert [p.step for p in result.curve] == [0, 5, 10, 15, 20]
    assert result.curve[-1].eval_mse == result.eval_mse < result.curve[0].eval_mse
    assert all(p.train_loss is not None and p.grad_norm_max >= p.grad_norm_mean > 0 for p in result.curve[1:])
    assert result.floor == cfg.build_task().floor(torch.float32) > 0
    assert result.param_count == sum(p.numel() for p in cfg.build_model().parameters())
    assert len(result.per_position_mse) == 8 and result.steps_per_s > 0
    assert {"torch", "triton", "device_name", "cpu"} <= set(result.environment)
    on_disk = json.loads(record_path(cfg, tmp_path).read_text())
    assert on_disk["config_hash"] == cfg.hash and on_disk["status"] == "ok"
    assert load_result(cfg, tmp_path) == result
    # the harness turned TF32 off
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_same_config_same_bits(tmp_path):
    cfg = tiny(steps=10, schedule={"name": "step", "every": 3, "gamma": 0.5})
    a = run(cfg, tmp_path / "a", progress=False)
    b = run(cfg, tmp_path / "b", progress=False)
    assert numbers(a) == numbers(b)
    assert_same_weights(cfg, tmp_path / "a", tmp_path / "b")
    assert a.final_lr == 3e-3 * 0.5**3
    other_seed = run(tiny(steps=10, seed=1), tmp_path / "a", progress=False)
    assert other_seed.eval_mse != a.eval_mse


def test_huge_lr_is_recorded_as_diverged(tmp_path):
    cfg = tiny(steps=50, optimizer={"name": "sgd", "lr": 1e12, "momentum": 0.0})
    result = run(cfg, tmp_path, progress=False)
    assert result.status == "diverged" and result.steps_done < 50
    assert result.eval_mse is None and result.best_eval_mse is None and result.train_loss is None
    assert "non-finite" in result.message or "eval MSE" in result.message
    text = record_path(cfg, tmp_path).read_text()
    for bad in ("NaN", "Infinity"):
        assert bad not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert run(cfg, tmp_path, progress=False).finished_at == result.finished_at  # diverged is final too


def test_finished_run_is_not_retrained_unless_forced(tmp_path, monkeypatch):
    from bench.harness import train

    cfg = tiny(steps=5)
    first = run(cfg, tmp_path, progress=False)
    mtime = record_path(cfg, tmp_path).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(train.Trainer, "train", no_training)
    again = run(cfg, tmp_path, progress=False)
    assert again == first and record_path(cfg, tmp_path).stat().st_mtime_ns == mtime
    # a lost record is rebuilt from the final checkpoint, still without training
    record_path(cfg, tmp_path).unlink()
    assert numbers(run(cfg, tmp_path, progress=False)) == numbers(first)
    monkeypatch.undo()
    forced = run(cfg, tmp_path, force=True, progress=False)
    assert numbers(forced) == numbers(first) and forced.finished_at >= first.finished_at


INTERRUPT_AT = {"forward": None}


class InterruptAt(torch.nn.Module):
    """Wraps a model and sends this process SIGINT at training forward INTERRUPT_AT["forward"]."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == INTERRUPT_AT["forward"]:
                os.kill(os.getpid(), signal.SIGINT)
        return self.inner(x)


def test_interrupt_checkpoints_and_resumes_bit_identically(tmp_path):
    """Adaptive LR, EMA filter, clipping: every piece of state must survive the checkpoint."""
    import architectures

    fields = dict(steps=24, eval_every=4, checkpoint_every=0, ema_lambda=0.5, grad_clip=0.5,
                  schedule={"name": "adaptive", "every": 5, "measure_every": 3, "probe_batches": 3, "warmup": 0,
                            "threshold": 0.0, "gamma": 0.5})
    reference = run(tiny(**fields), tmp_path / "ref", progress=False)
    assert reference.status == "ok" and reference.final_lr != 3e-3  # the schedule acted

    EXTRA_MODELS["interrupted_baseconv"] = lambda task, **p: InterruptAt(architectures.build_model("baseconv", task, **p))
    INTERRUPT_AT["forward"] = 40
    try:
        wrapped = tiny(**fields, model={"name": "interrupted_baseconv", "params": BASE["model"]["params"]})
        first = run(wrapped, tmp_path / "int", progress=False)
        assert first.status == "interrupted" and 0 < first.steps_done < 24
        state = load_checkpoint(wrapped, tmp_path / "int")
        assert state["step"] == first.steps_done
        INTERRUPT_AT["forward"] = None
        second = run(wrapped, tmp_path / "int", progress=False)
    finally:
        EXTRA_MODELS.pop("interrupted_baseconv", None)
    assert second.status == "ok" and second.resumed_at == [first.steps_done]
    ref, res = numbers(reference), numbers(second)
    ref.pop("config_hash"), res.pop("config_hash")
    assert res == ref
    a = load_checkpoint(tiny(**fields), tmp_path / "ref")["model"]
    b = load_checkpoint(wrapped, tmp_path / "int")["model"]
    assert len(a) == len(b) and all(torch.equal(b[k], a[k.removeprefix("inner.")]) for k in b)


CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
import architectures
from bench.harness.config import EXTRA_MODELS, load_run_config
from bench.harness.train import run

class Slow(torch.nn.Module):  # sleeps, so the parent can kill it mid-run; numerics untouched
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        time.sleep(0.004)
        return self.inner(x)

EXTRA_MODELS["slow_baseconv"] = lambda task, **p: Slow(architectures.build_model("baseconv", task, **p))
cfg = load_run_config(sys.argv[1])
print(run(cfg, sys.argv[2], progress=False).status)
"""


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    """A run killed with SIGKILL after its first checkpoint finishes, when restarted,
    with the same record numbers and weights as a run that was never interrupted."""
    import architectures
    from bench.harness.config import load_run_config

    # in this process the model is plain baseconv (same numbers, no sleeping)
    EXTRA_MODELS["slow_baseconv"] = lambda task, **p: architectures.build_model("baseconv", task, **p)
    try:
        cfg = tiny(steps=200, eval_every=25, checkpoint_every=20,
                   model={"name": "slow_baseconv", "params": BASE["model"]["params"]})
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        killed = tmp_path / "killed"

        def child():
            return subprocess.Popen([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(killed)], cwd=REPO,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        victim = child()
        ckpt = checkpoint_path(cfg, killed)
        deadline = time.time() + 120
        while not ckpt.exists() and victim.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert victim.returncode == -signal.SIGKILL, victim.stderr.read()
        assert not record_path(cfg, killed).exists()  # it really died before finishing
        killed_at = torch.load(ckpt, weights_only=True)["step"]
        assert 0 < killed_at < 200

        resumed = child()
        whole = run(load_run_config(cfg.model_dump_json()), tmp_path / "whole", progress=False)
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0 and out.strip() == "ok", err

        again = load_result(cfg, killed)
        assert again.resumed_at and again.resumed_at[0] >= killed_at and whole.resumed_at == []
        assert numbers(again) == numbers(whole)
        wa = torch.load(checkpoint_path(cfg, killed), weights_only=True)["model"]
        wb = torch.load(checkpoint_path(cfg, tmp_path / "whole"), weights_only=True)["model"]
        assert len(wa) == len(wb) and all(torch.equal(wa[k], wb[k.removeprefix("inner.")]) for k in wa)
    finally:
        EXTRA_MODELS.pop("slow_baseconv", None)


# ---- the polish phase (RunConfig.polish) ----------------------------------------------------

POLISHED = dict(
    model={"name": "baseconv", "params": {"width": 4, "depth": 1, "mlp": False, "prenorm": False,
                                          "final_norm": False, "pos_emb": False}},
    optimizer={"name": "adam", "lr": 1e-12},  # makes no progress: stalls at once
    polish={"name": "levenberg_marquardt", "train_size": 8},
    polish_patience=3, steps=12, eval_every=1, checkpoint_every=0,
)


def test_configs_without_polish_keep_their_hashes():
    # records written before RunConfig had a polish field: their configs do not name it
    names = [p.stem for p in sorted((REPO / "results" / "runs").glob("*.json"))
             if "polish" not in json.loads(p.read_text())["config"]][:20]
    assert len(names) == 20
    for name in names:
        cfg = load_result(name, REPO / "results").config
        assert cfg.polish is None and cfg.hash == name
    assert tiny(**POLISHED).hash != tiny(**{k: v for k, v in POLISHED.items() if k not in ("polish", "polish_patience")}).hash


def test_polish_takes_over_once_the_first_optimizer_stalls(tmp_path):
    result = run(tiny(**POLISHED), tmp_path, progress=False)
    assert result.status == "ok" and result.switched_at == 3  # evals at 0..3 gained < 5%
    assert result.curve[3].eval_mse > 0.95 * result.curve[0].eval_mse
    assert result.eval_mse < 0.5 * result.curve[3].eval_mse  # Levenberg-Marquardt steps from there
    assert result.final_lr == 1.0  # the polish optimizer's own LR, not the first one's schedule
    none = run(tiny(**{**POLISHED, "polish_patience": 50}), tmp_path / "never", progress=False)
    assert none.switched_at is None and none.eval_mse > 0.95 * none.curve[0].eval_mse


def test_polish_after_switches_at_that_step_without_a_stall(tmp_path):
    learning = {**POLISHED, "optimizer": {"name": "adam", "lr": 1e-2}, "polish_patience": 50, "eval_every": 2}
    assert tiny(**learning).hash == tiny(**learning, polish_after=None).hash != tiny(**learning, polish_after=5).hash
    result = run(tiny(**learning, polish_after=4), tmp_path, progress=False)
    assert result.switched_at == 4 and result.final_lr == 1.0
    assert [p.step for p in result.curve] == [0, 2, 4, 6, 8, 10, 12]
    every = run(tiny(**learning, polish_after=4, polish_eval_every=1), tmp_path / "every", progress=False)
    assert [p.step for p in every.curve] == [0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    with pytest.raises(RunConfigError, match="polish_after: there is no polish optimizer"):
        tiny(polish_after=5)


def test_polish_phase_resumes_bit_identically(tmp_path):
    import architectures

    reference = run(tiny(**POLISHED), tmp_path / "ref", progress=False)
    EXTRA_MODELS["interrupted_baseconv"] = lambda task, **p: InterruptAt(architectures.build_model("baseconv", task, **p))
    INTERRUPT_AT["forward"] = 12  # a few Levenberg-Marquardt steps after the switch
    try:
        wrapped = tiny(**{**POLISHED, "model": {"name": "interrupted_baseconv",
                                                "params": POLISHED["model"]["params"]}})
        first = run(wrapped, tmp_path / "int", progress=False)
        assert first.status == "interrupted" and reference.switched_at < first.steps_done < 12
        INTERRUPT_AT["forward"] = None
        second = run(wrapped, tmp_path / "int", progress=False)
    finally:
        EXTRA_MODELS.pop("interrupted_baseconv", None)
    assert second.status == "ok" and second.resumed_at == [first.steps_done]
    assert second.switched_at == reference.switched_at
    ref, res = numbers(reference), numbers(second)
    ref.pop("config_hash"), res.pop("config_hash")
    assert res == ref


def test_polish_is_validated_like_the_optimizer():
    too_big = tiny(**{**POLISHED, "polish": {"name": "levenberg_marquardt", "max_params": 10}})  # valid data
    with pytest.raises(RunConfigError, match="polish: levenberg_marquardt with solver .dense. builds a params x params matrix"):
        preflight(too_big)  # the model's size is known once it is built, before training
    with pytest.raises(RunConfigError, match="polish"):
        tiny(**{**POLISHED, "polish": {"name": "newton"}})


def test_probe_stream_is_the_one_adaptive_runs_were_recorded_with():
    """The probe batches come from primitives.stream_generator(seed, "probe"); the seed is the one
    the harness derived itself before (sha256 of 'precision-bench/probe/<seed>'), so records of
    adaptive-schedule runs keep their numbers."""
    import hashlib

    from bench.harness.train import probe_generator

    for seed in (0, 7):
        digest = hashlib.sha256(f"precision-bench/probe/{seed}".encode()).digest()
        before = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        assert torch.equal(torch.randn(8, generator=probe_generator(seed)), torch.randn(8, generator=before))


# --- an opt-in compiled step ------------------------------------------------------------------


def test_compile_is_hashed_only_when_set():
    plain = tiny()
    assert "compile" not in plain.canonical_json()  # every earlier record keeps its name
    compiled = tiny(compile="reduce-overhead")
    assert compiled.hash != plain.hash and '"compile":"reduce-overhead"' in compiled.canonical_json()
    with pytest.raises(RunConfigError, match="compile"):
        tiny(compile="max-speed")


def test_compiled_step_runs_the_compiled_model(tmp_path, monkeypatch):
    # torch.compile's CPU code generation takes minutes on the CI machine: stand in for it with
    # a wrapper that records its mode and its calls, and check the step goes through it
    from bench.harness.train import Trainer

    calls = []

    def fake_compile(model, mode):
        def compiled(x):
            calls.append(mode)
            return model(x)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = Trainer(tiny(compile="default", steps=3), tmp_path, progress=False)
    for _ in range(3):
        trainer.step_once()
    trainer.evaluate()  # eval runs the plain model
    assert calls == ["default"] * 3
    plain = Trainer(tiny(steps=3), tmp_path / "plain", progress=False)
    for _ in range(3):
        plain.step_once()
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), plain.model.state_dict().values()))


@pytest.mark.skipif(not os.environ.get("PB_SLOW_TESTS"),
                    reason="torch.compile's CPU code generation takes ~2 minutes here; set PB_SLOW_TESTS=1")
def test_compiled_step_follows_the_plain_one(tmp_path):
    from bench.harness.train import Trainer

    losses = []
    for compile_mode in (None, "default"):
        trainer = Trainer(tiny(compile=compile_mode, steps=3), tmp_path / str(compile_mode), progress=False)
        losses.append([trainer.step_once().loss for _ in range(3)])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_a_gpu_run_is_one_run_on_any_gpu_index(tmp_path):
    # the checkpoint (and record) of a run made on cuda:0 is found from cuda:1 or another machine's
    # "cuda"; CPU configs keep the hashes their records have (test_configs_without_polish_...)
    cuda0, cuda1, cuda = tiny(device="cuda:0"), tiny(device="cuda:1"), tiny(device="cuda")
    assert cuda0.hash == cuda1.hash == cuda.hash != tiny().hash
    assert checkpoint_path(cuda0, tmp_path) == checkpoint_path(cuda1, tmp_path)
    assert cuda1.device == "cuda:1"  # the config keeps where it runs


def test_checkpoint_tensors_load_without_the_saving_device(tmp_path):
    # a checkpoint is read with map_location="cpu" and its generator states are host tensors,
    # so a machine without the saving device reads it; the run resumes to the same weights
    cfg = tiny(steps=6, checkpoint_every=3)
    run(cfg, tmp_path / "straight", progress=False)
    from bench.harness.train import Trainer

    first = Trainer(cfg, tmp_path / "resumed", progress=False)
    for _ in range(3):
        first.step_once()
    first.save_checkpoint()
    state = load_checkpoint(cfg, tmp_path / "resumed")
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    tensors += [t for v in state.values() if isinstance(v, dict) for t in v.values() if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    resumed = run(cfg, tmp_path / "resumed", progress=False)
    assert resumed.steps_done == 6 and resumed.resumed_at == [3]
    assert_same_weights(cfg, tmp_path / "straight", tmp_path / "resumed")


def test_a_time_capped_run_is_extended_from_its_checkpoint_step_for_step(tmp_path, capsys):
    """extends: a longer time limit goes on from the shorter run's checkpoint, and ends where a run
    with the longer limit from the start ends, bit for bit."""
    short = tiny(steps=200, eval_every=1, time_limit_s=0.02)
    base = run(short, tmp_path / "ext", progress=False)
    assert base.status == "ok" and 1 <= base.steps_done < 200
    longer = tiny(steps=200, eval_every=1, time_limit_s=1000.0, extends=short.hash)
    assert longer.hash == tiny(steps=200, eval_every=1, time_limit_s=1000.0).hash  # extends is not hashed
    extended = run(longer, tmp_path / "ext", progress=False)
    assert extended.status == "ok" and extended.steps_done == 200 and extended.resumed_at == [base.steps_done]
    assert extended.config.extends == short.hash  # the record says where it started
    assert extended.curve[:base.steps_done + 1] == base.curve
    from_start = run(longer, tmp_path / "ref", progress=False)  # no checkpoint to go on from there
    assert "no checkpoint of the run it extends" in capsys.readouterr().err
    assert from_start.resumed_at == [] and numbers(from_start) == numbers(extended)


def test_extends_must_name_the_same_run_with_a_shorter_time_limit(tmp_path):
    short = tiny(steps=50, time_limit_s=0.02)
    run(short, tmp_path, progress=False)
    other = tiny(steps=50, time_limit_s=10.0, optimizer={"name": "adam", "lr": 1e-3}, extends=short.hash)
    with pytest.raises(RunConfigError, match=f"extends: run {short.hash} is not this run .* shorter time_limit_s"):
        run(other, tmp_path, progress=False)
    with pytest.raises(RunConfigError, match="extends: only a time-capped run can extend another"):
        tiny(steps=50, extends=short.hash)
    with pytest.raises(RunConfigError, match="extends"):
        tiny(steps=50, time_limit_s=10.0, extends="not-a-hash")


def branch_configs(**child):
    """A run with an Adam polish from step 2, and a run going on from its end with another polish."""
    parent = tiny(steps=6, eval_every=1, polish_after=2, polish={"name": "adam", "lr": 1e-3}, keep_final_state=True)
    child = parent.model_copy(update={"steps": 30, "polish": parent.polish.model_copy(update={"lr": 1e-12}),
                                      "starts_from": parent.hash, "keep_final_state": False, **child})
    return parent, child


def test_a_run_goes_on_from_another_runs_final_state_with_its_own_polish(tmp_path):
    """starts_from: the parent's weights, steps and seconds, then this run's polish: at LR 1e-12 it moves
    nothing (the eval MSE stays the parent's), where the parent's own polish (LR 1e-3) goes on gaining.
    Hashed, and it works from the kept final state alone (a fresh clone)."""
    import shutil

    parent, child = branch_configs()
    assert child.hash != child.model_copy(update={"starts_from": None}).hash
    assert tiny(steps=5).hash == tiny(steps=5, starts_from=None).hash  # runs without it keep their hashes
    first = run(parent, tmp_path, progress=False)
    shutil.rmtree(tmp_path / "checkpoints")  # only results/final_states, as committed
    branched = run(child, tmp_path, progress=False)
    assert branched.status == "ok" and branched.steps_done == 30 and branched.resumed_at == [6]
    assert branched.config.starts_from == parent.hash and branched.curve[:7] == first.curve
    assert branched.eval_mse == pytest.approx(first.eval_mse, rel=1e-6)
    own = run(parent.model_copy(update={"steps": 30}), tmp_path, progress=False)
    assert own.curve[:7] == first.curve and own.eval_mse < 0.9 * first.eval_mse


def test_a_float32_run_goes_on_in_float64(tmp_path):
    """starts_from with dtype float64: the float32 weights widened exactly, the same eval problems, so at LR
    1e-12 the eval MSE is the parent's to float32 rounding of the forward pass."""
    parent, child = branch_configs(dtype="float64")
    first = run(parent, tmp_path, progress=False)
    branched = run(child, tmp_path, progress=False)
    assert branched.status == "ok" and branched.config.dtype == "float64" and branched.resumed_at == [6]
    assert branched.eval_mse == pytest.approx(first.eval_mse, rel=1e-4)
    assert branched.eval_mse != first.eval_mse  # computed in float64, not carried over


def test_a_levenberg_marquardt_damping_starts_again_in_another_dtype(tmp_path):
    from bench.harness.resume import branch_start

    lm = {"name": "levenberg_marquardt", "solver": "cg", "train_size": 16, "damping": 0.5}
    parent = tiny(steps=6, eval_every=1, polish_after=2, polish=lm, keep_final_state=True)
    child = parent.model_copy(update={"steps": 30, "starts_from": parent.hash, "keep_final_state": False})
    run(parent, tmp_path, progress=False)
    kept = branch_start(child, tmp_path)["optimizer"]["damping"]
    assert kept != 0.5  # the same dtype goes on with the parent's damping
    wider = child.model_copy(update={"dtype": "float64"})
    assert branch_start(wider, tmp_path)["optimizer"]["damping"] == 0.5
    assert run(wider, tmp_path, progress=False).status == "ok"


def test_starts_from_names_a_finished_run_that_differs_only_in_its_polish_and_length(tmp_path):
    parent, child = branch_configs()
    with pytest.raises(RunConfigError, match=f"starts_from: run {parent.hash} has no checkpoint or kept final state"):
        run(child, tmp_path, progress=False)
    run(parent, tmp_path, progress=False)
    with pytest.raises(RunConfigError, match=f"starts_from: run {parent.hash} differs .* in batch_size; only polish, "
                                             "steps, time_limit_s, dtype may change"):
        run(branch_configs(batch_size=4)[1], tmp_path, progress=False)
    for shorter in ({"steps": 6}, {"steps": 5}, {"time_limit_s": 100.0}):  # the parent ran 6 steps, no time limit
        with pytest.raises(RunConfigError, match=f"would take it no further than run {parent.hash} went"):
            run(branch_configs(**shorter)[1], tmp_path, progress=False)
    with pytest.raises(RunConfigError, match="starts_from: a run goes on from another one with its own polish"):
        tiny(steps=5, starts_from=parent.hash)
    assert run(child, tmp_path, progress=False).steps_done == 30
    # as grid to_the_limit_whole_set: the same steps, a longer time limit
    capped = parent.model_copy(update={"steps": 200, "time_limit_s": 0.05})
    first = run(capped, tmp_path, progress=False)
    longer = capped.model_copy(update={"time_limit_s": 1000.0, "starts_from": capped.hash, "polish": child.polish})
    assert run(longer, tmp_path, progress=False).resumed_at == [first.steps_done]


def test_a_checkpoint_is_written_by_the_clock_between_step_multiples(tmp_path, monkeypatch):
    """checkpoint_every counts steps; a run also checkpoints once CHECKPOINT_EVERY_S seconds have
    passed since the last one, so slow (second-order) steps are never an hour from a checkpoint.
    checkpoint_every 0 still means only at the end."""
    import bench.harness.train as train_module
    from bench.harness.train import Trainer

    saved_at = []
    real_save = Trainer.save_checkpoint

    def counting(self, result=None, **kwargs):
        saved_at.append((self.state.step, result is not None))
        real_save(self, result, **kwargs)

    monkeypatch.setattr(Trainer, "save_checkpoint", counting)
    run(tiny(steps=6, eval_every=3, checkpoint_every=1000), tmp_path / "steps", progress=False)
    assert saved_at == [(6, True)]  # no multiple of 1000 before the end, and the clock has not run out
    saved_at.clear()
    monkeypatch.setattr(train_module, "CHECKPOINT_EVERY_S", 0.0)  # every step is "too long since the last"
    by_clock = run(tiny(steps=6, eval_every=3, checkpoint_every=1000), tmp_path / "clock", progress=False)
    assert saved_at == [(s, False) for s in range(1, 6)] + [(6, True)]
    saved_at.clear()
    run(tiny(steps=6, eval_every=3, checkpoint_every=0), tmp_path / "never", progress=False)
    assert saved_at == [(6, True)]
    reference = run(tiny(steps=6, eval_every=3, checkpoint_every=1000), tmp_path / "ref", progress=False)
    assert numbers(by_clock) == numbers(reference)  # a checkpoint changes nothing the run computes


def test_a_kept_final_state_stands_in_for_the_checkpoint_on_a_fresh_clone(tmp_path):
    """keep_final_state: the finished run's state is also in results/final_states (committed); with
    checkpoints/ gone, as on a fresh clone, the weights load from it and a longer run goes on from it."""
    import shutil

    from bench.harness.records import final_state_path, has_weights

    short = tiny(steps=200, eval_every=1, time_limit_s=0.02, keep_final_state=True)
    assert short.hash == tiny(steps=200, eval_every=1, time_limit_s=0.02).hash  # not hashed
    base = run(short, tmp_path, progress=False)
    assert base.status == "ok" and final_state_path(short, tmp_path).exists()
    trained = load_model(short, tmp_path).state_dict()
    shutil.rmtree(tmp_path / "checkpoints")
    assert has_weights(short, tmp_path)
    kept = load_model(short, tmp_path).state_dict()
    assert all(torch.equal(trained[k], kept[k]) for k in trained)
    longer = run(tiny(steps=200, eval_every=1, time_limit_s=1000.0, extends=short.hash), tmp_path, progress=False)
    assert longer.resumed_at == [base.steps_done] and longer.steps_done == 200
    plain = tiny(steps=5)
    run(plain, tmp_path, progress=False)
    assert not final_state_path(plain, tmp_path).exists()  # only where the config asks
