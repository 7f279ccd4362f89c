"""What each choice of the matrix-free Levenberg-Marquardt gives, on the same runs.

    python -m bench lm-choices --late --seconds 600 --out results/lm_choices/late   # near the level
    python -m bench lm-choices --gd-step --seconds 900 --out results/lm_choices/gd_step
    python -m bench lm-choices --gd-step-early --seconds 900 --out results/lm_choices/gd_step_early

Each comparison starts from one shared state and changes one thing of the solver per variant, on one
thread for `--seconds` seconds each; the findings are in docs/studies/solver_choices.md. Its first two
comparisons (the curvature slice, the CG cap, `linearize`, the damping rule and the Marquardt scaling from a
warm start; the two preconditioners from the random start) ran options since retired: their logs stay in
results/lm_choices/ as the record of what they gave, and they are not run again.

--late starts where the time-to-precision recipe `cg_lm_512_then_2048` slows down (after its first
`--late-warmup-steps` steps, 48 by default, on 2,048 training problems since step 40) and changes one
thing of its second phase per variant (LATE_VARIANTS): the curvature on all 2,048 problems, or a fraction
of each solved step. `--late-only` runs some of them and adds them to summary.json.
The warm state is kept in results/scratch/lm_choices_late_warm.pt (git ignores it) for the next call.

--gd-step starts from the end of grid 8's warm-started BaseConv GD step given 121 minutes (the run of
to_the_limit_extended: its checkpoint must be in results/checkpoints) and
changes one thing of its LM phase per variant (GD_STEP_VARIANTS): half steps, a damping floor,
a curvature slice twice as large, a line search.

--gd-step-early starts that run's LM phase after a quarter of its Adam phase (24,000 steps; the warm
state is kept in results/scratch for the next call) and compares the LM as grid 8 has it with the LM
step of each curvature slice's own problem (`gradient: "slice"`) and with half steps.
Two calls with different --gd-early-only can run at once into the same --out. `--gd-step-run HASH`
makes --gd-step start from the warm-started run of `to_the_limit_slice` instead (from its checkpoint,
or its kept final state in results/final_states).

Each variant writes <out>/<name>.log, one line per LM step (seconds, CG products so far, train
MSE before the step, eval MSE after it, damping mu, rho, CG products and relative residual of
the step, backtracking), and adds its last line to <out>/summary.json. Steps are deterministic on one
thread; the seconds are this machine's.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from bench.harness.config import make_run_config
from bench.harness.train import Trainer

MODEL = {"name": "baseconv", "params": {"width": 64, "depth": 2, "activation": "relu", "prenorm": False,
                                        "final_norm": False, "conv_kind": "long"}}

# --late: the time-to-precision recipe cg_lm_512_then_2048 (bench/benchmarks/test_bench_training.py), and what
# each variant changes in its second phase
LATE_POLISH = {"train_size": 2048, "curvature_size": 256}
LATE_VARIANTS = {
    "late_as_is": {},
    "late_curvature_2048": {"curvature_size": 2048},
    "late_half_steps": {"lr": 0.5},  # where rho is low: does half of each solved step gain as much?
    "late_quarter_steps": {"lr": 0.25},
}

# --gd-step: grid 8's warm-started BaseConv GD step (bench.grids.gd_step_warm_started) given 121
# minutes (to_the_limit_extended), and what each variant changes in its LM phase from there. Its
# damping cycles: it falls while rho > 0.5, and there the step fitted to the curvature slice
# overshoots on the rest of the set.
GD_STEP_VARIANTS = {
    "gd_as_is": {},
    "gd_half_steps": {"lr": 0.5},
    "gd_damping_floor": {"min_damping": 2e-4},  # never into the overshooting part of the cycle
    "gd_curvature_4096": {"curvature_size": 4096},
    "gd_line_search": {"line_search": True},  # the length per step among 1, 1/2, 1/4 where rho < 0.5
    # the Gauss-Newton step of the whole set: is the level the slice's?
    "gd_curvature_whole_set": {"curvature_size": 16384, "gradient": "whole", "cg": {"warm_start": False}},
}


# --gd-step-early: the same run's LM phase started early, after GD_EARLY_ADAM_STEPS of its Adam phase (a
# quarter of it), so that a variant shows its own rate over many steps rather than the end of another's
GD_EARLY_ADAM_STEPS = 24_000
GD_EARLY_VARIANTS = {
    "early_as_is": {},
    # g and rho from the curvature slice (bench.harness.config: LevenbergMarquardtConfig.gradient); the last step,
    # solved on another slice, is no start for this one
    "early_slice_gradient": {"gradient": "slice", "cg": {"warm_start": False}},
    # each step projects onto a slice twice as large, at twice the cost of a product
    "early_slice_curvature_4096": {"gradient": "slice", "cg": {"warm_start": False}, "curvature_size": 4096},
    "early_half_steps": {"lr": 0.5},
}


def gd_step_runs() -> dict:
    """The warm-started GD steps --gd-step can start from, by hash: grid 8's given 121 minutes (the default)
    and the one with each slice's own LM step, with the grid that trains each."""
    from bench.grids import to_the_limit_extended, to_the_limit_slice

    runs = {cfg.hash: (cfg, "to_the_limit_extended_ci, about 2 hours of one core") for cfg in to_the_limit_extended("ci")}
    runs.update({cfg.hash: (cfg, "to_the_limit_slice_ci, about 80 minutes of one core")
                 for cfg in to_the_limit_slice("ci") if cfg.polish is not None})
    return runs


def gd_step_run(run: Optional[str] = None):
    """The run --gd-step starts from: `run` (a hash of `gd_step_runs`), by default grid 8's 121-minute one."""
    runs = gd_step_runs()
    if run is None:
        return next(iter(runs.values()))[0]
    if run not in runs:
        raise SystemExit(f"--gd-step-run must be one of {', '.join(runs)}, got {run!r}")
    return runs[run][0]


def gd_step_trainer(polish_overrides: dict, results: Path, run: Optional[str] = None) -> Trainer:
    cfg = gd_step_run(run)
    cfg = cfg.model_copy(update={"extends": None, "polish": cfg.polish.model_copy(update=polish_overrides)})
    return Trainer(cfg, results, progress=False)


def gd_step_start(run: Optional[str] = None) -> dict:
    """The checkpoint (or kept final state) of `gd_step_run(run)`, or a SystemExit that says how to make it."""
    from bench.harness.records import load_checkpoint

    cfg = gd_step_run(run)
    state = load_checkpoint(cfg, "results")
    if state is None:
        raise SystemExit(f"--gd-step starts from the checkpoint of run {cfg.hash}, which is not in results/checkpoints "
                         f"or results/final_states: train it first (python -m bench sweep bench.grids:"
                         f"{gd_step_runs()[cfg.hash][1]})")
    return state


def gd_early_trainer(polish_overrides: dict, results: Path, adam_steps: int) -> Trainer:
    """The 36-minute warm-started GD step (`gd_step_warm_started`) switching to its LM phase at `adam_steps`."""
    from bench.grids import gd_step_warm_started, get_budget

    cfg = gd_step_warm_started(get_budget("ci"))
    cfg = cfg.model_copy(update={"polish_after": adam_steps, "time_limit_s": None,
                                 "polish": cfg.polish.model_copy(update=polish_overrides)})
    return Trainer(cfg, results, progress=False)


def gd_early_warm_state(steps: int, cache: Path, scratch: Path, log) -> dict:
    """The state of the warm-started GD step after `steps` Adam steps: from `cache` if it holds that, else trained."""
    warm = gd_early_trainer({}, scratch / "gd_early_warmup", adam_steps=steps)
    return cached_warm_state(warm, steps, cache, log, switch=False)


def late_config(polish_overrides: dict):
    """cg_lm_512_then_2048 with its second phase's LM changed by `polish_overrides`."""
    from bench.grids import matrix_free_lm

    return make_run_config(task={"name": "multiply"}, model=MODEL, steps=10**9, eval_size=1024,
                           optimizer=matrix_free_lm(), polish_after=40, polish_patience=1000,
                           polish=matrix_free_lm(**{**LATE_POLISH, **polish_overrides}))


def late_trainer(polish_overrides: dict, results: Path) -> Trainer:
    return Trainer(late_config(polish_overrides), results, progress=False)


def late_warm_state(steps: int, cache: Path, scratch: Path, log) -> dict:
    """The state of `late_trainer({})` after `steps` steps: from `cache` if it holds that, else trained."""
    return cached_warm_state(late_trainer({}, scratch / "late_warmup"), steps, cache, log, switch=True)


def cached_warm_state(warm: Trainer, steps: int, cache: Path, log, switch: bool, log_every: int = 2000) -> dict:
    """`warm`'s state after `steps` steps (switching to its polish phase when due if `switch`): from `cache`
    if it holds that state of the same config, else trained and saved there."""
    if cache.exists():
        state = torch.load(cache, map_location="cpu", weights_only=False)
        if state.get("config_hash") == warm.cfg.hash and state.get("step") == steps:
            return state
    while warm.state.step < steps:
        if switch and warm.state.switched_at is None:
            warm.maybe_switch()
        warm.step_once()
        if warm.full_batch or warm.state.step % log_every == 0 or warm.state.step == steps:
            point = warm.add_curve_point()
            log(f"{warm.state.step} eval={point.eval_mse:.3e}")
    state = warm.state_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache)
    return state


def train(trainer: Trainer, *, seconds: float = float("inf"), steps: int = 10**9, log=None) -> list[dict]:
    """LM steps until `seconds` of wall time (steps and evals) or `steps` steps; one row per step."""
    rows, products, t0 = [], 0, time.perf_counter()
    trainer.add_curve_point()
    while time.perf_counter() - t0 < seconds and len(rows) < steps:
        trainer.step_once()
        point = trainer.add_curve_point()
        d = trainer.optimizer.last
        products += d["cg_products"]
        row = dict(step=len(rows) + 1, t=round(time.perf_counter() - t0, 1), products=products,
                   train=point.train_loss, eval=point.eval_mse, mu=d.get("damping"), rho=d.get("rho"),
                   cg=d["cg_products"], res=d.get("cg_rel_residual"), bt=d.get("backtracked"))
        rows.append(row)
        if log is not None:
            log(f"{row['step']} t={row['t']} prod={products} train={row['train']:.3e} eval={row['eval']:.3e} "
                f"mu={row['mu']:.2e} rho={row['rho']:.2f} cg={row['cg']} res={row['res']:.2e} bt={row['bt']}")
    return rows


def run_variant(trainer: Trainer, log_path: Path, start_line: str, seconds: float) -> list[dict]:
    """Train one variant for `seconds`, its log (a start line, then one line per step) in `log_path`."""
    with open(log_path, "w") as f:
        print(start_line, file=f, flush=True)
        return train(trainer, seconds=seconds, log=lambda line: print(line, file=f, flush=True))


def add_to_summary(path: Path, name: str, entry: dict) -> None:
    """Set `name` in the JSON object at `path`, read and written under a lock: two calls writing variants
    to the same --out at once keep both."""
    from filelock import FileLock

    from bench.harness.records import atomic_write_text

    with FileLock(str(path) + ".lock"):
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary[name] = entry
        atomic_write_text(path, json.dumps(summary, indent=1))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench lm-choices", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/lm_choices"))
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--late", action="store_true",
                    help="the LATE_VARIANTS from step --late-warmup-steps of cg_lm_512_then_2048")
    ap.add_argument("--late-warmup-steps", type=int, default=48)
    ap.add_argument("--late-only", nargs="*", choices=sorted(LATE_VARIANTS))
    ap.add_argument("--gd-step", action="store_true",
                    help="the GD_STEP_VARIANTS from grid 8's 121-minute warm-started GD step")
    ap.add_argument("--gd-step-only", nargs="*", choices=sorted(GD_STEP_VARIANTS))
    ap.add_argument("--gd-step-run", help="the hash of the run --gd-step starts from (default: grid 8's 121-minute "
                    "one; also: the warm-started run of to_the_limit_slice), from its checkpoint wherever it is")
    ap.add_argument("--gd-step-early", action="store_true",
                    help="the GD_EARLY_VARIANTS from step --gd-early-adam-steps of that run's Adam phase")
    ap.add_argument("--gd-early-adam-steps", type=int, default=GD_EARLY_ADAM_STEPS)
    ap.add_argument("--gd-early-only", nargs="*", choices=sorted(GD_EARLY_VARIANTS))
    return ap


def comparison(args, scratch: Path):
    """(the state every variant starts from, the variants, a maker of a variant's trainer) of the comparison
    `args` names."""
    if args.gd_step_early:
        adam_steps = args.gd_early_adam_steps
        with open(args.out / "warmup.log", "a") as f:
            state = gd_early_warm_state(adam_steps, Path(f"results/scratch/lm_choices_gd_early_{adam_steps}.pt"),
                                        scratch, log=lambda line: print(line, file=f, flush=True))
        return (state, {k: GD_EARLY_VARIANTS[k] for k in args.gd_early_only or GD_EARLY_VARIANTS},
                lambda settings, results: gd_early_trainer(settings, results, adam_steps))
    if args.late:
        with open(args.out / "late_warmup.log", "a") as f:
            state = late_warm_state(args.late_warmup_steps, Path("results/scratch/lm_choices_late_warm.pt"),
                                    scratch, log=lambda line: print(line, file=f, flush=True))
        return state, {k: LATE_VARIANTS[k] for k in args.late_only or LATE_VARIANTS}, late_trainer
    return (gd_step_start(args.gd_step_run), {k: GD_STEP_VARIANTS[k] for k in args.gd_step_only or GD_STEP_VARIANTS},
            lambda settings, results: gd_step_trainer(settings, results, args.gd_step_run))


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if not (args.late or args.gd_step or args.gd_step_early):
        ap.error("choose a comparison: --late, --gd-step or --gd-step-early (the first two comparisons were of "
                 "options since retired: docs/studies/solver_choices.md)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp())
    state, variants, make = comparison(args, scratch)
    for name, settings in variants.items():
        trainer = make(settings, scratch / name)
        trainer.load_state_dict(state)  # weights, the training problems, and the LM's damping and statistics
        trainer.maybe_switch()  # --gd-step-early: from Adam to the LM (the others are in their LM phase)
        rows = run_variant(trainer, args.out / f"{name}.log",
                           f"start step {trainer.state.step} eval {trainer.evaluate()['mse']}", args.seconds)
        # a cut-off call keeps the variants it finished; --*-only calls add to the ones already there
        add_to_summary(args.out / "summary.json", name, dict(settings=settings, final=rows[-1] if rows else None))
        print(f"{name}: eval MSE {rows[-1]['eval']:.3e} after {rows[-1]['t']} s, {len(rows)} steps")
    return 0
