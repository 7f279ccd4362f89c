"""The ODE comparison's tables, ratios and figure: results/ode/*.md and results/figures/ode_ood.png.

bench/experiments/ode_application.py runs every method and hands its result here (`write`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from bench.experiments.ode_application import (AXES, IN_DISTRIBUTION, METHOD_ORDER, PAPER_HEADLINES, PAPER_IN_DISTRIBUTION,
                                               PAPER_TRANSFORMER_OPERATOR_SCALE, axis_points)
from bench.harness.records import atomic_write_text
from bench.reporting.frames import fmt_mse


# ---- ratios -----------------------------------------------------------------------------------


def final_rows(rows: list[dict]) -> pd.DataFrame:
    """One row per (label, dtype, setting): the last iteration of each iterative method."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.assign(_it=df["iterations"].fillna(-1))
    idx = df.groupby(["label", "dtype", "setting"])["_it"].idxmax()
    df = df.loc[idx].drop(columns="_it")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return df.sort_values(["method", "label", "dtype"], key=lambda c: c.map(order) if c.name == "method" else c,
                          kind="stable")


def ratios(rows: list[dict]) -> dict:
    """The headline ratios of every method against the Transformer (None where the Transformer is absent)."""
    df = final_rows(rows)
    out = {"definitions": {
        "mse_ratio": "median squared error of the Transformer in distribution / that of the method",
        "ood_gap": "median error at an OOD setting / median error in distribution; a method's gap is its largest "
                   "over the OOD settings",
        "ood_gap_ratio": "the Transformer's gap / the method's gap",
        "ood_gap_difference_ratio": "the same with (median OOD - median in distribution), the largest over the settings"},
        "methods": []}
    if df.empty:
        return out
    transformer = df[df["method"] == "transformer"]
    t_id = transformer[transformer["setting"] == IN_DISTRIBUTION]["median"]
    t_id = t_id.iloc[0] if len(t_id) else None
    t_gap = t_diff = None
    if t_id:
        t_ood = transformer[transformer["setting"] != IN_DISTRIBUTION]["median"]
        t_gap, t_diff = (t_ood / t_id).max(), (t_ood - t_id).max()
    for (label, dtype), g in df.groupby(["label", "dtype"], sort=False):
        in_dist = g[g["setting"] == IN_DISTRIBUTION]["median"]
        ood = g[g["setting"] != IN_DISTRIBUTION]
        m_id = in_dist.iloc[0] if len(in_dist) else None
        entry = {"label": label, "dtype": dtype, "method": g["method"].iloc[0], "median_in_distribution": m_id}
        if m_id and len(ood) and ood["median"].notna().all():
            worst = ood.loc[(ood["median"] / m_id).idxmax()]
            entry.update(ood_gap=worst["median"] / m_id, ood_gap_at=worst["setting"],
                         ood_gap_difference=(ood["median"] - m_id).max())
        if t_id and m_id:
            entry["mse_ratio"] = t_id / m_id
        if t_gap is not None and entry.get("ood_gap"):
            entry["ood_gap_ratio"] = t_gap / entry["ood_gap"]
            if entry["ood_gap_difference"] > 0:
                entry["ood_gap_difference_ratio"] = t_diff / entry["ood_gap_difference"]
        out["methods"].append(entry)
    return out


def paper_ratios() -> dict:
    """What the paper's own ODE numbers give (its BaseConv, GD and least squares never ran OOD)."""
    t = PAPER_IN_DISTRIBUTION["Transformer"]
    ood = [v[1] for v in PAPER_TRANSFORMER_OPERATOR_SCALE.values()]
    mid = PAPER_TRANSFORMER_OPERATOR_SCALE[1.0][1]
    return {"mse_ratio_transformer_over_baseconv": t / PAPER_IN_DISTRIBUTION["BaseConv (learned GD step)"],
            "mse_ratio_transformer_over_least_squares": t / PAPER_IN_DISTRIBUTION["least squares"],
            "transformer_ood_gap_operator_scale": max(ood) / mid,
            "transformer_ood_gap_difference_operator_scale": max(ood) - mid}


def least_squares_ratio(tables: Path = Path("results/tables")) -> dict:
    """The MSE ratio on least squares from the suite's own tables (bench.reporting.tables): softmax attention end to
    end (best depth, least_squares_depth) over each learned GD step iterated (gd_iteration levels)."""
    try:
        ls = pd.read_csv(tables / "least_squares_depth.csv")
        levels = pd.read_csv(tables / "gd_iteration.csv")
    except FileNotFoundError as err:
        return {"missing": str(err)}
    attention = ls[ls["model"] == "attention"]
    values = (pd.to_numeric(attention.drop(columns=["model", "paper"], errors="ignore").iloc[0], errors="coerce")
              .dropna().tolist() if len(attention) else [])
    column = "level (median MSE, last 20 iterations)"
    learned = levels[(levels["method"] == "learned") & ~levels["curve"].str.startswith("attention")]
    if not values or learned.empty:
        return {"missing": "no attention least-squares run or learned step in the tables"}
    best = min(values)
    return {"attention_least_squares_best": best, "source": f"{tables}/least_squares_depth.csv, gd_iteration.csv",
            "learned": [{"curve": r["curve"], "level": float(r[column]), "mse_ratio": best / float(r[column])}
                        for _, r in learned.iterrows()]}


# ---- tables and figure ------------------------------------------------------------------------


def cell(r) -> str:
    if r is None:
        return "—"
    text = fmt_mse(r["median"]) + f" [{fmt_mse(r['q25'])}, {fmt_mse(r['q75'])}]"
    return text + (f" ({r['nonfinite']} non-finite)" if r.get("nonfinite") else "")


def row_label(r) -> str:
    it = r["iterations"]
    return r["label"] + ("" if it is None or (isinstance(it, float) and math.isnan(it)) else f", {int(it):,} it.")


def tables(result: dict) -> dict[str, str]:
    """Markdown tables: in distribution with the paper beside ours, one per OOD axis, ratios, floors."""
    df = final_rows(result["rows"])
    learned_missing = [e for e in result["learned"] if not e["status"].startswith("ok")]
    out = {}
    paper_of = {"least_squares": "least squares", "learned_step": "BaseConv (learned GD step)", "gd": "GD",
                "transformer": "Transformer"}
    lines = []
    for (label, dtype), g in df.groupby(["label", "dtype"], sort=False):
        r = g[g["setting"] == IN_DISTRIBUTION]
        if not len(r):
            continue
        r = r.iloc[0].to_dict()
        paper = PAPER_IN_DISTRIBUTION.get(paper_of.get(r["method"], ""), None)
        lines.append({"method": row_label(r), "dtype": dtype, "median [q25, q75]": cell(r), "mean": fmt_mse(r["mean"]),
                      "paper (median)": f"~{paper:.0e}" if paper else "—"})
    for e in learned_missing:
        paper = PAPER_IN_DISTRIBUTION[paper_of[e["role"]]]
        lines.append({"method": e["label"], "dtype": "", "median [q25, q75]": e["status"], "mean": "",
                      "paper (median)": f"~{paper:.0e}"})
    out["in_distribution"] = pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)
    for axis in AXES:
        points = axis_points(axis)
        lines = []
        for (label, dtype), g in df.groupby(["label", "dtype"], sort=False):
            by = {r["setting"]: r for r in g.to_dict("records")}
            if not any(k in by for _, k in points if k != IN_DISTRIBUTION):
                continue
            first = next(iter(by.values()))
            lines.append({"method": row_label(first), "dtype": dtype,
                          **{f"{axis} {v:g}": cell(by.get(k)) for v, k in points}})
        if axis == "operator_scale":
            lines.append({"method": "paper: Transformer (12 layers, 9.48M weights)", "dtype": "float32",
                          **{f"{axis} {v:g}": fmt_mse(m) + (f" [{fmt_mse(lo)}, {fmt_mse(hi)}]" if lo else "")
                             for v, (lo, m, hi) in PAPER_TRANSFORMER_OPERATOR_SCALE.items()}})
        for e in learned_missing:
            lines.append({"method": e["label"], "dtype": "", **{f"{axis} {v:g}": e["status"] for v, _ in points}})
        out[axis] = pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)
    ratio_rows = [{"method": m["label"], "dtype": m["dtype"], "median in distribution": fmt_mse(m["median_in_distribution"]),
                   "largest OOD gap (at)": (f"{m['ood_gap']:.3g} ({m['ood_gap_at']})" if m.get("ood_gap") else "—"),
                   "MSE ratio (Transformer / method)": f"{m['mse_ratio']:.3g}" if m.get("mse_ratio") else "n/a",
                   "OOD gap ratio (Transformer / method)": f"{m['ood_gap_ratio']:.3g}" if m.get("ood_gap_ratio") else "n/a",
                   "gap-difference ratio": (f"{m['ood_gap_difference_ratio']:.3g}"
                                            if m.get("ood_gap_difference_ratio") else "n/a")}
                  for m in result["ratios"]["methods"]]
    out["ratios"] = pd.DataFrame(ratio_rows).to_markdown(index=False, disable_numparse=True)
    floors = pd.DataFrame([{"setting": f["setting"], "float32 floor (target rounding)": fmt_mse(f["float32_floor"]),
                            "solver error (MSE vs Gauss-Legendre)": fmt_mse(f["solver_mse"]),
                            "solver ||err|| / ||u||": f"{f['solver_rel_l2']:.2e}",
                            "target mean square": f"{f['solver_target_mean_square']:.3g}"} for f in result["floors"]])
    out["floors"] = floors.to_markdown(index=False, disable_numparse=True)
    return out


def figure(result: dict):
    """Median squared error (quartile band) vs each OOD axis, one line per method."""
    from bench.reporting.figures import _plt

    plt = _plt()
    df = final_rows(result["rows"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, axis in zip(axes, AXES):
        points = axis_points(axis)
        for (label, dtype), g in df.groupby(["label", "dtype"], sort=False):
            by = {r["setting"]: r for r in g.to_dict("records")}
            xs = [(v, by[k]) for v, k in points if k in by and by[k]["median"] is not None]
            if len(xs) < 2:
                continue
            v = [p[0] for p in xs]
            line, = ax.plot(v, [p[1]["median"] for p in xs], marker="o", label=f"{label} ({dtype})")
            ax.fill_between(v, [p[1]["q25"] or p[1]["median"] for p in xs], [p[1]["q75"] or p[1]["median"] for p in xs],
                            color=line.get_color(), alpha=0.12)
        if axis == "operator_scale":
            v = list(PAPER_TRANSFORMER_OPERATOR_SCALE)
            ax.plot(v, [m for _, m, _ in PAPER_TRANSFORMER_OPERATOR_SCALE.values()], color="black", linestyle="--",
                    marker="s", label="paper: Transformer (median)")
        floor = {f["setting"]: f["float32_floor"] for f in result["floors"]}
        ax.plot([v for v, _ in points], [floor[k] for _, k in points], color="gray", linestyle=":",
                label="float32 floor")
        ax.set(xscale="log", yscale="log", xlabel=axis + (" (x training value)" if axis != "gp_length" else ""),
               title=f"out of distribution: {axis}")
    axes[0].set_ylabel("squared error of u(t_q) (median, quartiles)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.18))
    return fig


def ratios_markdown(result: dict, md: dict[str, str]) -> str:
    """ratios.md: the headline ratios, the paper's own, and what was not run."""
    ns, c = result["newton_schulz_size"], result["config"]
    return "\n".join([
        "### The headline ratios", "", *[f"- {k}: {v}" for k, v in result["ratios"]["definitions"].items()], "",
        f"Paper: \"{PAPER_HEADLINES['mse_ratio']}\"; \"{PAPER_HEADLINES['ood_gap_ratio']}\". Its own ODE numbers give "
        f"Transformer / BaseConv = {result['paper']['ratios_from_its_numbers']['mse_ratio_transformer_over_baseconv']:.3g} "
        f"in distribution and a Transformer gap of "
        f"{result['paper']['ratios_from_its_numbers']['transformer_ood_gap_operator_scale']:.3g} (operator scale x16).", "",
        md["ratios"], "", "Least squares (from results/tables): " + json.dumps(least_squares_ratio()), "",
        f"Not run: the BaseConv Newton-Schulz construction at D = {c['n_points'] + 2} needs width {ns['width']:,}, "
        f"{ns['layers']} layers, {ns['weights']:,} weights ({ns['float32_GB']:.1f} GB in float32); its map is run instead."]) + "\n"


def write(result: dict, out: Path, figures: Optional[Path] = None, collocation: Optional[list] = None) -> list[Path]:
    """results/ode/comparison.{json,csv,md}, ratios.md, floors.md, collocation.md and the figure."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def text(name, body):
        atomic_write_text(out / name, body)
        written.append(out / name)

    if collocation is not None:
        result = {**result, "collocation_initial_condition": collocation}
    text("comparison.json", json.dumps(result, indent=1, default=str) + "\n")
    text("comparison.csv", pd.DataFrame(result["rows"]).to_csv(index=False))
    md = tables(result)
    c = result["config"]
    note = (f"{c['prompts']} prompts per setting (eval stream, seed {c['seed']}); ode_operator eqn_class {c['eqn_class']}, "
            f"{c['n_examples'] - 1} solved examples and a query, c at {c['n_points']} points: least squares in "
            f"{c['n_points'] + 2} unknowns. Cells: median squared error of u(t_q) [25th, 75th percentile]. GD and the "
            f"learned steps: {c['gd_steps']:,} and {c.get('learned_steps') or c['gd_steps']:,} iterations from x = 0, "
            "eta = 1 / lambda_max over the setting's prompts; "
            f"constructions: {c['construction_steps']} iterations. Paper: its notebook (in distribution read off a "
            "plot of 5 prompts, about +-0.3 decade).")
    trained = [f"- {e['label']}: run {e['hash']}, {e.get('budget', e['config'])}; "
               + (f"eval MSE of its training task {fmt_mse(e['eval_mse'])}" if "eval_mse" in e else e["status"])
               for e in result["learned"]]
    body = ["### In-context ODEs: every method on the same prompts", "", note, "", "Trained rows:", "", *trained, "",
            "#### In distribution", "", md["in_distribution"]]
    for axis in AXES:
        body += ["", f"#### Out of distribution: {axis}", "", md[axis]]
    text("comparison.md", "\n".join(body) + "\n")
    text("ratios.md", ratios_markdown(result, md))
    text("floors.md", "\n".join(["### Floors of the ODE task at each setting", "",
                                 "The solver floor: the task's targets (closed form for eqn_class 1, Taylor series "
                                 "otherwise) against the independent 8-stage Gauss-Legendre collocation, over every "
                                 "example of the prompts, float64. The dtype floor: MSE of rounding the targets.", "",
                                 md["floors"]]) + "\n")
    if collocation is not None:
        table = pd.DataFrame([{k: (fmt_mse(v) if isinstance(v, float) and k != "a3" else v) for k, v in r.items()}
                              for r in collocation]).to_markdown(index=False, disable_numparse=True)
        text("collocation.md", "\n".join([
            "### The paper's collocation loses the initial condition as a3 -> 0", "",
            "41 Chebyshev nodes, the equation at t = 0 with a3 u0 in place of a3 u(0) "
            "(bench.experiments.ode_application.paper_collocation); "
            "one GP draw at the nodes (gp_length 0.1), a1 = 1, a2 = 0, a4 = 0.5, u0 = 1, float64.", "", table]) + "\n")
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        fig = figure(result)
        path = figures / "ode_ood.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        written.append(path)
    return written
