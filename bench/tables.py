"""Tables (Markdown, CSV, LaTeX) and figures from run records and benchmark JSON.

    python -m bench tables                          # ci grids: results/runs -> results/tables, results/figures
    python -m bench tables --budget paper           # the paper-budget grids (only the runs that exist)
    python -m bench tables --benchmark-json out.json  # also a table of a pytest-benchmark run
    python -m bench tables --no-iterate             # skip what needs trained weights (GD iteration, OOD)

Each table is built from the grids of bench/grids.py at one budget: a grid's configs are
looked up by hash in results/runs, so records of other experiments never leak in, and
a table says how many of its runs exist. Every table states the budget its numbers
were obtained with, and puts the paper's figure next to ours where the paper reports one
(PAPER_FIGURES, from DESIGN.md "Reference facts"). MSE is the final eval MSE on the
held-out set (float64, against exact targets); "diverged" runs have no number.

The GD-iteration figure and the out-of-distribution table need the trained weights of
grid 3's runs: results/checkpoints (not committed) or, if absent, a deterministic retrain
into results/scratch (bench.iterate.trained_model).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd

from . import grids as G
from .config import RunConfig
from .records import RunResult, load_results

MIXER_ORDER = ("attention", "linear_attention", "baseconv", "hyena", "s4d", "mamba", "based", "mlp")
TASK_ORDER = ("read", "linear", "multiply", "gd_step", "gd_k", "least_squares")
MIXER_COLOURS = {"attention": "tab:red", "linear_attention": "tab:orange", "baseconv": "tab:blue",
                 "hyena": "tab:green", "s4d": "tab:purple", "mamba": "tab:pink", "based": "tab:brown",
                 "mlp": "tab:gray"}

# The paper's reported figures (Liu et al., ICLR 2025; DESIGN.md "Reference facts"), all
# float32, all at the paper's budget (PAPER_BUDGET).
PAPER_BUDGET = "batch 1024, 1M steps, Adam (eps 1e-16), LR 1e-3 x0.9 every 10k steps, width 64, 2 heads, float32"
PAPER_FIGURES = {
    "least_squares_attention": (1e-9, "softmax attention trained end to end on least squares, best over depth (levels off however deep)"),
    "learned_gd_iterated": (1e-13, "learned one-step GD (BaseConv or linear attention, 3 layers) applied iteratively"),
    "true_gd_float32": (5e-15, "true GD in float32"),
    "attention_step_iterated": (1e-2, "softmax-attention learned GD step applied iteratively"),
}


# ---- formatting -------------------------------------------------------------------


def fmt_mse(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, str):
        return x
    return f"{x:.2e}"


def budget_text(cfg: RunConfig) -> str:
    """What a run was trained with, in a few words."""
    opt = cfg.optimizer
    if opt.name == "lbfgs":
        how = f"L-BFGS {cfg.steps} steps x {opt.max_iter} iters on {opt.train_size} samples"
    elif opt.name in SECOND_ORDER:
        how = f"{second_order_name(opt)} {cfg.steps} steps on {opt.train_size} samples"
    else:
        how = f"{opt.name} {cfg.steps} steps x batch {cfg.batch_size}"
    if cfg.polish is not None:
        polish = cfg.polish
        then = f"{second_order_name(polish)} on {polish.train_size} samples" if polish.name in SECOND_ORDER else polish.name
        how += f", then {then} once stalled"
    return f"{how}, width {cfg.model.params.get('width', 64)}, {cfg.dtype}"


SECOND_ORDER = ("levenberg_marquardt", "gauss_newton")


def second_order_name(opt) -> str:
    """levenberg_marquardt -> Levenberg-Marquardt, gauss_newton -> Gauss-Newton."""
    return opt.name.replace("_", "-").title()


def budget_summary(budget: G.Budget) -> str:
    if budget.name == "paper":
        return f"paper budget ({PAPER_BUDGET})"
    gd = G.gd_budget(budget)
    return (f"{budget.name} budget (bench.grids.{budget.name.upper()}: batch {budget.batch_size}, "
            f"{budget.steps} steps unless the table says otherwise, Adam eps 1e-16, LR {budget.lr:g} x0.9 "
            f"{budget.decays} times over the run, width {budget.width}, {budget.heads} heads, float32 unless stated; "
            f"GD-step runs: {gd.steps} steps from LR {gd.lr:g}, {gd.decays} decays)")


# ---- records -> frames ------------------------------------------------------------


def records_by_hash(results_dir: str | Path, log=print) -> dict[str, RunResult]:
    """Every readable record, keyed by the hash its config has under the current code; an
    unreadable one is skipped and named."""
    return {r.config.hash: r for r in load_results(results_dir, on_bad=lambda m: log(f"tables: {m}"))}


def run_row(cfg: RunConfig, record: Optional[RunResult]) -> dict:
    p = cfg.model.params
    row = {
        "hash": cfg.hash, "task": cfg.task.name, "task_params": json.dumps(cfg.task.params, sort_keys=True),
        "model": cfg.model.name, "depth": p.get("depth"), "width": p.get("width"), "heads": p.get("heads"),
        "mlp_factor": p.get("mlp_factor", 4), "prenorm": p.get("prenorm", True), "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr, "schedule": cfg.schedule.name, "ema": cfg.ema_lambda > 0, "dtype": cfg.dtype,
        "steps": cfg.steps, "batch": cfg.batch_size, "budget": budget_text(cfg),
        "variant": "bare" if p.get("mlp") is False and p.get("final_norm") is False else "backbone",
        "status": "missing", "eval_mse": math.nan, "best_eval_mse": math.nan, "floor": math.nan,
        "rel": math.nan, "steps_per_s": math.nan, "wall_s": math.nan,
    }
    if record is not None:
        row.update(status=record.status, floor=record.floor,
                   eval_mse=math.nan if record.eval_mse is None else record.eval_mse,
                   best_eval_mse=math.nan if record.best_eval_mse is None else record.best_eval_mse,
                   rel=math.nan if record.eval_rel is None else record.eval_rel,
                   steps_per_s=math.nan if record.steps_per_s is None else record.steps_per_s,
                   wall_s=record.wall_time_s)
    return row


def grid_frame(configs: Iterable[RunConfig], records: dict[str, RunResult]) -> pd.DataFrame:
    return pd.DataFrame([run_row(c, records.get(c.hash)) for c in configs])


def mse_cell(row) -> str:
    """The table cell of one run: its MSE, or why there is none."""
    if row["status"] == "ok":
        return fmt_mse(row["eval_mse"])
    return row["status"]


def done_note(df: pd.DataFrame) -> str:
    n_done = int((df["status"].isin(["ok", "diverged"])).sum())
    n_div = int((df["status"] == "diverged").sum())
    return f"{n_done} of {len(df)} runs finished ({n_div} diverged)."


# ---- output -----------------------------------------------------------------------


@dataclass
class Output:
    tables: Path
    figures: Path

    def __post_init__(self):
        self.tables.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def table(self, name: str, df: pd.DataFrame, title: str, notes: Iterable[str] = (), index: bool = False) -> None:
        """results/tables/<name>.md (title, notes, table), .csv and .tex."""
        notes = [n for n in notes if n]
        md = [f"### {title}", ""] + [f"{n}  " for n in notes] + ([""] if notes else [])
        md.append(df.to_markdown(index=index, disable_numparse=True))
        paths = [self.tables / f"{name}.{ext}" for ext in ("md", "csv", "tex")]
        paths[0].write_text("\n".join(md) + "\n")
        df.to_csv(paths[1], index=index)
        caption = title + (" " + " ".join(notes) if notes else "")
        latex = df.to_latex(index=index, caption=caption.replace("_", r"\_"), label=f"tab:{name}",
                            escape=True, na_rep="--")
        paths[2].write_text(latex)
        self.written += paths

    def figure(self, name: str, fig) -> Path:
        path = self.figures / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.written.append(path)
        return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- grid 1 and 6: primitives -----------------------------------------------------


def with_task_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the bare model (mixers only: no norms, no MLP) get their own row label."""
    return df.assign(task=df["task"].where(df["variant"] != "bare", df["task"] + " (bare model, mixers only)"))


def primitives_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows task / model / prenorm, one column per depth: final eval MSE."""
    df = with_task_labels(df)
    df = df.assign(cell=df.apply(mse_cell, axis=1), prenorm=df["prenorm"].map({True: "on", False: "off"}))
    table = df.pivot_table(index=["task", "model", "prenorm"], columns="depth", values="cell", aggfunc="first")
    table.columns = [f"depth {d}" for d in table.columns]
    floors = df.groupby("task")["floor"].first()
    table = table.reset_index()
    table["float32 floor"] = table["task"].map(floors).map(fmt_mse)
    return _ordered(table)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    keys = []
    if "task" in table:
        keys.append(table["task"].map(lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99))
    if "model" in table:
        keys.append(table["model"].map(lambda m: MIXER_ORDER.index(m) if m in MIXER_ORDER else 99))
    if not keys:
        return table
    order = pd.concat(keys, axis=1).apply(tuple, axis=1).argsort(kind="stable")
    return table.iloc[order].reset_index(drop=True)


def best_per(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The finished run with the lowest final eval MSE per group, and how many were tried."""
    ok = df[df["status"] == "ok"]
    best = ok.loc[ok.groupby(by)["eval_mse"].idxmin()] if len(ok) else ok
    counts = df.groupby(by).size().rename("configs")
    return best.merge(counts.reset_index(), on=by, how="left")


def headline_table(df: pd.DataFrame) -> pd.DataFrame:
    """Task rows x architecture columns: the best final eval MSE over every config tried."""
    df = with_task_labels(df)
    best = best_per(df, ["task", "model"])
    best = best.assign(cell=best.apply(lambda r: f"{fmt_mse(r['eval_mse'])}", axis=1))
    table = best.pivot_table(index="task", columns="model", values="cell", aggfunc="first")
    table = table[[m for m in MIXER_ORDER if m in table.columns]].reset_index()
    floors = df.groupby("task")["floor"].first()
    table["float32 floor"] = table["task"].map(floors).map(fmt_mse)
    return _ordered(table).fillna("—")


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


# ---- grids 2-5 --------------------------------------------------------------------


def cells(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = df[columns].copy()
    out["eval MSE"] = df.apply(mse_cell, axis=1)
    out["best eval MSE"] = df["best_eval_mse"].map(fmt_mse)
    out["budget"] = df["budget"]
    return out


def attention_multiply_table(df: pd.DataFrame) -> pd.DataFrame:
    base = {"width": df["width"].min(), "heads": 2, "mlp_factor": 4, "steps": df["steps"].median()}
    rows = []
    for _, r in df.iterrows():
        varied = [k for k in ("width", "heads", "mlp_factor", "steps") if r[k] != base[k]]
        rows.append({"varied": ", ".join(varied) or "base", **{k: r[k] for k in ("width", "heads", "mlp_factor", "steps")},
                     "eval MSE": mse_cell(r), "best eval MSE": fmt_mse(r["best_eval_mse"]), "batch": r["batch"]})
    return pd.DataFrame(rows).sort_values(["varied", "width", "heads", "mlp_factor", "steps"]).reset_index(drop=True)


def pair_table(df: pd.DataFrame, key: Callable[[pd.Series], str], side: Callable[[pd.Series], str],
               sides: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per `key`, one MSE column per `side` (e.g. float32 / float64, adam / lbfgs)."""
    df = df.assign(_key=df.apply(key, axis=1), _side=df.apply(side, axis=1), cell=df.apply(mse_cell, axis=1))
    df = df[df["_side"].isin(sides)]
    table = df.pivot_table(index="_key", columns="_side", values="cell", aggfunc="first")
    info = df.drop_duplicates("_key").set_index("_key")[columns]
    table = info.join(table).reset_index(drop=True)
    return _ordered(table[[c for c in columns + sides if c in table.columns]].fillna("—"))


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
    ax.axhline(records[0][1].floor if records else 1e-14, color="black", linestyle=":", linewidth=1,
               label="float32 floor")
    ax.set(yscale="log", xlabel="step", ylabel="eval MSE", title=title)
    ax.legend(fontsize=7)
    return fig


# ---- learned GD iteration ---------------------------------------------------------


def learned_step_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and optimizer, the finished float32 gd_step run with the lowest eval MSE."""
    ok = df[(df["status"] == "ok") & (df["dtype"] == "float32")]
    return ok.loc[ok.groupby(["model", "optimizer"])["eval_mse"].idxmin()] if len(ok) else ok


def learned_step_label(model: str, optimizer: str) -> str:
    return f"{model} learned step ({optimizer})"


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


def iteration_levels(curves: pd.DataFrame, learned_budget: dict[str, str]) -> pd.DataFrame:
    from .iterate import level

    rows = []
    for (method, label, dtype), g in curves.groupby(["method", "label", "dtype"], sort=False):
        rows.append({"method": method, "curve": label, "dtype": dtype,
                     "level (median MSE, last 20 iterations)": level(g),
                     "mean MSE, last 20": level(g, "mean_mse"),
                     "budget": learned_budget.get(label, "exact (no training)")})
    return pd.DataFrame(rows)


# ---- paper comparison -------------------------------------------------------------


def paper_comparison(ls: pd.DataFrame, levels: Optional[pd.DataFrame]) -> pd.DataFrame:
    """The paper's figures next to ours, with the budget each of ours was measured with."""
    rows = []

    def add(key, ours, budget, how):
        value, text = PAPER_FIGURES[key]
        rows.append({"quantity": text, "paper (MSE)": fmt_mse(value), "paper budget": "paper",
                     "ours (MSE)": fmt_mse(ours), "our budget": budget, "ours measured as": how})

    att = ls[(ls["model"] == "attention") & (ls["task"] == "least_squares") & (ls["status"] == "ok")]
    if len(att):
        best = att.loc[att["eval_mse"].idxmin()]
        add("least_squares_attention", best["eval_mse"], best["budget"],
            f"best final eval MSE over depths {sorted(att['depth'].tolist())} (best: depth {best['depth']})")
    else:
        add("least_squares_attention", None, "not run", "")
    if levels is not None and len(levels):
        def lvl(prefix, dtype="float32"):
            """The lowest level among the curves whose label starts with `prefix`."""
            sel = levels[levels["curve"].str.startswith(prefix) & (levels["dtype"] == dtype)]
            column = "level (median MSE, last 20 iterations)"
            return sel.loc[sel[column].idxmin()] if len(sel) else None

        for model in ("baseconv", "linear_attention"):
            r = lvl(f"{model} learned")
            if r is not None:
                add("learned_gd_iterated", r["level (median MSE, last 20 iterations)"], r["budget"],
                    f"{r['curve']}: median MSE over problems, level of the last 20 iterations")
        r = levels[(levels["method"] == "true_gd") & (levels["dtype"] == "float32")]
        if len(r):
            add("true_gd_float32", r.iloc[0]["level (median MSE, last 20 iterations)"], "exact (no training)",
                "median MSE over problems, level of the last 20 iterations")
        r = lvl("attention learned")
        if r is not None:
            add("attention_step_iterated", r["level (median MSE, last 20 iterations)"], r["budget"],
                "median MSE over problems, level of the last 20 iterations")
    return pd.DataFrame(rows)


# ---- pytest-benchmark JSON --------------------------------------------------------


def benchmark_frame(path: str | Path) -> pd.DataFrame:
    """One row per precision case of a pytest-benchmark JSON (cases with extra_info.case_id)."""
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "case_id" not in info:
            continue
        rows.append({"case": info["case_id"], "status": info.get("status"), "eval MSE": fmt_mse(info.get("eval_mse")),
                     "floor": fmt_mse(info.get("floor")), "rel": fmt_mse(info.get("rel")),
                     "steps/s": round(info["steps_per_s"], 1) if info.get("steps_per_s") else None,
                     "time (s)": round(b.get("stats", {}).get("mean", math.nan), 2),
                     "budget": info.get("budget"), "config": info.get("config_hash")})
    return pd.DataFrame(rows)


# ---- the command ------------------------------------------------------------------


def build(results_dir: Path, out: Output, budget_name: str = "ci", *, iterate: bool = True,
          iterations: int = 150, benchmark_json: Optional[Path] = None, log=print) -> list[Path]:
    budget = G.get_budget(budget_name)
    note = f"Budget: {budget_summary(budget)}."
    records = records_by_hash(results_dir, log=lambda m: print(m, file=sys.stderr))
    frames = {name: grid_frame(G.GRIDS[name](budget), records)
              for name in G.GRIDS if budget.name in G.grid_budgets(name)}

    # (1) + (6): primitives per task, headline
    prim = frames["primitives"]
    out.table("primitives", primitives_table(prim), "Primitives: final eval MSE by depth (grid 1)",
              [note, done_note(prim), "The paper reports no single number per primitive; see paper_comparison."])
    added = frames.get("added_mixers")
    added_prim = added[added["task"].isin(G.PRIMITIVE_TASKS)] if added is not None else prim.iloc[0:0]
    if len(added_prim):
        out.table("added_mixers", primitives_table(added_prim),
                  "Added mixers on the primitives: final eval MSE by depth (grid 6)", [note, done_note(added_prim)])
    gd = frames.get("gd_step")
    ls = frames.get("gd_k_least_squares")
    head_sources = [prim, added_prim] + [f for f in (gd, ls, frames.get("second_order")) if f is not None]
    head = pd.concat(head_sources, ignore_index=True)
    head = head[head["dtype"] == "float32"]
    out.table("headline", headline_table(head), "Best precision reached per task and architecture (float32)",
              [note, "Each cell: the lowest final eval MSE over every config of that task and architecture in grids "
               "1, 3, 4, 6 and 7 (depths, prenorm, LRs, schedules, optimizers).", done_note(head)])
    for task in G.PRIMITIVE_TASKS:
        out.figure(f"mse_vs_depth_{task}", mse_vs_depth_figure(pd.concat([prim, added_prim]), task))

    # (2) attention on multiply
    if "attention_multiply" in frames:
        am = frames["attention_multiply"]
        out.table("attention_multiply", attention_multiply_table(am),
                  "Softmax attention on multiply: width, heads, MLP factor, training steps (grid 2)",
                  [note, done_note(am), "ci: one axis at a time around the base config (see bench.grids.attention_multiply)."
                   if budget.name == "ci" else ""])

    # (3) GD step
    if gd is not None:
        gd_t = cells(gd, ["model", "schedule", "ema", "lr", "steps"])
        out.table("gd_step", _ordered(gd_t), "Learned GD step (gd_step: the gradient A^T(Ax-b)/N, D=5, N=20), grid 3",
                  [note, done_note(gd), "ci: one axis at a time around (step schedule, no EMA, LR 3e-3)."
                   if budget.name == "ci" else ""])
        curves = [(f"{r.config.model.name} {r.config.schedule.name} ema={r.config.ema_lambda:g} lr={r.config.optimizer.lr:g}", r)
                  for r in (records.get(h) for h in gd["hash"]) if r is not None and r.status != "missing"]
        if curves:
            out.figure("training_curves_gd_step", training_curves_figure(curves, "gd_step: eval MSE during training"))
    mult = prim[(prim["task"] == "multiply") & (prim["depth"] == 2)]
    curves = [(f"{r.config.model.name} prenorm={r.config.model.params.get('prenorm')}", r)
              for r in (records.get(h) for h in mult["hash"]) if r is not None]
    if curves:
        out.figure("training_curves_multiply", training_curves_figure(curves, "multiply, depth 2: eval MSE during training"))

    # (4) gd_k and least squares vs depth
    if ls is not None:
        lsq = ls[ls["task"] == "least_squares"]
        t = lsq.assign(cell=lsq.apply(mse_cell, axis=1)).pivot_table(index="model", columns="depth", values="cell",
                                                                        aggfunc="first")
        t.columns = [f"depth {d}" for d in t.columns]
        t = _ordered(t.reset_index())
        t["paper"] = t["model"].map({"attention": f"levels off near {PAPER_FIGURES['least_squares_attention'][0]:g}"}).fillna("—")
        out.table("least_squares_depth", t, "Least squares end to end: final eval MSE vs depth (grid 4)",
                  [note, done_note(lsq), f"Paper: {PAPER_FIGURES['least_squares_attention'][1]}, "
                   f"{PAPER_FIGURES['least_squares_attention'][0]:g}, at the paper budget."])
        out.figure("mse_vs_depth_least_squares", mse_vs_depth_figure(
            lsq, "least_squares", (PAPER_FIGURES["least_squares_attention"][0], "paper: attention levels off (1e-9)")))
        gdk = ls[ls["task"] == "gd_k"]
        out.table("gd_k", _ordered(cells(gdk, ["model", "depth", "task_params"])), "gd_k (k=4 GD steps, eta 0.5), grid 4",
                  [note, done_note(gdk)])

    # (5) float64 and L-BFGS: each twin next to the run it was derived from
    if "dtype_optimizer" in frames:
        pairs = G.twins(budget)
        for kind, title, sides in (("float64", "float32 vs float64, same config (grid 5)", ["float32", "float64"]),
                                   ("lbfgs", "Adam vs L-BFGS, same model and task (grid 5)", ["adam", "lbfgs"])):
            chosen = [(base, twin) for k, base, twin in pairs if k == kind]
            if not chosen:
                continue
            base_rows = grid_frame([b for b, _ in chosen], records).assign(pair=range(len(chosen)))
            twin_rows = grid_frame([t for _, t in chosen], records).assign(pair=range(len(chosen)))
            both = pd.concat([base_rows.assign(side=sides[0]), twin_rows.assign(side=sides[1])], ignore_index=True)
            table = pair_table(both, lambda r: r["pair"], lambda r: r["side"], sides,
                               ["task", "model", "depth", "prenorm", "dtype" if kind == "lbfgs" else "budget"])
            notes = [note, done_note(twin_rows), f"{sides[1]} twin: {budget_text(chosen[0][1])}."]
            out.table("dtype" if kind == "float64" else "optimizer", table, title, notes)
            if kind == "lbfgs":
                out.figure("mse_vs_optimizer", optimizer_figure(both.assign(
                    optimizer=both["side"].map({"adam": "adam", "lbfgs": "lbfgs"}))))

    # (6) conditioning
    if added is not None:
        kap = added[added["task"] == "gd_step"].copy()
        kap["kappa"] = kap["task_params"].map(lambda s: json.loads(s).get("kappa"))
        if gd is not None:  # the Gaussian-A base runs of grid 3 at the same recipe
            base = gd[(gd["schedule"] == "step") & (~gd["ema"]) & (gd["lr"] == G.gd_budget(budget).lr)
                      & gd["model"].isin(kap["model"])]
            kap = pd.concat([kap, base.assign(kappa="Gaussian A")], ignore_index=True)
        kap = kap[kap["steps"] == G.gd_budget(budget).steps]
        kap = kap.assign(cell=kap.apply(lambda r: f"{mse_cell(r)} (rel {fmt_mse(r['rel'])})", axis=1),
                         kappa=kap["kappa"].map(lambda k: k if isinstance(k, str) else f"kappa {k:g}"))
        t = kap.pivot_table(index="model", columns="kappa", values="cell", aggfunc="first").reset_index()
        out.table("conditioning", _ordered(t), "Learned GD step vs condition number kappa of A (grid 6)",
                  [note, done_note(kap), f"Budget of each run: {kap['budget'].iloc[0] if len(kap) else ''}.",
                   "Cells: eval MSE of the predicted gradient (rel: mean |error| / mean |target|). The gradient "
                   "grows with the eigenvalues of A^T A / N (up to kappa^2), so compare rel across kappa."])

    # (7) one exactly-expressive model, three optimizers, two dtypes
    if "second_order" in frames:
        so = frames["second_order"]
        t = cells(so, ["task", "model", "optimizer", "dtype", "steps"])
        t["floor"] = so["floor"].map(fmt_mse)
        t["MSE / floor"] = [fmt_mse(m / f) if f > 0 and m == m else "—" for m, f in zip(so["eval_mse"], so["floor"])]
        t["train time (s)"] = so["wall_s"].round(0)
        out.table("second_order", t, "Models that can express their task, trained to the limit: Adam vs L-BFGS "
                  "vs Levenberg-Marquardt, float32 and float64 (grid 7)",
                  [note, done_note(so), "gd_step: bench.grids.exact_gd_step_model (bare linear attention, width 18, "
                   "2 heads, depth 2, 3,335 weights), one random start. multiply: the bare one-layer models (width "
                   "32), L-BFGS until it stalls, then Levenberg-Marquardt (budget column). Floor: MSE of the exact "
                   "targets rounded to the dtype (0 in float64)."])

    # learned GD iterated, OOD
    levels = None
    if iterate and gd is not None:
        from .iterate import gd_iteration_curves, ood_table, trained_model

        candidates = pd.concat([gd] + [frames[g] for g in ("dtype_optimizer", "second_order") if g in frames],
                               ignore_index=True)
        chosen = learned_step_runs(candidates[candidates["task"] == "gd_step"])
        learned, labels = [], {}
        for _, r in chosen.iterrows():
            cfg = records[r["hash"]].config
            log(f"tables: loading the weights of {cfg.label()} ({r['hash']})")
            label = learned_step_label(cfg.model.name, cfg.optimizer.name)
            learned.append((label, trained_model(cfg, results_dir), cfg))
            labels[label] = r["budget"] + f" (gd_step eval MSE {fmt_mse(r['eval_mse'])})"
        curves = gd_iteration_curves([(lab, m) for lab, m, _ in learned], steps=iterations)
        curves.to_csv(out.tables / "gd_iteration_curves.csv", index=False)
        out.written.append(out.tables / "gd_iteration_curves.csv")
        levels = iteration_levels(curves, labels)
        shown = levels.copy()
        for column in ("level (median MSE, last 20 iterations)", "mean MSE, last 20"):
            shown[column] = shown[column].map(fmt_mse)
        out.table("gd_iteration", shown, "GD applied iteratively: where each curve levels off",
                  [f"{iterations} iterations, eta 0.5, 256 held-out problems D=5, N=20; error = per-problem mean "
                   "squared distance to the float64 least-squares solution; learned steps: the best float32 gd_step "
                   "run per model and optimizer of grids 3, 5 and 7.", note])
        out.figure("gd_iteration", gd_iteration_figure(curves))
        if learned:
            ood = ood_table([(lab, m, c) for lab, m, c in learned])
            ood = ood.assign(mse=ood["mse"].map(fmt_mse), rel=ood["rel"].map(fmt_mse))
            out.table("ood", ood, "Learned GD step out of distribution: x or A scaled at test time (trained at scale 1)",
                      [note, "MSE of the predicted gradient (gd_step target) on 512 held-out problems."])
    out.table("paper_comparison", paper_comparison(ls if ls is not None else prim.iloc[0:0], levels),
              "The paper's figures next to ours", [f"Paper budget: {PAPER_BUDGET}.", note])

    if benchmark_json is not None:
        bf = benchmark_frame(benchmark_json)
        data = json.loads(Path(benchmark_json).read_text())
        profile = data.get("machine_info", {}).get("profile", "unknown")
        out.table(f"benchmarks_{profile}", bf, f"Precision benchmark cases ({profile} profile)",
                  [f"From {benchmark_json}."])
    return out.written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench tables",
                                description="Tables (md, csv, tex) and figures from run records and benchmark JSON.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/ inside)")
    p.add_argument("--budget", choices=G.BUDGETS[1:], default="ci", help="which grids' runs to tabulate")
    p.add_argument("--tables", type=Path, help="output folder for tables (default RESULTS/tables)")
    p.add_argument("--figures", type=Path, help="output folder for figures (default RESULTS/figures)")
    p.add_argument("--benchmark-json", type=Path, help="also tabulate a pytest-benchmark JSON of bench/test_precision.py")
    p.add_argument("--no-iterate", action="store_true",
                   help="skip the GD-iteration figure and OOD table (they need trained weights)")
    p.add_argument("--iterations", type=int, default=150, help="GD iterations of the iteration figure")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (loading records runs each model once on a tiny input: one thread is fastest)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not (args.results / "runs").is_dir():
        print(f"error: no run records under {args.results / 'runs'}; run a grid first "
              f"(python -m bench sweep bench.grids:all_ci)", file=sys.stderr)
        return 2
    out = Output(args.tables or args.results / "tables", args.figures or args.results / "figures")
    written = build(args.results, out, args.budget, iterate=not args.no_iterate, iterations=args.iterations,
                    benchmark_json=args.benchmark_json)
    print(f"wrote {len(written)} files under {out.tables} and {out.figures}")
    return 0
