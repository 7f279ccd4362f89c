"""The constructions table and the GD-vs-Newton figure.

    python -m bench constructions [--batch 256] [--steps 400] [--seed 0] [--out results/constructions]

Writes constructions.json (every curve and number), constructions.md (the tables) and
gd_vs_newton.png. Errors are medians over `batch` least-squares problems (D=5, N=20,
eta=0.5) of the per-problem MSE of the answer against the float64 least-squares solution;
"to floor" is the first iteration (and the depth it costs) whose median error is at or
below 1e-14 in float32 and 1e-28 in float64. See curves.py for the definitions.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from primitives import make_task, stream_generator

from architectures.constructions.baseconv_gd import (
    baseconv_gd_step,
    baseconv_gd_step_3layer,
    baseconv_gd_step_broadcast,
    baseconv_gd_unrolled,
)
from architectures.constructions.baseconv_newton import baseconv_gd_gram, baseconv_newton_schulz
from architectures.constructions.baseconv_primitives import baseconv_linear, baseconv_multiply, baseconv_read
from bench.harness.records import atomic_write_text
from bench.experiments.construction_curves import FLOOR_THRESHOLDS, Curve, gd_iterate_curve, gram_gd_curve, newton_curve, unrolled_gd_curve
from architectures.constructions.linear_attention_gd import linear_attention_gd_step

D, N, ETA = 5, 20, 0.5
NAMES = ("float32", "float64")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}"
    return str(v)


def _floor_point(curve: Curve, name: str) -> tuple[int | None, int | None]:
    t = curve.first_below(FLOOR_THRESHOLDS[name])
    return t, (None if t is None else curve.layers[t])


def _best_refinement(refinement: dict, name: str) -> dict | None:
    """The (K, rounds) pair that reaches the floor in the fewest layers."""
    best = None
    for K, curve in refinement.items():
        r = curve.first_below(FLOOR_THRESHOLDS[name])
        if r is not None and (best is None or curve.layers[r] < best["layers"]):
            best = {"K": K, "rounds": r, "layers": curve.layers[r], "median": curve.median[r]}
    return best


def least_squares_rows(batch: int, steps: int, seed: int, ns_iterations: int, rounds: int) -> tuple[list[dict], dict]:
    common = dict(D=D, N=N, eta=ETA, batch=batch, seed=seed)
    curves = {
        "baseconv_gd_step": gd_iterate_curve("baseconv", steps=steps, **common),
        "baseconv_gd_step_3layer": gd_iterate_curve("baseconv_3layer", steps=steps, **common),
        "baseconv_gd_step_broadcast": gd_iterate_curve("baseconv_broadcast", steps=steps, **common),
        "linear_attention_gd_step": gd_iterate_curve("linear_attention", steps=steps, **common),
        "baseconv_gd_unrolled": unrolled_gd_curve(steps=steps, **common),
        "baseconv_gd_gram": gram_gd_curve(steps=steps, **common),
        "baseconv_newton_schulz": newton_curve(iterations=ns_iterations, rounds=rounds, **common),
    }
    costs = {
        "baseconv_gd_step": baseconv_gd_step(D, N, ETA),
        "baseconv_gd_step_3layer": baseconv_gd_step_3layer(D, N, ETA),
        "baseconv_gd_step_broadcast": baseconv_gd_step_broadcast(D, N, ETA),
        "linear_attention_gd_step": linear_attention_gd_step(D, N, ETA),
        "baseconv_gd_unrolled": baseconv_gd_unrolled(D, N, ETA, steps=1),
        "baseconv_gd_gram": baseconv_gd_gram(D, N, ETA, steps=1),
        "baseconv_newton_schulz": baseconv_newton_schulz(D, N, ETA, iterations=1),
    }
    rows = []
    for key, c in costs.items():
        row = {
            "construction": key,
            "architecture": c.model.config.name + ("" if c.model.config.causal else " (non-causal)"),
            "layers_per_step": c.layers_per_step,
            "setup_layers": c.setup_layers,
            "width": c.width,
            "description": c.description,
        }
        for name in NAMES:
            entry = curves[key][name]
            curve = entry["iterations"] if key == "baseconv_newton_schulz" else entry["construction"]
            t, layers = _floor_point(curve, name)
            row[name] = {
                "final_median_mse": curve.median[-1],
                "final_mean_mse": curve.mean[-1],
                "min_median_mse": min(curve.median),
                "iterations_to_floor": t,
                "layers_to_floor": layers,
                "max_relative_difference": entry.get("max_relative_difference", entry.get("max_relative_difference_ns")),
            }
            if key == "baseconv_newton_schulz":
                row[name]["refinement_to_floor"] = _best_refinement(entry["refinement"], name)
        rows.append(row)
    true_row = {"construction": "true_gd", "architecture": "primitives.algorithms.gd_iterates", "layers_per_step": None,
                "setup_layers": None, "width": None, "description": f"GD (eta={ETA}) run directly in the dtype"}
    for name in NAMES:
        curve = curves["baseconv_gd_step"][name]["true_gd"]
        t, _ = _floor_point(curve, name)
        true_row[name] = {"final_median_mse": curve.median[-1], "final_mean_mse": curve.mean[-1],
                          "min_median_mse": min(curve.median), "iterations_to_floor": t, "layers_to_floor": None}
    rows.append(true_row)
    return rows, curves


def primitive_rows(batch: int, seed: int) -> list[dict]:
    rows = []
    for task_name, builder in (("read", baseconv_read), ("linear", baseconv_linear), ("multiply", baseconv_multiply)):
        task = make_task(task_name)
        row = {"construction": f"baseconv_{task_name}", "task": task.describe(), "layers": 1}
        for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
            c = builder(task, dtype=dtype)
            data = task.sample(batch, generator=stream_generator(seed, "eval"), dtype=dtype)
            with torch.no_grad():
                pred = c.model(data.inputs)
            mse = task.metrics(pred, data)["mse"]
            floor = task.floor(dtype, n=batch, seed=seed)
            row["width"] = c.width
            row[name] = {"mse": mse, "floor": floor, "mse_over_floor": (mse / floor) if floor > 0 else None,
                         "bit_exact": bool(torch.equal(pred, data.targets))}
        rows.append(row)
    return rows


def markdown(ls_rows: list[dict], prim_rows: list[dict], params: dict) -> str:
    lines = [
        "# Hand-set constructions",
        "",
        f"Least squares D={D}, N={N}, eta={ETA}; {params['batch']} problems (seed {params['seed']}, eval stream); "
        "median over problems of the MSE of the answer vs the float64 least-squares solution. "
        "'to floor': first iteration (and depth) with median MSE <= 1e-14 (float32) / 1e-28 (float64). "
        "One-step constructions are iterated by feeding x_{t+1} back as token 0 (baseconv_gd_step_broadcast: "
        "into every token, Liu et al.'s layout); single-pass ones read every "
        "iteration from one forward pass. Newton-Schulz iterations count k (iterate k = GD step 2^k).",
        "",
        f"Command: `python -m bench constructions --batch {params['batch']} --steps {params['steps']} "
        f"--seed {params['seed']}`",
        "",
        "| construction | model | layers/step | setup layers | width | fp32 MSE | fp64 MSE | fp32 iters (layers) to floor "
        "| fp64 iters (layers) to floor | max rel. diff. vs reference (fp64) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ls_rows:
        f32, f64 = r["float32"], r["float64"]
        def to_floor(e):
            if e["iterations_to_floor"] is None:
                return "not reached"
            return f"{e['iterations_to_floor']}" + ("" if e["layers_to_floor"] is None else f" ({e['layers_to_floor']})")
        lines.append(
            f"| {r['construction']} | {r['architecture']} | {_fmt(r['layers_per_step'])} | {_fmt(r['setup_layers'])} "
            f"| {_fmt(r['width'])} | {_fmt(f32['final_median_mse'])} | {_fmt(f64['final_median_mse'])} | {to_floor(f32)} "
            f"| {to_floor(f64)} | {_fmt(f64.get('max_relative_difference'))} |"
        )
    ns = next(r for r in ls_rows if r["construction"] == "baseconv_newton_schulz")
    lines += ["", "Newton-Schulz with refinement (each round a full pass of depth 4 + K, answer fed back as token 0), "
              "fewest layers to the floor:", ""]
    for name in NAMES:
        best = ns[name]["refinement_to_floor"]
        if best:
            lines.append(f"- {name}: K={best['K']}, {best['rounds']} round(s), {best['layers']} layers, median MSE {best['median']:.2e}")
        else:
            lines.append(f"- {name}: not reached")
    lines += [
        "",
        "| primitive | layers | width | fp32 MSE | fp32 floor | fp32 MSE / floor | fp32 bit-exact | fp64 MSE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in prim_rows:
        f32, f64 = r["float32"], r["float64"]
        lines.append(
            f"| {r['task']['name']} | {r['layers']} | {r['width']} | {_fmt(f32['mse'])} | {_fmt(f32['floor'])} "
            f"| {_fmt(f32['mse_over_floor']) if f32['mse_over_floor'] is not None else '-'} | {f32['bit_exact']} "
            f"| {_fmt(f64['mse'])} |"
        )
    return "\n".join(lines) + "\n"


def figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_it, ax_layers) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"float32": "--", "float64": "-"}
    colors = {"gd": "tab:blue", "true": "black", "newton": "tab:red", "la": "tab:green", "gram": "tab:purple",
              "unrolled": "tab:cyan"}
    for name in NAMES:
        ls = styles[name]
        gd = curves["baseconv_gd_step"][name]
        ns = curves["baseconv_newton_schulz"][name]["iterations"]
        ax_it.plot(gd["true_gd"].median, ls, color=colors["true"], lw=3, alpha=0.3, label=f"true GD ({name})")
        ax_it.plot(gd["construction"].median, ls, color=colors["gd"], label=f"BaseConv GD construction ({name})")
        ax_it.plot(range(len(ns.median)), ns.median, ls, color=colors["newton"], marker="o", ms=3,
                   label=f"BaseConv Newton-Schulz ({name})")
        for key, color, label in (("baseconv_gd_step", colors["gd"], "BaseConv GD step x t"),
                                  ("baseconv_gd_step_3layer", "tab:brown", "BaseConv 3-layer GD step x t"),
                                  ("linear_attention_gd_step", colors["la"], "lin. attention GD step x t"),
                                  ("baseconv_gd_unrolled", colors["unrolled"], "BaseConv GD unrolled (non-causal)"),
                                  ("baseconv_gd_gram", colors["gram"], "BaseConv GD, M in stream")):
            c = curves[key][name]["construction"]
            ax_layers.plot(c.layers[1:], c.median[1:], ls, color=color, label=f"{label} ({name})")
        ax_layers.plot(ns.layers, ns.median, ls, color=colors["newton"], marker="o", ms=3, label=f"Newton-Schulz ({name})")
        best = _best_refinement(curves["baseconv_newton_schulz"][name]["refinement"], name)
        if best and best["rounds"] > 1:
            refined = curves["baseconv_newton_schulz"][name]["refinement"][best["K"]]
            ax_layers.plot(refined.layers[1:], refined.median[1:], ls, color="tab:orange", marker="s", ms=4,
                           label=f"Newton-Schulz K={best['K']}, refinement rounds ({name})")
    for ax in (ax_it, ax_layers):
        ax.set_yscale("log")
        ax.set_ylabel("median MSE vs least-squares solution")
        ax.axhline(1e-14, color="grey", lw=0.5)
        ax.axhline(1e-28, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    ax_it.set_xlabel("iteration (GD step t; Newton-Schulz iteration k = GD step 2^k)")
    ax_it.set_title(f"GD vs Newton-Schulz, least squares D={D}, N={N}, eta={ETA}")
    ax_layers.set_xscale("log")
    ax_layers.set_xlabel("layers (model depth)")
    ax_layers.set_title("error vs depth spent")
    ax_it.legend(fontsize=7)
    ax_layers.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@contextlib.contextmanager
def flushed_subnormals():
    """Flush subnormals to zero while the curves run.

    Newton-Schulz's E_k = (I - eta M)^(2^k) underflows once converged; on x86 CPUs arithmetic
    on subnormals is ~100x slower. Flushing changes only values below 1e-38 (float32) or
    1e-308 (float64), far under every error reported.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _curves_json(curves: dict) -> dict:
    def conv(v):
        if isinstance(v, Curve):
            return v.to_dict()
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v
    return conv(curves)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench constructions", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="least-squares problems per curve")
    parser.add_argument("--steps", type=int, default=400, help="GD steps per curve")
    parser.add_argument("--ns-iterations", type=int, default=10, help="Newton-Schulz iterations in one pass")
    parser.add_argument("--rounds", type=int, default=3, help="Newton-Schulz refinement rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/constructions"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small matmuls: one thread is fastest, and fixes the BLAS summation order
    params = {"D": D, "N": N, "eta": ETA, "batch": args.batch, "steps": args.steps, "seed": args.seed,
              "ns_iterations": args.ns_iterations, "rounds": args.rounds, "torch": torch.__version__}
    with flushed_subnormals():
        ls_rows, curves = least_squares_rows(args.batch, args.steps, args.seed, args.ns_iterations, args.rounds)
    prim_rows = primitive_rows(args.batch, args.seed)
    result = {"parameters": params, "least_squares": ls_rows, "primitives": prim_rows, "curves": _curves_json(curves)}
    atomic_write_text(args.out / "constructions.json", json.dumps(result, indent=1) + "\n")
    md = markdown(ls_rows, prim_rows, params)
    atomic_write_text(args.out / "constructions.md", md)
    figure(curves, args.out / "gd_vs_newton.png")
    print(md)
    return result
