"""Train until an eval-MSE target is reached, timing only the training.

The time-to-precision benchmarks (bench/benchmarks/test_bench_training.py) use `train_until`. A recipe
may name a second optimizer in its run config (RunConfig.polish) to switch to once the first
stalls: L-BFGS levels off near 1e-8 on MULTIPLY in float32, and Levenberg-Marquardt steps from
that point go on down by orders of magnitude. The switch is the trainer's own
(Trainer.maybe_switch); here training is driven by a wall-clock budget instead of a step
count, and nothing is written.

    python -m bench time-to-precision results/benchmarks/time_to_precision_paper_model_*_cpu.json \
        --out results/figures/time_to_precision_paper_model.png

plots the eval MSE of each case over its seconds of training and prints a Markdown table of when
each reached its milestones.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.harness.train import Diverged, Trainer, synchronize


def train_until(trainer: Trainer, target: float, budget_s: float, eval_every: int,
                milestones: tuple[float, ...] = ()) -> dict:
    """Step until eval MSE <= target or `budget_s` seconds of training are spent.

    Evaluation time is not counted. With a polish optimizer in the trainer's config, switch to
    it once the first one stalls and evaluate every step from then on; the switch (step,
    seconds) is reported as `switched_at`. `best_mse` is the lowest finite eval MSE (None if
    there was none); `diverged` is None, or why the run stopped early. `milestones` (MSE levels
    above the target): the training seconds at which each was first reached, in `seconds_to`
    (None: not reached).
    """
    if target <= 0 or budget_s <= 0 or eval_every < 1:
        raise ValueError(f"need target > 0, budget_s > 0 and eval_every >= 1, got {target}, {budget_s}, {eval_every}")
    train_s, best, curve, switched_at, diverged = 0.0, None, [], None, None
    history: list = []  # (step, the second-order optimizer's last step) at each eval
    seconds_to: dict[str, float | None] = {f"{m:g}": None for m in (*milestones, target)}
    while train_s < budget_s and diverged is None:
        if switched_at is None:
            trainer.maybe_switch()
            if trainer.state.switched_at is not None:
                switched_at, eval_every = (trainer.state.step, round(train_s, 2)), 1
        t0 = time.perf_counter()
        try:
            for _ in range(eval_every):
                trainer.step_once()
                if train_s + time.perf_counter() - t0 >= budget_s:
                    break
        except Diverged as why:  # a non-finite loss or weights: no later step can recover
            diverged = str(why)
        synchronize(trainer.device)
        train_s += time.perf_counter() - t0
        if diverged is None:
            try:
                trainer.add_curve_point()  # the trainer's curve is what its polish switch reads
            except Diverged as why:
                diverged = str(why)
        mse = trainer.state.curve[-1].eval_mse if diverged is None else None  # None: not a finite number
        if mse is not None:
            best = mse if best is None else min(best, mse)
        curve.append((trainer.state.step, round(train_s, 2), mse))
        if diverged is None and trainer.state.curve[-1].second_order is not None:
            history.append((trainer.state.step, trainer.state.curve[-1].second_order))
        for level in (*milestones, target):
            if mse is not None and seconds_to[f"{level:g}"] is None and mse <= level:
                seconds_to[f"{level:g}"] = round(train_s, 2)
        if mse is not None and mse <= target:
            return dict(reached=True, seconds_to_target=train_s, steps_to_target=trainer.state.step, best_mse=best,
                        switched_at=switched_at, diverged=None, seconds_to=seconds_to, curve=curve,
                        optimizer_history=history)
    return dict(reached=False, seconds_to_target=None, steps_to_target=None, steps_run=trainer.state.step,
                seconds_run=train_s, best_mse=best, switched_at=switched_at, diverged=diverged, seconds_to=seconds_to,
                curve=curve, optimizer_history=history)


# ---- the figure and table of benchmark JSONs written by the cases above ------------------------


def cases(paths: list[Path]) -> list[dict]:
    """One dict per time-to-precision case in the pytest-benchmark JSONs: its name, source file and
    extra_info (cases without a curve are left out)."""
    out = []
    for path in paths:
        for bench in json.loads(Path(path).read_text()).get("benchmarks", []):
            info = bench.get("extra_info", {})
            if info.get("curve"):
                out.append({"name": bench["name"].split("[", 1)[-1].rstrip("]"), "file": Path(path).name, **info})
    names = [r["name"] for r in out]
    for r in out:  # one case measured twice (two files): the file tells them apart
        if names.count(r["name"]) > 1:
            r["name"] += f" ({Path(r['file']).stem})"
    return out


def table(rows: list[dict]) -> str:
    def seconds(row, level):
        s = (row.get("seconds_to") or {}).get(f"{level:g}")
        return "not reached" if s is None else f"{s:.0f} s"

    lines = ["| case | eval MSE <= 1e-8 | eval MSE <= 1e-12 | best eval MSE | steps | seconds | load average | file |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = r.get("steps_to_target") or r.get("steps_run")
        spent = r.get("seconds_to_target") or r.get("seconds_run") or 0.0
        load = r.get("load_avg") or [float("nan")]
        lines.append(f"| {r['name']} | {seconds(r, 1e-8)} | {seconds(r, r.get('target_mse', 1e-12))} | "
                     f"{r['best_mse']:.2e} | {steps} | {spent:.0f} | {load[0]:.1f} | {r['file']} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        points = [(t, m) for _, t, m in r["curve"] if m is not None and m > 0]
        if points:
            ax.plot(*zip(*points), label=r["name"], linewidth=1.2)
    for level in sorted({1e-8, *(r.get("target_mse", 1e-12) for r in rows)}):
        ax.axhline(level, color="gray", linestyle="--", linewidth=0.8)
    floor = next((r["floor"] for r in rows if r.get("floor")), None)
    if floor:
        ax.axhline(floor, color="black", linestyle=":", linewidth=1, label="float32 floor")
    ax.set(yscale="log", xlabel="seconds of training (one CPU thread)", ylabel="eval MSE")
    ax.set_title(title, fontsize=10, pad=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench time-to-precision",
                                description="Plot and tabulate time-to-precision benchmark JSONs.")
    p.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files of bench/benchmarks/test_bench_training.py")
    p.add_argument("--out", type=Path, help="PNG to write (default: print the table only)")
    p.add_argument("--title", default="BaseConv, the paper's primitive model (100,810 weights), MULTIPLY, float32")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.json if not f.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    rows = cases(args.json)
    if not rows:
        p.error("none of these files has a time-to-precision case with a curve")
    print(table(rows))
    if args.out is not None:
        plot(rows, args.out, args.title)
        print(f"wrote {args.out}")
    return 0
