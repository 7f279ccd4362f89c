"""Tables (Markdown, CSV, LaTeX) and figures from run records, stored evaluations and benchmark JSON.

    python -m bench tables                          # ci grids: results/runs -> results/tables, results/figures
    python -m bench tables --check                  # regenerate into a temporary folder, report each difference
    python -m bench tables --budget paper           # the paper-budget grids (only the runs that exist)
    python -m bench tables --benchmark-json out.json  # a table of a pytest-benchmark run (default: every
                                                    # results/benchmarks/precision-*.json)
    python -m bench tables --no-iterate             # leave out the learned-step tables (GD iteration, OOD)
    python -m bench tables --model mymixer:MyMixer  # with the runs of a mixer of your own (bench sweep --model)

Each table is built from the grids of bench/grids at one budget: a grid's configs are
looked up by hash in results/runs, so records of other experiments never leak in, and
a table says how many of its runs exist. Every table states the budget its numbers
were obtained with, and puts the paper's figure next to ours where the paper reports one
(PAPER_FIGURES, from DESIGN.md "Reference facts"). MSE is the final eval MSE on the
held-out set (float64, against exact targets); "diverged" runs have no number.

Tables only format: what needs a run's weights (its learned GD step iterated, out of distribution, its eval
MSE on other held-out sets) is computed once by `python -m bench evaluate` (or `eval-spread`) and stored in
results/evaluations/ (bench.harness.evaluations); bench.reporting.learned_steps formats it. Nothing here
trains. A row whose evaluation is missing or out of date says so and names the command that makes it; an
unreadable record, evaluation or final state gets one warning line naming the file, its row is marked, and
the tables are written all the same.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd

from bench import grids as G
from bench.grids import registry
from bench.reporting.figures import mse_vs_depth_figure, optimizer_figure, training_curves_figure
from bench.harness.records import RunResult
from bench.reporting.frames import (  # noqa: F401  (benchmark_frame, learned_step_label, records_by_hash: used through here)
    MIXER_ORDER,
    PAPER_BUDGET,
    PAPER_FIGURES,
    TASK_ORDER,
    benchmark_frame,
    budget_summary,
    budget_text,
    done_note,
    fmt_mse,
    grid_frame,
    learned_step_label,
    learned_step_runs,
    mse_cell,
    records_by_hash,
)
from bench.reporting import learned_steps as L
from bench.reporting.other_runs import other_runs
from bench.reporting.learned_steps import grid8_step_label, iteration_levels, paper_comparison  # noqa: F401  (used through here)


@dataclass
class Output:
    """Where tables and figures go, and what was written. draw=False: no figures (tables --check)."""

    tables: Path
    figures: Path
    draw: bool = True

    def __post_init__(self):
        self.tables.mkdir(parents=True, exist_ok=True)
        if self.draw:
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

    def figure(self, name: str, fig) -> Optional[Path]:
        import matplotlib.pyplot as plt

        if not self.draw:
            plt.close(fig)
            return None
        path = self.figures / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.written.append(path)
        return path


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
    # the registered mixers in their order, then any other (an out-of-tree mixer, bench tables --model)
    table = table[[m for m in MIXER_ORDER if m in table.columns]
                  + sorted(m for m in table.columns if m not in MIXER_ORDER)].reset_index()
    floors = df.groupby("task")["floor"].first()
    table["float32 floor"] = table["task"].map(floors).map(fmt_mse)
    return _ordered(table).fillna("—")


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


# ---- one function per table (and its figures), registered in TABLES ----------------


@dataclass
class Context:
    """What every table function reads: the records, each grid's frame at the budget, where to write."""

    results_dir: Path
    out: Output
    budget: G.Budget
    records: dict[str, RunResult]
    frames: dict[str, pd.DataFrame]
    iterate: bool = True
    iterations: int = 150
    benchmark_json: list[Path] = field(default_factory=list)
    log: Callable[[str], None] = print
    levels: Optional[pd.DataFrame] = None  # set by gd_iteration, read by paper_comparison

    def __post_init__(self):
        # the stored evaluations, each checked once against its record and the weights here
        self.lookups = L.Lookups(self.results_dir, self.records, self.log)

    @property
    def note(self) -> str:
        return f"Budget: {budget_summary(self.budget)}."

    def added_primitives(self) -> pd.DataFrame:
        added = self.frames.get("added_mixers")
        prim = self.frames["primitives"]
        return added[added["task"].isin(G.PRIMITIVE_TASKS)] if added is not None else prim.iloc[0:0]


def primitives(ctx: Context) -> None:
    """(1) + (6): primitives per task and depth, grid 6's added mixers, the MSE-vs-depth figures."""
    prim, added_prim, note = ctx.frames["primitives"], ctx.added_primitives(), ctx.note
    ctx.out.table("primitives", primitives_table(prim), "Primitives: final eval MSE by depth (grid 1)",
                  [note, done_note(prim), "The paper reports no single number per primitive; see paper_comparison."])
    if len(added_prim):
        ctx.out.table("added_mixers", primitives_table(added_prim),
                      "Added mixers on the primitives: final eval MSE by depth (grid 6)", [note, done_note(added_prim)])
    for task in G.PRIMITIVE_TASKS:
        ctx.out.figure(f"mse_vs_depth_{task}", mse_vs_depth_figure(pd.concat([prim, added_prim]), task))


def headline(ctx: Context) -> None:
    """Best precision per task and architecture over grids 1, 3, 4, 6 and 7."""
    f = ctx.frames
    head_sources = [f["primitives"], ctx.added_primitives()] + [
        f[g] for g in ("gd_step", "gd_k_least_squares", "second_order") if g in f]
    if "to_the_limit" in f:  # grid 8 in rows of its own: the paper's models when the optimizer is second order
        lim = f["to_the_limit"]
        head_sources.append(lim.assign(task=lim["task"] + ", paper's model, second order (grid 8)",
                                       variant="backbone"))
    warm = f["to_the_limit"].dropna(subset=["switched_at"]) if "to_the_limit" in f else pd.DataFrame()
    note_grid8 = ("grid 8 (the paper's models trained by the matrix-free Levenberg-Marquardt under a time cap"
                  + "".join(sorted({f"; {t}/{m} includes a run warm-started by {o}"
                                    for t, m, o in zip(warm["task"], warm["model"], warm["optimizer"])}))
                  + ") in rows of its own.")
    head = pd.concat(head_sources, ignore_index=True).drop_duplicates("hash")  # a run in two grids counts once
    head = head[head["dtype"] == "float32"]
    ctx.out.table("headline", headline_table(head), "Best precision reached per task and architecture (float32)",
                  [ctx.note, "Each cell: the lowest final eval MSE over every config of that task and architecture in "
                   "grids 1, 3, 4, 6 and 7 (depths, prenorm, LRs, schedules, optimizers); " + note_grid8,
                   done_note(head)])


def attention_multiply(ctx: Context) -> None:
    """(2) softmax attention on multiply."""
    if "attention_multiply" not in ctx.frames:
        return
    am = ctx.frames["attention_multiply"]
    ctx.out.table("attention_multiply", attention_multiply_table(am),
                  "Softmax attention on multiply: width, heads, MLP factor, training steps (grid 2)",
                  [ctx.note, done_note(am), "ci: one axis at a time around the base config (see "
                   "bench.grids.attention_multiply)." if ctx.budget.name == "ci" else ""])


def gd_step(ctx: Context) -> None:
    """(3) the learned GD step, its training curves."""
    gd = ctx.frames.get("gd_step")
    if gd is None:
        return
    gd_t = cells(gd, ["model", "schedule", "ema", "lr", "steps"])
    ctx.out.table("gd_step", _ordered(gd_t), "Learned GD step (gd_step: the gradient A^T(Ax-b)/N, D=5, N=20), grid 3",
                  [ctx.note, done_note(gd), "ci: one axis at a time around (step schedule, no EMA, LR 3e-3)."
                   if ctx.budget.name == "ci" else ""])
    curves = [(f"{r.config.model.name} {r.config.schedule.name} ema={r.config.ema_lambda:g} "
               f"lr={r.config.optimizer.lr:g}", r)
              for r in (ctx.records.get(h) for h in gd["hash"]) if r is not None and r.status != "missing"]
    if curves:
        ctx.out.figure("training_curves_gd_step", training_curves_figure(curves, "gd_step: eval MSE during training"))


def multiply_curves(ctx: Context) -> None:
    """Training curves of grid 1's depth-2 multiply runs."""
    prim = ctx.frames["primitives"]
    mult = prim[(prim["task"] == "multiply") & (prim["depth"] == 2)]
    curves = [(f"{r.config.model.name} prenorm={r.config.model.params.get('prenorm')}", r)
              for r in (ctx.records.get(h) for h in mult["hash"]) if r is not None]
    if curves:
        ctx.out.figure("training_curves_multiply",
                       training_curves_figure(curves, "multiply, depth 2: eval MSE during training"))


def least_squares(ctx: Context) -> None:
    """(4) least squares end to end vs depth, and gd_k."""
    ls = ctx.frames.get("gd_k_least_squares")
    if ls is None:
        return
    note = ctx.note
    lsq = ls[ls["task"] == "least_squares"]
    t = lsq.assign(cell=lsq.apply(mse_cell, axis=1)).pivot_table(index="model", columns="depth", values="cell",
                                                                    aggfunc="first")
    t.columns = [f"depth {d}" for d in t.columns]
    t = _ordered(t.reset_index())
    t["paper"] = t["model"].map({"attention": f"levels off near {PAPER_FIGURES['least_squares_attention'][0]:g}"}).fillna("—")
    ctx.out.table("least_squares_depth", t, "Least squares end to end: final eval MSE vs depth (grid 4)",
                  [note, done_note(lsq), f"Paper: {PAPER_FIGURES['least_squares_attention'][1]}, "
                   f"{PAPER_FIGURES['least_squares_attention'][0]:g}, at the paper budget."])
    ctx.out.figure("mse_vs_depth_least_squares", mse_vs_depth_figure(
        lsq, "least_squares", (PAPER_FIGURES["least_squares_attention"][0], "paper: attention levels off (1e-9)")))
    gdk = ls[ls["task"] == "gd_k"]
    ctx.out.table("gd_k", _ordered(cells(gdk, ["model", "depth", "task_params"])), "gd_k (k=4 GD steps, eta 0.5), grid 4",
                  [note, done_note(gdk)])


def dtype_and_optimizer(ctx: Context) -> None:
    """(5) float64 and L-BFGS: each twin next to the run it was derived from."""
    if "dtype_optimizer" not in ctx.frames:
        return
    pairs = G.twins(ctx.budget)
    for kind, title, sides in (("float64", "float32 vs float64, same config (grid 5)", ["float32", "float64"]),
                               ("lbfgs", "Adam vs L-BFGS, same model and task (grid 5)", ["adam", "lbfgs"])):
        chosen = [(base, twin) for k, base, twin in pairs if k == kind]
        if not chosen:
            continue
        base_rows = grid_frame([b for b, _ in chosen], ctx.records).assign(pair=range(len(chosen)))
        twin_rows = grid_frame([t for _, t in chosen], ctx.records).assign(pair=range(len(chosen)))
        both = pd.concat([base_rows.assign(side=sides[0]), twin_rows.assign(side=sides[1])], ignore_index=True)
        table = pair_table(both, lambda r: r["pair"], lambda r: r["side"], sides,
                           ["task", "model", "depth", "prenorm", "dtype" if kind == "lbfgs" else "budget"])
        notes = [ctx.note, done_note(twin_rows), f"{sides[1]} twin: {budget_text(chosen[0][1])}."]
        ctx.out.table("dtype" if kind == "float64" else "optimizer", table, title, notes)
        if kind == "lbfgs":
            ctx.out.figure("mse_vs_optimizer", optimizer_figure(both.assign(
                optimizer=both["side"].map({"adam": "adam", "lbfgs": "lbfgs"}))))


def conditioning(ctx: Context) -> None:
    """(6) the learned GD step vs the condition number of A."""
    added, gd = ctx.frames.get("added_mixers"), ctx.frames.get("gd_step")
    if added is None:
        return
    budget = ctx.budget
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
    ctx.out.table("conditioning", _ordered(t), "Learned GD step vs condition number kappa of A (grid 6)",
                  [ctx.note, done_note(kap), f"Budget of each run: {kap['budget'].iloc[0] if len(kap) else ''}.",
                   "Cells: eval MSE of the predicted gradient (rel: mean |error| / mean |target|). The gradient "
                   "grows with the eigenvalues of A^T A / N (up to kappa^2), so compare rel across kappa."])


def second_order(ctx: Context) -> None:
    """(7) one exactly-expressive model, three optimizers, two dtypes."""
    if "second_order" not in ctx.frames:
        return
    so = ctx.frames["second_order"]
    t = cells(so, ["task", "model", "optimizer", "dtype", "steps"])
    t["floor"] = so["floor"].map(fmt_mse)
    t["MSE / floor"] = [fmt_mse(m / f) if f > 0 and m == m else "—" for m, f in zip(so["eval_mse"], so["floor"])]
    t["train time (s)"] = so["wall_s"].round(0)
    ctx.out.table("second_order", t, "Models that can express their task, trained to the limit: Adam vs L-BFGS "
                  "vs Levenberg-Marquardt, float32 and float64 (grid 7)",
                  [ctx.note, done_note(so), "gd_step: bench.grids.exact_gd_step_model (bare linear attention, width "
                   "18, 2 heads, depth 2, 3,335 weights), one random start. multiply: the bare one-layer models (width "
                   "32), L-BFGS until it stalls, then Levenberg-Marquardt (budget column). Floor: MSE of the exact "
                   "targets rounded to the dtype (0 in float64)."])


def limit_verdict(row) -> str:
    """What stopped a grid-8 run, from its own numbers: the dtype (within 100x of the float32
    floor), the training set (eval MSE 10x its train MSE), the time cap (eval still falling
    more than 5% over its last 5 steps) or a stall (second order could not go further)."""
    if row["status"] != "ok":
        return row["status"]
    if row["dtype"] == "float32" and row["eval_mse"] <= 100 * row["floor"]:
        return "dtype (within 100x of the floor)"
    if row["train_mse"] == row["train_mse"] and row["eval_mse"] > 10 * row["train_mse"]:
        return "training set (eval >> train)"
    if row["eval_trend"] == row["eval_trend"] and row["eval_trend"] < 0.95:
        return "time cap (still falling)"
    return "stalled"


def to_the_limit(ctx: Context) -> None:
    """(8) the paper's models trained by the matrix-free Levenberg-Marquardt, next to grid 1's Adam
    cells, and per run what stopped it."""
    lim = ctx.frames.get("to_the_limit")
    if lim is None:
        return
    layernorm = lim["prenorm"].map({True: "depth 2 + LayerNorm", False: None})
    lim = lim.assign(column=layernorm.fillna(lim["depth"].map(lambda d: f"depth {d}")))
    prim = ctx.frames["primitives"]
    adam = {(r["task"], r["model"], r["depth"], r["prenorm"]): r for _, r in prim.iterrows() if r["variant"] == "backbone"}
    f32 = lim[(lim["dtype"] == "float32") & lim["task"].isin(G.PRIMITIVE_TASKS)]
    cells_ = []
    for _, r in f32.iterrows():
        a = adam.get((r["task"], r["model"], r["depth"], r["prenorm"]))
        cells_.append(f"{mse_cell(r)} / {mse_cell(a) if a is not None else '—'}")
    t = f32.assign(cell=cells_).pivot_table(index=["task", "model"], columns="column", values="cell", aggfunc="first")
    t = t[[c for c in ("depth 1", "depth 2", "depth 4", "depth 2 + LayerNorm") if c in t.columns]].reset_index()
    t["float32 floor"] = t["task"].map(f32.groupby("task")["floor"].first()).map(fmt_mse)
    budget = lim["budget"].iloc[0] if len(lim) else ""
    ctx.out.table("to_the_limit", _ordered(t).fillna("—"),
                  "The paper's primitive models trained to their limit (grid 8) next to Adam (grid 1): eval MSE, "
                  "second order / Adam",
                  ["Each cell: grid 8's final eval MSE (width 64, 2 heads, MLP x4 ReLU; LayerNorm only in the last "
                   "column) / grid 1's cell of the same task, mixer, depth and LayerNorm setting (Adam at the ci budget "
                   f"and width {ctx.budget.width}).", f"Grid 8 budget: {budget}; each run capped by "
                   "seconds of training (time_limit_s).", done_note(lim), ctx.note])
    d = lim.assign(layernorm=lim["prenorm"].map({True: "on", False: "off"}))
    rows = pd.DataFrame({
        "task": d["task"], "model": d["model"], "depth": d["depth"], "LayerNorm": d["layernorm"], "dtype": d["dtype"],
        # integers or a dash: a column with a missing run would otherwise print as floats and nan
        "params": d["hash"].map(lambda h: f"{ctx.records[h].param_count:,}" if h in ctx.records else "—"),
        # a warm-started run: its first optimizer's steps, then the LM's
        "warm start": [f"{o.replace('_', ' ')} x{int(w):,}" if w == w else "—" for o, w in zip(d["optimizer"], d["switched_at"])],
        "LM steps": [int(n - w) if w == w else n for n, w in zip(d["steps_done"], d["switched_at"])],
        "train time (s)": d["train_s"].map(lambda s: f"{s:.0f}" if s == s else "—"),
        "train MSE": d["train_mse"].map(fmt_mse), "eval MSE": d.apply(mse_cell, axis=1),
        "eval / floor": [fmt_mse(m / f) if f > 0 and m == m else "—" for m, f in zip(d["eval_mse"], d["floor"])],
        "CG residual": d["cg_rel_residual"].map(fmt_mse), "damping": d["damping"].map(fmt_mse),
        "last 5 steps": d["eval_trend"].map(lambda x: f"x{x:.2f}" if x == x else "—"),
        "what stopped it": d.apply(limit_verdict, axis=1),
    })
    ctx.out.table("to_the_limit_diagnostics", _ordered(rows),
                  "Grid 8 per run: where it stopped and why (train vs eval MSE, CG residual and damping of the "
                  "last step)",
                  ["CG residual: |(G + mu D) d + g| / |g| of the last solve (CG stops at 100 products); damping: "
                   "the mu of that step, relative to the MSE's Gauss-Newton curvature; last 5 steps: the eval MSE "
                   "over the one 5 or more steps earlier. 'what stopped it' is bench.reporting.tables.limit_verdict.",
                   done_note(lim)])


def paper(ctx: Context) -> None:
    """The paper's figures next to ours (after gd_iteration, whose levels it reads)."""
    ls = ctx.frames.get("gd_k_least_squares")
    ctx.out.table("paper_comparison", paper_comparison(ls if ls is not None else ctx.frames["primitives"].iloc[0:0],
                                                       ctx.levels),
                  "The paper's figures next to ours", [f"Paper budget: {PAPER_BUDGET}.", ctx.note])


def benchmarks(ctx: Context) -> None:
    """Each pytest-benchmark JSON of bench/benchmarks/test_precision.py (--benchmark-json; by default every
    results/benchmarks/precision-*.json); an unreadable one is named in one line and left out."""
    for path in ctx.benchmark_json:
        try:
            bf = benchmark_frame(path)
            profile = json.loads(Path(path).read_text()).get("machine_info", {}).get("profile", "unknown")
        except (OSError, ValueError, AttributeError) as err:
            ctx.log(f"tables: skipping {path}: not a readable benchmark JSON ({type(err).__name__}: {err})")
            continue
        ctx.out.table(f"benchmarks_{profile}", bf, f"Precision benchmark cases ({profile} profile)",
                      [f"From {shown_path(path, ctx.results_dir)}."])


def shown_path(path: Path, results_dir: Path) -> str:
    """`path` as a table names it: from the results folder's name when inside it, so the text does not
    depend on where the folder is (tables --check compares it)."""
    try:
        return str(Path(results_dir.name) / Path(path).resolve().relative_to(Path(results_dir).resolve()))
    except ValueError:
        return str(path)


# Every table and figure `python -m bench tables` writes, in order (gd_iteration before paper).
TABLES: list[Callable[[Context], None]] = [
    primitives, headline, attention_multiply, gd_step, multiply_curves, least_squares, dtype_and_optimizer,
    conditioning, second_order, to_the_limit, L.to_the_limit_iterated, L.gd_iteration, paper, L.eval_spread,
    benchmarks, other_runs,
]


def frames_at(results_dir: Path, budget: G.Budget, models: Iterable[str] = (), log=print
              ) -> tuple[dict[str, RunResult], dict[str, pd.DataFrame]]:
    """The records of `results_dir` and every grid's frame at `budget` (each model of `models`, e.g. an
    out-of-tree mixer, joins every grid in place of its models: bench.harness.sweep.with_model)."""
    from bench.harness.sweep import with_model

    records = records_by_hash(results_dir, log=log)
    grids = registry.table_grids(budget)  # each grid's runs, and the study links its tables show too
    frames = {name: grid_frame(configs + [c for m in models for c in with_model(configs, m)], records)
              for name, configs in grids.items()}
    return records, frames


def build(results_dir: Path, out: Output, budget_name: str = "ci", *, iterate: bool = True, iterations: int = 150,
          benchmark_json: Optional[Path | list[Path]] = None, log=None, only: Optional[Iterable[str]] = None,
          models: Iterable[str] = ()) -> list[Path]:
    """Write every table of TABLES (or those named in `only`); the paths written. Nothing is trained or
    evaluated: the learned-step tables read stored evaluations. `benchmark_json`: one file or a list (default:
    every RESULTS/benchmarks/precision-*.json). `log` gets the one-line warnings (default: stderr)."""
    log = log or (lambda m: print(m, file=sys.stderr))
    budget = G.get_budget(budget_name)
    records, frames = frames_at(Path(results_dir), budget, models, log)
    if benchmark_json is None:
        benchmark_json = sorted((Path(results_dir) / "benchmarks").glob("precision-*.json"))
    elif not isinstance(benchmark_json, list):
        benchmark_json = [Path(benchmark_json)]
    ctx = Context(Path(results_dir), out, budget, records, frames, iterate=iterate, iterations=iterations,
                  benchmark_json=benchmark_json, log=log)
    for table in TABLES:
        if only is None or table.__name__ in only:
            table(ctx)
    return out.written


def differences(committed: Path, made: Path, lines: int = 6) -> list[str]:
    """Each difference between the committed tables folder and a freshly made one, a few lines each."""
    import difflib

    ours = {p.name for p in committed.iterdir() if p.is_file()} if committed.is_dir() else set()
    theirs = {p.name for p in made.iterdir() if p.is_file()}
    out = [f"{committed / n}: committed, but the code no longer makes it" for n in sorted(ours - theirs)]
    out += [f"{committed / n}: made by the code, not committed" for n in sorted(theirs - ours)]
    for name in sorted(ours & theirs):
        old, new = (committed / name).read_text().splitlines(), (made / name).read_text().splitlines()
        if old != new:
            diff = [d for d in difflib.unified_diff(old, new, "committed", "made", n=0, lineterm="")
                    if not d.startswith(("---", "+++", "@@"))]
            shown = [f"    {d[:160]}" for d in diff[:lines]] + ([f"    ... {len(diff) - lines} more"] if len(diff) > lines else [])
            out.append(f"{committed / name}: differs from what the code makes\n" + "\n".join(shown))
    return out


def check(args) -> int:
    """--check: regenerate every table into a temporary folder and compare it with the committed one."""
    import tempfile

    committed = args.tables or args.results / "tables"
    with tempfile.TemporaryDirectory(prefix="tables-check-") as tmp:
        out = Output(Path(tmp) / "tables", Path(tmp) / "figures", draw=False)
        build(args.results, out, args.budget, iterate=not args.no_iterate, iterations=args.iterations,
              benchmark_json=args.benchmark_json, only=args.only, models=args.model)
        found = differences(committed, out.tables)
        if args.only:  # only the tables asked for: their own files
            made = {p.name for p in out.tables.iterdir()}
            found = [f for f in found if Path(f.split(":")[0]).name in made]
    for line in found:
        print(line)
    print(f"tables --check: {len(found)} difference(s) from {committed}" if found
          else f"tables --check: {committed} is what the code makes of {args.results}")
    return 1 if found else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench tables",
                                description="Tables (md, csv, tex) and figures from run records and benchmark JSON.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/ inside)")
    p.add_argument("--budget", choices=G.BUDGETS[1:], default="ci", help="which grids' runs to tabulate")
    p.add_argument("--tables", type=Path, help="output folder for tables (default RESULTS/tables)")
    p.add_argument("--figures", type=Path, help="output folder for figures (default RESULTS/figures)")
    p.add_argument("--benchmark-json", type=Path, action="append", metavar="JSON",
                   help="tabulate a pytest-benchmark JSON of bench/benchmarks/test_precision.py (repeatable; "
                        "default: every RESULTS/benchmarks/precision-*.json)")
    p.add_argument("--no-iterate", action="store_true", help="leave out the learned-step tables (GD iteration, OOD)")
    p.add_argument("--no-retrain", action="store_true", help=argparse.SUPPRESS)  # tables never train: a no-op
    p.add_argument("--check", action="store_true",
                   help="write nothing: regenerate every table into a temporary folder, print each difference from "
                        "the committed ones (TABLES), exit 1 if there is any")
    p.add_argument("--iterations", type=int, default=150,
                   help="GD iterations of the iteration tables (their stored evaluations: python -m bench evaluate)")
    p.add_argument("--only", nargs="+", choices=[t.__name__ for t in TABLES], metavar="TABLE",
                   help=f"write only these tables ({', '.join(t.__name__ for t in TABLES)})")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="add the runs of every grid with this model in place of its models (as `bench sweep --model`), "
                        "e.g. your own mixer package.module:Class (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not (args.results / "runs").is_dir():
        print(f"error: no run records under {args.results / 'runs'}; run a grid first "
              f"(python -m bench sweep bench.grids:all_ci)", file=sys.stderr)
        return 2
    if args.check:
        return check(args)
    out = Output(args.tables or args.results / "tables", args.figures or args.results / "figures")
    written = build(args.results, out, args.budget, iterate=not args.no_iterate, iterations=args.iterations,
                    benchmark_json=args.benchmark_json, only=args.only, models=args.model)
    print(f"wrote {len(written)} files under {out.tables} and {out.figures}")
    return 0
