"""The tables of learned GD steps applied iteratively and out of distribution (grids 3, 5, 7 and grid 8), the
paper's figures beside ours, and a run's eval MSE on other held-out sets: formatted from stored evaluations
(bench.harness.evaluations), never computed here.

`wanted` says which evaluations these tables read; `python -m bench evaluate` computes them from the runs'
weights. A row whose evaluation is missing, stale or whose weights changed says so in its `evaluation`
column and names the command that makes it; a carried one (its weights were not kept) says that.
"""
from __future__ import annotations

from typing import Callable, Optional

import pandas as pd

from bench.grids import registry
from bench.harness import evaluations as E
from bench.harness.iterate import curves_frame, level
from bench.reporting.frames import PAPER_FIGURES, fmt_mse, learned_step_label, learned_step_runs

LEVEL = "level (median MSE, last 20 iterations)"
MEAN = "mean MSE, last 20"


def option(solver, name: str, default=None):
    """A solver config's option, or the value a stored run had for a retired one (its `retired`)."""
    return (getattr(solver, "retired", None) or {}).get(name, getattr(solver, name, default))


def grid8_step_label(cfg) -> str:
    """A grid-8 GD-step run's row label: model, how it was trained, dtype, time cap."""
    lm = cfg.polish or cfg.optimizer
    slices = getattr(lm, "gradient", "whole") == "slice"
    whole_set = getattr(lm, "curvature_size", None) == getattr(lm, "train_size", 0)
    how = "matrix-free LM" + (" (each slice's own step)" if slices else " (curvature on the whole set)" if whole_set else "")
    how += " with the whole set's plane step" if getattr(lm, "whole_set_plane", False) else ""
    how += f", CG's last {option(lm, 'recycle')} directions recycled" if option(lm, "recycle", 0) else ""
    # every grid-8 GD step trains on registry.GD_STEP_PROBLEMS but the one that asks how many it needs
    problems = getattr(lm, "train_size", registry.GD_STEP_PROBLEMS)
    how += f", {problems:,} problems" if problems != registry.GD_STEP_PROBLEMS else ""
    how = how if cfg.polish is None else f"{cfg.optimizer.name}, then {how}"
    how += "" if cfg.starts_from is None else f" from the end of run {cfg.starts_from}"
    minutes = "" if cfg.time_limit_s is None else f", {cfg.time_limit_s / 60:.0f} min"
    layout = cfg.task.params.get("layout", "first_token")
    layout = "" if layout == "first_token" else f", {layout} layout"
    return f"{cfg.model.name} paper model{layout}, {how}, {cfg.dtype}{minutes}"


# ---- which runs, which evaluations ----------------------------------------------------


def grid3_steps(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The learned steps of gd_iteration and ood: the best float32 gd_step run per model and optimizer of
    grids 3, 5 and 7."""
    parts = [frames[g] for g in ("gd_step", "dtype_optimizer", "second_order") if g in frames]
    if not parts:
        return pd.DataFrame(columns=["hash", "task", "status", "dtype"])
    candidates = pd.concat(parts, ignore_index=True)
    return learned_step_runs(candidates[candidates["task"] == "gd_step"])


def grid8_steps(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Grid 8's GD-step runs that ended ok (its chains folded in)."""
    lim = frames.get("to_the_limit")
    if lim is None:
        return pd.DataFrame(columns=["hash", "task", "status", "dtype"])
    return lim[(lim["task"] == "gd_step") & (lim["status"] == "ok")]


def wanted(frames: dict[str, pd.DataFrame], iterations: int = 150) -> list[tuple[str, E.Spec]]:
    """(run hash, spec) of every evaluation the learned-step tables read, the reference first."""
    it = E.spec("gd_iteration", iterations=iterations)
    out = [(E.REFERENCE, E.spec("gd_iteration_reference", iterations=iterations))]
    for steps in (grid3_steps(frames), grid8_steps(frames)):
        for _, r in steps.iterrows():
            out.append((r["hash"], it))
            if r["dtype"] == "float32":
                out.append((r["hash"], E.SPECS["ood"]))
    return list(dict.fromkeys(out))


# ---- looking evaluations up -----------------------------------------------------------


class Lookups:
    """Stored evaluations of one results folder, each checked once against its record and weights; a row
    that cannot use its evaluation is logged in one line naming the file or the command."""

    def __init__(self, results_dir, records: dict, log: Callable[[str], None]):
        self.results_dir, self.records, self.log = results_dir, records, log
        self._weights: dict[str, tuple] = {}
        self._warned: set[str] = set()  # one line per run, however many of its rows are marked

    def weights(self, run: str) -> tuple:
        if run not in self._weights:
            self._weights[run] = E.current_weights(run, self.results_dir)
        return self._weights[run]

    def __call__(self, run: str, s: E.Spec) -> E.Found:
        if run == E.REFERENCE:
            found = E.lookup(self.results_dir, run, s)
        else:
            found = E.lookup(self.results_dir, run, s, record=self.records.get(run), weights=self.weights(run))
        if not found.usable and run not in self._warned:
            self._warned.add(run)
            self.log(f"tables: run {run}: {s.kind} {found.why}; its rows are marked")
        return found


def level_row(method: str, label: str, dtype: str, curve: Optional[pd.DataFrame], budget: str,
              carried: Optional[dict] = None) -> dict:
    """One row of an iteration table: where the curve levels off, and where it went non-finite."""
    if curve is not None:
        blown = curve.sort_values("iteration").loc[lambda d: d["median_mse"].isna(), "iteration"]
        values = (level(curve), level(curve, "mean_mse"), f"{int(blown.iloc[0])}" if len(blown) else "—")
    else:
        carried = carried or {}
        nonfinite = carried.get("non_finite_from")
        values = (carried.get("level"), carried.get("mean_level"), "—" if nonfinite is None else f"{nonfinite}")
    return {"method": method, "curve": label, "dtype": dtype, LEVEL: values[0], MEAN: values[1],
            # a step that blows up when iterated has no level: say where it went non-finite
            "non-finite from iteration": values[2], "budget": budget}


def iteration_levels(curves: pd.DataFrame, learned_budget: dict[str, str]) -> pd.DataFrame:
    """One row per curve of gd_iteration_curves' frame: where it levels off (floats, unformatted)."""
    return pd.DataFrame([level_row(method, label, dtype, g, learned_budget.get(label, "exact (no training)"))
                         for (method, label, dtype), g in curves.groupby(["method", "label", "dtype"], sort=False)])


def iteration_rows(steps: list[tuple[str, str, str, str]], find: Lookups, iterations: int
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(levels, curves) of learned steps [(run, label, dtype, budget)] and the exact references: levels as
    floats with their run and evaluation status; curves of every computed evaluation."""
    it = E.spec("gd_iteration", iterations=iterations)
    rows, curves = [], []
    for run, label, dtype, budget in steps:
        found = find(run, it)
        result = found.result if found.usable else None
        curve = None
        if result is not None and "median_mse" in result:
            curves.append({"method": "learned", "label": label, "dtype": result["dtype"], **result})
            curve = curves_frame(curves[-1:])
        row = level_row("learned", label, dtype, curve, budget, carried=result if curve is None else None)
        if result is None:
            row[LEVEL] = row[MEAN] = None
        rows.append({**row, "run": run, "evaluation": found.why or "ok"})
    reference = find(E.REFERENCE, E.spec("gd_iteration_reference", iterations=iterations))
    if reference.usable:
        curves += reference.result["curves"]
        exact = curves_frame(reference.result["curves"])
        rows += [{**r, "run": "—", "evaluation": "ok"} for r in iteration_levels(exact, {}).to_dict("records")]
    else:
        rows.append({"method": "true_gd", "curve": "true GD and the constructions", "dtype": "—", LEVEL: None,
                     MEAN: None, "non-finite from iteration": "—", "budget": "exact (no training)", "run": "—",
                     "evaluation": reference.why})
    return pd.DataFrame(rows), curves_frame(curves)


def shown(levels: pd.DataFrame) -> pd.DataFrame:
    out = levels.copy()
    for column in (LEVEL, MEAN):
        out[column] = out[column].map(fmt_mse)
    return out


def ood_rows(steps: list[tuple[str, str]], find: Lookups) -> pd.DataFrame:
    """The OOD table of learned steps [(run, label)]: MSE and rel per shifted parameter and scale."""
    rows = []
    for run, label in steps:
        found = find(run, E.SPECS["ood"])
        if not found.usable:
            rows.append({"model": label, "shifted": "—", "scale": "—", "mse": "—", "rel": "—", "run": run,
                         "evaluation": found.why})
            continue
        rows += [{"model": label, "shifted": r["shifted"], "scale": r["scale"], "mse": fmt_mse(r["mse"]),
                  "rel": fmt_mse(r["rel"]), "run": run, "evaluation": found.why or "ok"} for r in found.result]
    return pd.DataFrame(rows, columns=["model", "shifted", "scale", "mse", "rel", "run", "evaluation"])


# ---- the tables (registered in bench.reporting.tables.TABLES) -------------------------


def gd_iteration(ctx) -> None:
    """The learned GD steps of grids 3, 5 and 7 applied iteratively next to true GD and the constructions;
    out of distribution."""
    if not ctx.iterate or ctx.frames.get("gd_step") is None:
        return
    from bench.reporting.figures import gd_iteration_figure

    out, chosen = ctx.out, grid3_steps(ctx.frames)
    steps = [(r["hash"], learned_step_label(r["model"], r["optimizer"]), r["dtype"],
              r["budget"] + f" (gd_step eval MSE {fmt_mse(r['eval_mse'])})") for _, r in chosen.iterrows()]
    ctx.levels, curves = iteration_rows(steps, ctx.lookups, ctx.iterations)
    curves.to_csv(out.tables / "gd_iteration_curves.csv", index=False)
    out.written.append(out.tables / "gd_iteration_curves.csv")
    out.table("gd_iteration", shown(ctx.levels), "GD applied iteratively: where each curve levels off",
              [f"{ctx.iterations} iterations, eta 0.5, 256 held-out problems D=5, N=20; error = per-problem mean "
               "squared distance to the float64 least-squares solution; learned steps: the best float32 gd_step "
               "run per model and optimizer of grids 3, 5 and 7.", ctx.note, EVALUATED])
    out.figure("gd_iteration", gd_iteration_figure(curves))
    if len(steps):
        out.table("ood", ood_rows([(run, label) for run, label, *_ in steps], ctx.lookups),
                  "Learned GD step out of distribution: x or A scaled at test time (trained at scale 1)",
                  [ctx.note, "MSE of the predicted gradient (gd_step target) on 512 held-out problems.", EVALUATED])


EVALUATED = ("Computed once from each run's final weights by `python -m bench evaluate` and stored in "
             "results/evaluations/; the evaluation column says where one is missing or out of date.")


def to_the_limit_iterated(ctx) -> None:
    """Grid 8's learned GD steps applied iteratively and out of distribution."""
    gd = grid8_steps(ctx.frames)
    if not ctx.iterate or not len(gd):
        return
    steps = [(r["hash"], grid8_step_label(ctx.records[r["hash"]].config), r["dtype"],
              r["budget"] + f" (gd_step eval MSE {fmt_mse(r['eval_mse'])})") for _, r in gd.iterrows()]
    levels, _ = iteration_rows(steps, ctx.lookups, ctx.iterations)
    ctx.out.table("to_the_limit_gd_iteration", shown(levels), "Grid 8's learned GD steps applied iteratively, next "
                  "to true GD and the constructions", [f"{ctx.iterations} iterations, eta 0.5, 256 held-out problems "
                                                       "D=5, N=20 (as gd_iteration).", EVALUATED])
    f32 = [(run, label) for run, label, dtype, _ in steps if dtype == "float32"]
    if f32:
        ctx.out.table("to_the_limit_ood", ood_rows(f32, ctx.lookups), "Grid 8's learned GD steps out of "
                      "distribution: x or A scaled at test time (trained at scale 1)",
                      ["MSE of the predicted gradient on 512 held-out problems.", EVALUATED])


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
    levels = None if levels is None else levels[levels[LEVEL].notna()]
    if levels is not None and len(levels):
        def lvl(prefix, dtype="float32"):
            """The lowest level among the curves whose label starts with `prefix`."""
            sel = levels[levels["curve"].str.startswith(prefix) & (levels["dtype"] == dtype)]
            return sel.loc[sel[LEVEL].astype(float).idxmin()] if len(sel) else None

        def marked(r) -> str:  # a level from weights trained again, or carried: say so here too
            return "" if r.get("evaluation", "ok") == "ok" else f" ({r['evaluation']})"

        for model in ("baseconv", "linear_attention"):
            r = lvl(f"{model} learned")
            if r is not None:
                add("learned_gd_iterated", r[LEVEL], r["budget"],
                    f"{r['curve']}: median MSE over problems, level of the last 20 iterations{marked(r)}")
        r = levels[(levels["method"] == "true_gd") & (levels["dtype"] == "float32")]
        if len(r):
            add("true_gd_float32", r.iloc[0][LEVEL], "exact (no training)",
                "median MSE over problems, level of the last 20 iterations")
        r = lvl("attention learned")
        if r is not None:
            add("attention_step_iterated", r[LEVEL], r["budget"],
                f"median MSE over problems, level of the last 20 iterations{marked(r)}")
    return pd.DataFrame(rows)


def eval_spread(ctx) -> None:
    """A run's eval MSE on other held-out sets (`python -m bench eval-spread`), every run that has one."""
    from bench.studies.eval_spread import summary

    checks, marks = [], []
    for data in E.stored(ctx.results_dir, "eval_spread", on_bad=lambda m: ctx.log(f"tables: {m}")):
        run = data["run"]
        found = ctx.lookups(run, E.Spec(data["kind"], data["version"], data["params"]))
        checks.append({**data["result"], "hash": run})
        marks.append(found.why or "ok")
    if not checks:
        return
    table = summary(checks).assign(evaluation=marks)
    ctx.out.table("eval_spread", table, "A run's eval MSE on other held-out sets",
                  ["Its final weights on its own eval set, on fresh sets of the same size and on one large set "
                   "(`python -m bench eval-spread HASH...`, stored in results/evaluations/)."])
