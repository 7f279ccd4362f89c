"""The report of a results folder: one self-contained HTML page and its Markdown twin.

    python -m bench report                                  # results/ -> results/report.html, report.md
    python -m bench report --results results/quick          # the main job's folder (it writes this itself)
    python -m bench report --results DIR --out OUT

The page holds every table under DIR/tables (each .md file that bench.reporting.tables or the main job
wrote, rendered with its title and notes), the figures that belong to it (DIR/figures), the
paper's figures beside ours where the suite has them (bench.reporting.frames.PAPER_FIGURES), the budget each
table's numbers were obtained with, read from the run records (profile, optimizer and steps, time
cap, training time), the exact constructions (DIR/constructions), the kernel error floor
(DIR/kernels), every pytest-benchmark JSON (DIR/benchmarks, DIR/kernels; for the speed benchmark
our step beside the paper's step, bench/benchmarks/paper_reference.py), and the environment (machine, torch,
threads, git commit; and what the records were made with). Figures are embedded as base64 PNG:
the page loads nothing from anywhere. report.md shows the same with the figures linked by
relative path.
"""
from __future__ import annotations

import argparse
import base64
import collections
import datetime as _dt
import html
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import markdown as md_lib
import pandas as pd

from bench.reporting.frames import PAPER_BUDGET, PAPER_FIGURES, budget_text
from bench.harness.records import RunResult, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tables in the order the page shows them (the rest follow, by name).
TABLE_ORDER = ("headline", "paper_comparison", "runs", "gd_iteration", "kernel_error_floor", "primitives",
               "added_mixers", "attention_multiply", "gd_step", "least_squares_depth", "gd_k", "dtype", "optimizer",
               "conditioning", "second_order", "ood", "to_the_limit", "to_the_limit_diagnostics",
               "to_the_limit_gd_iteration", "to_the_limit_ood")

# The figures (DIR/figures/<name>.png) shown with each table; figures no table claims get a section
# of their own at the end, so every figure is on the page.
FIGURES_OF = {
    "primitives": ("mse_vs_depth_read", "mse_vs_depth_linear", "mse_vs_depth_multiply", "training_curves_multiply"),
    "added_mixers": (),
    "least_squares_depth": ("mse_vs_depth_least_squares",),
    "gd_step": ("training_curves_gd_step",),
    "optimizer": ("mse_vs_optimizer",),
    "gd_iteration": ("gd_iteration",),
    "runs": ("training_curves_runs",),
}

# The paper's figures (bench.reporting.frames.PAPER_FIGURES keys) that each table is to be read against.
PAPER_OF = {
    "least_squares_depth": ("least_squares_attention",),
    "gd_iteration": ("learned_gd_iterated", "true_gd_float32", "attention_step_iterated"),
    "to_the_limit_gd_iteration": ("learned_gd_iterated", "true_gd_float32"),
    "gd_step": ("learned_gd_iterated",),
    "headline": ("learned_gd_iterated", "true_gd_float32"),
}

# The grids (bench.grids.registry.table_grids) whose runs each table of `python -m bench tables` reads.
GRIDS_OF = {
    "headline": ("primitives", "added_mixers", "gd_step", "gd_k_least_squares", "second_order", "to_the_limit"),
    "primitives": ("primitives",), "added_mixers": ("added_mixers",), "attention_multiply": ("attention_multiply",),
    "gd_step": ("gd_step",), "least_squares_depth": ("gd_k_least_squares",), "gd_k": ("gd_k_least_squares",),
    "dtype": ("dtype_optimizer",), "optimizer": ("dtype_optimizer",), "conditioning": ("added_mixers", "gd_step"),
    "second_order": ("second_order",), "to_the_limit": ("to_the_limit",),
    "to_the_limit_diagnostics": ("to_the_limit",), "to_the_limit_gd_iteration": ("to_the_limit",),
    "to_the_limit_ood": ("to_the_limit",),
    "gd_iteration": ("gd_step", "dtype_optimizer", "second_order"),
    "ood": ("gd_step", "dtype_optimizer", "second_order"),
    "paper_comparison": ("gd_k_least_squares", "gd_step", "dtype_optimizer", "second_order"),
}
# Which of those grids' runs a table shows, where it shows only some.
RUNS_OF = {
    "headline": lambda c: c.dtype == "float32" and "kappa" not in c.task.params,  # grid 6's kappa runs: own table
    "added_mixers": lambda c: c.task.name in ("read", "linear", "multiply"),
    "least_squares_depth": lambda c: c.task.name == "least_squares", "gd_k": lambda c: c.task.name == "gd_k",
    "dtype": lambda c: c.dtype == "float64", "optimizer": lambda c: c.optimizer.name == "lbfgs",
    "conditioning": lambda c: c.task.name == "gd_step", "gd_iteration": lambda c: c.task.name == "gd_step",
    "ood": lambda c: c.task.name == "gd_step" and c.dtype == "float32",
    "to_the_limit_gd_iteration": lambda c: c.task.name == "gd_step",
    "to_the_limit_ood": lambda c: c.task.name == "gd_step" and c.dtype == "float32",
}
# extra_info entries of a benchmark JSON that are not one number or word
BENCHMARK_SKIP = {"config", "curve", "load_avg", "polish", "optimizer_diagnostics", "seconds_to", "message",
                  "config_hash", "case_id", "switched_at"}


@dataclass
class Section:
    key: str  # anchor and file stem
    title: str
    body_md: str  # Markdown: the table(s), lists
    notes: list[str] = field(default_factory=list)
    budget: Optional[str] = None
    paper: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    source: str = ""
    kind: str = "other"  # records: the budget line is read from the run records


BUDGET_FROM = {"records": " (from the run records)"}


# ---- what the folder holds ----------------------------------------------------------


def table_configs(profile: str) -> dict[str, list]:
    """Per table name, the run configs its numbers come from (for the budget line)."""
    from bench.grids import registry
    from bench.harness.config import unique_configs

    if profile == "quick":
        runs = registry.main_job()
        return {"headline": runs, "runs": runs, "gd_iteration": [runs[2]]}
    if profile not in ("ci", "paper"):
        return {}
    grid = registry.table_grids(profile)  # as tables.build reads them
    return {table: unique_configs(c for g in grids for c in grid.get(g, []) if RUNS_OF.get(table, lambda _: True)(c))
            for table, grids in GRIDS_OF.items()}


def detect_profile(records: dict[str, RunResult]) -> str:
    """The profile whose runs the folder holds most of: quick (the main job), ci or paper."""
    from bench.grids import registry

    if not records:
        return "none"
    counts = {profile: sum(c.hash in records for c in registry.profile_runs(profile)) for profile in ("quick", "ci", "paper")}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else "none"


def records_budget(configs: list, records: dict[str, RunResult], profile: str) -> str:
    """The budget of a table, from the records of its runs: what trained them, how long, and where
    they stopped."""
    found = [records[c.hash] for c in configs if c.hash in records]
    parts = [f"profile {profile}", f"{len(found)} of {len(configs)} runs recorded"]
    if found:
        recipes = collections.Counter(budget_text(r.config) for r in found)
        shown = [f"{text} ({n} run{'s' if n > 1 else ''})" for text, n in recipes.most_common(4)]
        if len(recipes) > 4:
            shown.append(f"and {len(recipes) - 4} other recipes")
        parts.append("trained by " + "; ".join(shown))
        caps = sorted({r.config.time_limit_s for r in found if r.config.time_limit_s})
        parts.append("time cap: " + (", ".join(f"{c:g} s" for c in caps) + " of training per run" if caps else "none"))
        steps = [r.steps_done for r in found]
        parts.append(f"steps done {min(steps):,}" + (f"-{max(steps):,}" if max(steps) != min(steps) else ""))
        seconds = [r.train_time_s for r in found]
        parts.append(f"training time {min(seconds):,.0f}-{max(seconds):,.0f} s a run, {sum(seconds):,.0f} s in all")
        threads = sorted({r.environment.get("torch_threads") for r in found if r.environment.get("torch_threads")})
        if threads:
            parts.append("torch threads " + ", ".join(map(str, threads)))
    return "; ".join(parts) + "."


def parse_table_md(text: str) -> tuple[str, list[str], str]:
    """A bench.reporting.tables Output.table file -> (title, notes, the Markdown table)."""
    lines = text.splitlines()
    title = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else ""
    rest = lines[1:] if title else lines
    first = next((i for i, line in enumerate(rest) if line.startswith("|")), len(rest))
    notes = [line.strip() for line in rest[:first] if line.strip()]
    return title, notes, "\n".join(rest[first:]).strip()


def warn(message: str) -> None:
    """One line on stderr: a file the report could not read (it goes on without it)."""
    print(f"report: {message}", file=sys.stderr)


def read_json(path: Path) -> Optional[dict]:
    """The JSON in `path`, or None after one warning line naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warn(f"skipping {path}: not readable JSON ({type(err).__name__}: {err})")
        return None


def budget_from_csv(csv: Path) -> Optional[str]:
    """Tables of benchmark cases carry their budget in a column."""
    if not csv.exists():
        return None
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        warn(f"skipping {csv}: not a readable CSV ({type(err).__name__}: {err})")
        return None
    if "budget" not in df.columns:
        return None
    counts = collections.Counter(df["budget"])
    return "; ".join(f"{b} ({n} case{'s' if n > 1 else ''})" for b, n in counts.most_common(6)) + "."


def table_sections(results: Path, records: dict[str, RunResult], profile: str,
                   sources: Optional[dict[str, list]] = None) -> list[Section]:
    tables = results / "tables"
    names = sorted(p.stem for p in tables.glob("*.md")) if tables.is_dir() else []
    order = {name: i for i, name in enumerate(TABLE_ORDER)}
    names.sort(key=lambda n: (order.get(n, len(order)), n))
    configs = table_configs(profile) if sources is None else sources
    sections = []
    for name in names:
        try:
            title, notes, body = parse_table_md((tables / f"{name}.md").read_text())
        except (OSError, ValueError) as err:
            warn(f"skipping {tables / f'{name}.md'}: not readable ({type(err).__name__}: {err})")
            continue
        kind = "records" if name in configs else "other"
        if name in configs:
            budget = records_budget(configs[name], records, profile)
        else:
            budget = budget_from_csv(tables / f"{name}.csv") or "stated in the notes above (no run records behind it)"
        paper = [f"{text}: ~{value:g} MSE (paper budget)" for value, text in
                 (PAPER_FIGURES[k] for k in PAPER_OF.get(name, ()))]
        figures = [results / "figures" / f"{f}.png" for f in FIGURES_OF.get(name, ())]
        sections.append(Section(name, title or name, body, notes, budget, paper,
                                [f for f in figures if f.exists()], f"tables/{name}.md", kind))
    return sections


def constructions_section(results: Path) -> Optional[Section]:
    path = results / "constructions" / "constructions.md"
    if not path.exists():
        return None
    text = path.read_text()
    lines = text.splitlines()
    title = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else "Hand-set constructions"
    body = "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip()
    command = re.search(r"`(python -m bench\.construction_report[^`]*)`", text)
    return Section("constructions", f"{title} (exact weight constructions)", body,
                   budget="exact constructions, no training" + (f"; `{command.group(1)}`" if command else ""),
                   figures=sorted((results / "constructions").glob("*.png")), source="constructions/constructions.md")


def kernel_sections(results: Path) -> list[Section]:
    from bench.experiments.kernel_error_floor import floor_table

    sections = []
    for path in sorted((results / "kernels").glob("error_floor_*.json")):
        data = read_json(path)
        if data is None:
            continue
        body = pd.DataFrame(floor_table(data["records"])).to_markdown(index=False, disable_numparse=True)
        notes = [f"Relative L2 error of the forward pass against the float64 oracle, median of "
                 f"{len(data['shape']['seeds'])} seeds, B={data['shape']['B']}, D={data['shape']['D']}, on "
                 f"{data['device']} ({data.get('machine', '')}, torch {data.get('torch', '')}). 'rounded oracle': "
                 "the exact result rounded once, which no backend can beat. Every length and the gradients: the "
                 "JSON and the figure."]
        png = path.with_suffix(".png")
        sections.append(Section(f"kernels_{path.stem}", f"Kernel error floor ({data['device']})", body, notes,
                                budget=f"no training; `{data.get('command', 'python -m bench kernel-floor')}`",
                                figures=[png] if png.exists() else [], source=f"kernels/{path.name}"))
    return sections


def fmt_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def benchmark_sections(results: Path) -> list[Section]:
    """One table per pytest-benchmark JSON: the time of each case and its scalar extra_info."""
    paths = sorted((results / "benchmarks").glob("*.json")) + sorted((results / "kernels").glob("bench_*.json"))
    sections = []
    for path in paths:
        data = read_json(path)
        benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
        if not isinstance(benchmarks, list) or not benchmarks:
            continue
        rows = []
        for b in benchmarks:
            info = b.get("extra_info", {})
            row = {"case": b.get("name", "?"), "median time (s)": fmt_value(b.get("stats", {}).get("median"))}
            row.update({k: fmt_value(v) for k, v in info.items()
                        if k not in BENCHMARK_SKIP and (v is None or isinstance(v, (int, float, str, bool)))})
            rows.append(row)
        df = pd.DataFrame(rows).fillna("")
        mi = data.get("machine_info", {})
        notes = [f"profile {mi.get('profile', '?')}; torch {mi.get('torch', '?')}, {mi.get('torch_threads', '?')} torch "
                 f"thread(s); {mi.get('cpu', {}).get('brand_raw', mi.get('processor', ''))}; run at "
                 f"{data.get('datetime', '?')}; commit {str(data.get('commit_info', {}).get('id', '?'))[:12]}."]
        paper = []
        if any("paper_ms_per_step" in b.get("extra_info", {}) for b in benchmarks):
            paper.append("paper_ms_per_step: the paper's training step (bench/benchmarks/paper_reference.py, its structure "
                         "re-implemented) timed in the same process, beside ours (ours_ms_per_step)")
        sections.append(Section(f"bench_{path.stem}", f"Benchmark {path.name}",
                                df.to_markdown(index=False, disable_numparse=True), notes,
                                budget=f"pytest-benchmark, profile {mi.get('profile', '?')}", paper=paper,
                                source=str(path.relative_to(results))))
    return sections


def loose_figures(results: Path, claimed: Iterable[Path]) -> Optional[Section]:
    claimed = {p.resolve() for p in claimed}
    rest = [p for p in sorted((results / "figures").glob("*.png")) if p.resolve() not in claimed]
    if not rest:
        return None
    return Section("other_figures", "Other figures", "", figures=rest, source="figures/")


def data_files(results: Path) -> list[str]:
    """CSV files under tables/ without a table of their own (data, e.g. whole curves)."""
    tables = results / "tables"
    out = []
    for csv in sorted(tables.glob("*.csv")) if tables.is_dir() else []:
        if not csv.with_suffix(".md").exists():
            n = sum(1 for _ in csv.open(errors="replace")) - 1
            out.append(f"tables/{csv.name} ({n:,} rows)")
    return out


# ---- environment ----------------------------------------------------------------------


def git_commit(repo: Path = REPO_ROOT) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def environment_rows(records: dict[str, RunResult]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where the report was built, what the records were made with) as label/value pairs."""
    import torch

    from bench.harness.records import environment

    env = environment()
    here = [("machine", f"{env['cpu']} ({env['cpu_count']} cores), {env['platform']}"),
            ("python", env["python"]), ("torch", env["torch"]), ("triton", str(env["triton"])),
            ("torch threads", str(torch.get_num_threads())),
            ("CUDA", f"{env['cuda']}, {torch.cuda.device_count()} GPU(s)" if env["cuda"] else "none"),
            ("git commit", git_commit()),
            ("built at", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]
    made = []
    for key, label in (("device_name", "records made on"), ("torch", "records' torch"),
                       ("torch_threads", "records' torch threads")):
        counts = collections.Counter(str(r.environment.get(key)) for r in records.values())
        if counts:
            made.append((label, "; ".join(f"{v} ({n} runs)" for v, n in counts.most_common())))
    return here, made


# ---- rendering ------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1320px;padding:0 1em;
color:#1b1f24;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em} h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #d0d7de;
padding-bottom:.2em} h3{font-size:1.05em}
.meta{color:#57606a;font-size:.9em} .budget{background:#f6f8fa;border-left:4px solid #0969da;padding:.4em .8em;
font-size:.88em;margin:.6em 0} .paper{background:#fff8c5;border-left:4px solid #bf8700;padding:.4em .8em;
font-size:.88em;margin:.6em 0} .notes{font-size:.88em;color:#333}
.scroll{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.8em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top;min-width:4.5em}
th{background:#f6f8fa} tr:nth-child(even) td{background:#fbfcfd}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}
.figures-2 figure{max-width:48%} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.8em;color:#57606a}
code{background:#f6f8fa;padding:0 .25em;border-radius:3px;font-size:.9em}
nav ol{columns:3;font-size:.88em} .env td:first-child{font-weight:600;white-space:nowrap}
"""


def md_to_html(text: str) -> str:
    return md_lib.markdown(text, extensions=["tables"], output_format="html")


def image_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def wrap_tables(fragment: str) -> str:
    """Wide tables scroll sideways instead of widening the page."""
    return fragment.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")


def render_html(title: str, intro: list[str], env: tuple[list, list], sections: list[Section],
                data: list[str]) -> str:
    here, made = env
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    out += [f'<p class="meta">{md_to_html(line)[3:-4]}</p>' for line in intro]
    out.append('<h2 id="environment">Environment</h2><table class="env" id="environment-table">')
    out += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in here + made]
    out.append("</table>")
    out.append('<nav><h2>Contents</h2><ol>')
    out += [f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in sections]
    out.append("</ol></nav>")
    for s in sections:
        out.append(f'<section class="report-section" id="{s.key}" data-source="{html.escape(s.source)}">')
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.notes:
            out.append('<div class="notes">' + "".join(md_to_html(n) for n in s.notes) + "</div>")
        if s.budget:
            out.append(f'<div class="budget"><b>Budget{BUDGET_FROM.get(s.kind, "")}:</b> {md_to_html(s.budget)[3:-4]}</div>')
        if s.paper:
            out.append('<div class="paper"><b>The paper (Liu et al., ICLR 2025) beside ours:</b><ul>'
                       + "".join(f"<li>{html.escape(p)}</li>" for p in s.paper) + "</ul>"
                       + f"<small>Paper budget: {html.escape(PAPER_BUDGET)}.</small></div>")
        if s.body_md:
            out.append(wrap_tables(md_to_html(s.body_md)))
        if s.figures:
            out.append(f'<div class="figures-{min(len(s.figures), 2)}">' + "".join(image_tag(f) for f in s.figures)
                       + "</div>")
        out.append(f'<p class="meta">From <code>{html.escape(s.source)}</code>.</p></section>')
    if data:
        out.append('<h2 id="data">Data files</h2><ul>' + "".join(f"<li><code>{html.escape(d)}</code></li>"
                                                                 for d in data) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(title: str, intro: list[str], env: tuple[list, list], sections: list[Section],
                    data: list[str], out_dir: Path) -> str:
    here, made = env
    lines = [f"# {title}", ""] + [f"{line}  " for line in intro] + ["", "## Environment", "",
                                                                    "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in here + made]
    for s in sections:
        lines += ["", f"## {s.title}", ""]
        lines += [f"{n}  " for n in s.notes]
        if s.budget:
            lines += ["", f"**Budget{BUDGET_FROM.get(s.kind, '')}:** {s.budget}"]
        if s.paper:
            lines += ["", "**The paper (Liu et al., ICLR 2025) beside ours:**", ""] + [f"- {p}" for p in s.paper]
            lines += [f"- paper budget: {PAPER_BUDGET}"]
        if s.body_md:
            lines += ["", s.body_md]
        for f in s.figures:
            rel = Path(__import__("os").path.relpath(f.resolve(), out_dir.resolve())).as_posix()
            lines += ["", f"![{f.stem}]({rel})"]
        lines += ["", f"From `{s.source}`."]
    if data:
        lines += ["", "## Data files", ""] + [f"- `{d}`" for d in data]
    return "\n".join(lines) + "\n"


def build_sections(results: Path, records: dict[str, RunResult], profile: str,
                   sources: Optional[dict[str, list]] = None) -> list[Section]:
    sections = table_sections(results, records, profile, sources)
    cons = constructions_section(results)
    if cons is not None:
        sections.append(cons)
    kernels = kernel_sections(results)
    table = next((t for t in sections if t.key == "kernel_error_floor"), None)
    if table is not None:  # the main job tabulated the kernel floor itself: its figure goes with that table
        table.figures += [f for k in kernels for f in k.figures]
    else:
        sections += kernels
    sections += benchmark_sections(results)
    other = loose_figures(results, [f for s in sections for f in s.figures])
    if other is not None:
        sections.append(other)
    return sections


def write_report(results: str | Path = "results", out: str | Path | None = None, *, profile: Optional[str] = None,
                 sources: Optional[dict[str, list]] = None) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/report.md for the results folder; their paths.

    `profile` (quick, ci, paper) says which grids the tables were built from; by default the one
    whose runs the folder holds most of. `sources` (table name -> run configs) replaces the
    built-in table-to-runs map."""
    from bench.reporting.frames import records_by_hash

    results = Path(results)
    out = Path(out) if out is not None else results
    records = records_by_hash(results, log=lambda m: print(m, file=sys.stderr), who="report") if (results / "runs").is_dir() else {}
    profile = profile or detect_profile(records)
    sections = build_sections(results, records, profile, sources)
    title = f"precision-bench report: {results}"
    intro = [f"Results folder `{results}` (profile **{profile}**: {len(records)} run records). Every table with "
             "its figures, the budget its numbers were obtained with, and the paper's figures beside ours.",
             "MSE: final eval MSE on held-out data, float64, against exact targets; floors: the MSE of rounding "
             "the exact targets to the dtype."]
    bad = getattr(records, "unreadable", {})
    if bad:
        intro.append(f"Unreadable run records, left out: {', '.join(f'`runs/{h}.json`' for h in sorted(bad))}.")
    env = environment_rows(records)
    data = data_files(results)
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, render_html(title, intro, env, sections, data))
    atomic_write_text(md_path, render_markdown(title, intro, env, sections, data, out))
    return html_path, md_path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench report", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (tables/, figures/, runs/)")
    p.add_argument("--out", type=Path, help="folder for report.html and report.md (default: RESULTS)")
    p.add_argument("--profile", choices=("quick", "ci", "paper"),
                   help="which grids the tables come from (default: the one whose runs RESULTS holds most of)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not (args.results / "tables").is_dir():
        print(f"error: no tables under {args.results / 'tables'}; run `python -m bench main` or "
              "`python -m bench tables` first", file=sys.stderr)
        return 2
    html_path, md_path = write_report(args.results, args.out, profile=args.profile)
    print(f"wrote {html_path} and {md_path}")
    return 0
