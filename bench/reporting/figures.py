"""Figures (PNG, matplotlib with the Agg backend) from the frames of bench/reporting/frames.py.

Each function returns a matplotlib Figure; bench/reporting/tables.py registers which figures are written.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.reporting.frames import PAPER_FIGURES
from bench.harness.records import RunResult

MIXER_COLOURS = {"attention": "tab:red", "linear_attention": "tab:orange", "baseconv": "tab:blue",
                 "hyena": "tab:green", "s4d": "tab:purple", "mamba": "tab:pink", "based": "tab:brown",
                 "mlp": "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mse_vs_depth_figure(df: pd.DataFrame, task: str, reference: Optional[tuple[float, str]] = None):
    """Final eval MSE vs depth for one task: a line per architecture (solid: prenorm on,
    dashed: off), log scale, the float32 floor and the paper's figure (if any) drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    sub = df[(df["task"] == task) & (df["status"] == "ok") & (df["variant"] == "backbone")]
    for (model, prenorm), g in sub.groupby(["model", "prenorm"]):
        g = g.sort_values("depth")
        ax.plot(g["depth"], g["eval_mse"], marker="o", color=MIXER_COLOURS.get(model),
                linestyle="-" if prenorm else "--", label=f"{model}{'' if prenorm else ' (no prenorm)'}")
    floor = df[df["task"] == task]["floor"].dropna()
    if len(floor) and floor.iloc[0] > 0:
        ax.axhline(floor.iloc[0], color="black", linewidth=1, linestyle=":", label="float32 floor")
    elif len(floor):
        task += " (float32 floor 0: the targets are inputs, exact in float32)"
    if reference is not None:
        ax.axhline(reference[0], color="tab:red", linewidth=1, linestyle="-.", label=reference[1])
    ax.set(xscale="log", yscale="log", xlabel="depth (layers)", ylabel="eval MSE", title=task)
    ax.set_xticks(sorted(sub["depth"].unique()) if len(sub) else [1])
    ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def optimizer_figure(df: pd.DataFrame):
    """Adam vs L-BFGS (float32): final eval MSE per task/model, log scale."""
    plt = _plt()
    sub = df[(df["status"] == "ok")]
    labels = sorted({f"{r.task}/{r.model}" for r in sub.itertuples()})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    width = 0.4
    for i, opt in enumerate(("adam", "lbfgs")):
        values = [sub[(sub["task"] + "/" + sub["model"] == lab) & (sub["optimizer"] == opt)]["eval_mse"].min()
                  for lab in labels]
        ax.bar([j + (i - 0.5) * width for j in range(len(labels))], values, width, label=opt)
    ax.set(yscale="log", ylabel="eval MSE", title="MSE vs optimizer (float32)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.legend()
    return fig


def training_curves_figure(records: list[tuple[str, RunResult]], title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in records:
        pts = [(p.step, p.eval_mse) for p in r.curve if p.eval_mse is not None and p.eval_mse > 0]
        if pts:
            ax.plot(*zip(*pts), label=label, color=MIXER_COLOURS.get(r.config.model.name))
    floor = next((r.floor for _, r in records if r.floor is not None), 1e-14)  # a failed run may have none
    ax.axhline(floor, color="black", linestyle=":", linewidth=1,
               label="float32 floor")
    ax.set(yscale="log", xlabel="step", ylabel="eval MSE", title=title)
    ax.legend(fontsize=7)
    return fig


def gd_iteration_figure(curves: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"learned": "-", "true_gd": "--", "construction": ":"}
    learned_styles = {"(adam)": "-", "(lbfgs)": "-.", "(levenberg_marquardt)": (0, (5, 1, 1, 1, 1, 1))}
    for (method, label), g in curves.groupby(["method", "label"], sort=False):
        g = g.sort_values("iteration")
        model = label.split()[0]
        style = learned_styles.get(label.split()[-1], "-") if method == "learned" else styles[method]
        colour = MIXER_COLOURS.get(model, "black" if method == "true_gd" else None)
        if method == "true_gd":
            colour = "black" if "float32" in label else "gray"
        marks = {"marker": "o" if "baseconv" in label else "s", "markevery": 10, "markersize": 4,
                 "fillstyle": "none"} if method == "construction" else {}
        ax.plot(g["iteration"], g["median_mse"].clip(lower=1e-35), linestyle=style, color=colour, label=label, **marks)
    for key, colour in (("learned_gd_iterated", "tab:blue"), ("true_gd_float32", "black"),
                        ("attention_step_iterated", "tab:red")):
        value, text = PAPER_FIGURES[key]
        ax.axhline(value, color=colour, alpha=0.35, linewidth=4, label=f"paper: {text} ({value:g})")
    ax.set(yscale="log", xlabel="GD iteration", ylabel="median MSE to the least-squares solution",
           title="Learned vs true GD step, applied iteratively")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig

