"""bench.reporting.report (one self-contained HTML page and its Markdown twin) and bench.main (the main job).

The report is built from a small temporary results folder (tables written by bench.reporting.tables.Output,
figures, a real run record, constructions, kernel error floor, a benchmark JSON); the main job runs
with its cases shrunk to seconds.
"""
from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from bench import grids
from bench import main as main_job
from bench.reporting import report
from bench.reporting.frames import budget_text
from bench.harness.records import load_result
from bench.reporting.tables import Output
from bench.harness.train import run

pytestmark = pytest.mark.usefixtures("one_thread_module")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    """Every start tag with its attributes, and the ids of the report's sections."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, name: str) -> list[dict]:
        return [a for t, a in self.tags if t == name]


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


def tiny_multiply(steps: int = 3):
    return grids.CI.run("multiply", "baseconv", depth=1, steps=steps, eval_every=1, eval_size=16, batch_size=8,
                        model_params={**grids.exact_multiply_model(), "width": 8})


def small_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    return fig


@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cfg = tiny_multiply()
    record = run(cfg, root, progress=False)
    out = Output(root / "tables", root / "figures")
    out.table("headline", pd.DataFrame({"task": ["multiply"], "baseconv": ["1.23e-04"]}), "Best precision",
              ["Budget: made up for the test."])
    out.table("gd_iteration", pd.DataFrame({"curve": ["true GD (float32)"], "level": ["8.04e-15"]}),
              "GD applied iteratively", [])
    out.table("extra_table", pd.DataFrame({"a": ["x"], "budget": ["adam 3 steps"]}), "A table no map knows", [])
    out.figure("gd_iteration", small_figure())
    out.figure("unclaimed_figure", small_figure())
    pd.DataFrame({"iteration": [0, 1]}).to_csv(root / "tables" / "gd_iteration_curves.csv", index=False)
    (root / "constructions").mkdir()
    (root / "constructions" / "constructions.md").write_text(
        "# Hand-set constructions\n\nCommand: `python -m bench constructions --batch 8`\n\n"
        "| primitive | fp32 MSE |\n|---|---|\n| multiply | 6.30e-16 |\n")
    small_figure().savefig(root / "constructions" / "gd_vs_newton.png")
    (root / "kernels").mkdir()
    records = [{"backend": b, "dtype": d, "L": L, "y": y, "grad_u": y, "grad_k": y}
               for b, y in (("rounded oracle", 2.5e-8), ("direct", 6.1e-8)) for d in ("float32", "float64")
               for L in (20, 40)]
    (root / "kernels" / "error_floor_cpu.json").write_text(json.dumps(
        {"device": "cpu", "machine": "x86_64", "torch": "2", "command": "python -m bench kernel-floor",
         "shape": {"B": 4, "D": 8, "seeds": [0, 1, 2]}, "records": records}))
    small_figure().savefig(root / "kernels" / "error_floor_cpu.png")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "speed.json").write_text(json.dumps({
        "machine_info": {"profile": "ci", "torch": "2", "torch_threads": 1},
        "benchmarks": [{"name": "test_speed_vs_paper[auto]", "stats": {"median": 0.474},
                        "extra_info": {"ours_ms_per_step": 474.0, "paper_ms_per_step": 986.0, "speedup": 2.08,
                                       "config": {"ignored": True}}}]}))
    html_path, md_path = report.write_report(root, root / "out", profile="ci", sources={"headline": [cfg]})
    return root, cfg, record, html_path, md_path


def test_every_table_and_part_is_a_section(small_results):
    root, _, _, html_path, _ = small_results
    text = html_path.read_text()
    ids = [a.get("id") for a in parse(text).of("section")]
    assert ids[:3] == ["headline", "gd_iteration", "extra_table"]  # the map's order, then the rest by name
    for part in ("constructions", "kernels_error_floor_cpu", "bench_speed", "other_figures"):
        assert part in ids
    for cell in ("1.23e-04", "8.04e-15", "6.30e-16", "6.10e-08", "986", "A table no map knows"):
        assert cell in text
    assert "tables/gd_iteration_curves.csv (2 rows)" in text  # a data file without a table is named
    assert "ignored" not in text  # a benchmark's config is not a column


def test_every_figure_is_embedded_and_nothing_is_loaded(small_results):
    root, _, _, html_path, _ = small_results
    tags = parse(html_path.read_text())
    images = tags.of("img")
    pngs = sorted(root.glob("**/*.png"))
    assert len(images) == len(pngs) == 4
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not tags.of("link") and not tags.of("script") and not tags.of("iframe")
    for name, attrs in tags.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            assert value is None or value.startswith(("data:", "#")), f"<{name} {key}={value!r}> loads something"


def test_budget_from_the_records_paper_beside_ours_and_environment(small_results):
    root, cfg, record, html_path, _ = small_results
    text = html_path.read_text()
    headline = text[text.index('id="headline"'):text.index('id="gd_iteration"')]
    assert "1 of 1 runs recorded" in headline and budget_text(cfg) in headline
    assert f"steps done {record.steps_done}" in headline and "time cap: none" in headline
    assert "adam 3 steps (1 case)" in text  # the budget column of a table without records
    gd = text[text.index('id="gd_iteration"'):text.index('id="extra_table"')]
    assert "~1e-13 MSE" in gd and "~5e-15 MSE" in gd  # the paper's figures beside ours
    env = parse(text)
    assert any(a.get("id") == "environment-table" for a in env.of("table"))
    import torch

    block = text[text.index('id="environment"'):text.index("<nav>")]
    for label in ("machine", "torch", "torch threads", "git commit", "records made on"):
        assert f"<td>{label}</td>" in block
    assert torch.__version__ in block


def test_markdown_twin_links_the_figures(small_results):
    root, _, _, html_path, md_path = small_results
    text = md_path.read_text()
    for title in ("Best precision", "GD applied iteratively", "A table no map knows", "Hand-set constructions",
                  "Environment"):
        assert title in text
    assert any(line.startswith("| multiply") and "1.23e-04" in line for line in text.splitlines())
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 4
    assert all((md_path.parent / link).exists() for link in links)
    assert "http" not in text


def test_report_command_needs_tables(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path)]) == 2
    assert "no tables under" in capsys.readouterr().err


def test_bad_files_are_named_once_and_the_report_goes_on(small_results, tmp_path, capsys):
    """A corrupt record, a truncated benchmark JSON and a corrupt kernel JSON: one warning line each, naming the
    file; the report is written all the same, with the unreadable record said in its intro."""
    import shutil

    root = tmp_path / "results"
    shutil.copytree(small_results[0], root)
    (root / "runs" / "0123456789abcdef.json").write_text('{"config": ')
    speed = (root / "benchmarks" / "speed.json").read_text()
    (root / "benchmarks" / "speed.json").write_text(speed[: len(speed) // 2])
    (root / "kernels" / "error_floor_cpu.json").write_bytes(b"\x00\x01")
    assert report.main(["--results", str(root), "--profile", "ci"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    for name in ("runs/0123456789abcdef.json", "benchmarks/speed.json", "kernels/error_floor_cpu.json"):
        assert sum(name in line for line in err) == 1, name
    md = (root / "report.md").read_text()
    assert "Unreadable run records, left out: `runs/0123456789abcdef.json`" in md
    assert "Best precision" in md  # the tables are all there


@pytest.fixture
def tiny_main_job(monkeypatch):
    """The main job's cases shrunk to seconds: tiny runs, few construction iterations, short kernels."""
    gd = grids.CI.run("gd_step", "linear_attention", steps=3, eval_every=1, eval_size=16, batch_size=8,
                      model_params=grids.exact_gd_step_model())
    configs = [tiny_multiply(), grids.CI.run("multiply", "attention", depth=1, steps=3, eval_every=1, eval_size=16,
                                             batch_size=8, model_params={**grids.exact_multiply_model(), "width": 8}),
               gd]
    monkeypatch.setattr(grids, "quick", lambda: configs)
    monkeypatch.setattr(main_job, "CONSTRUCTION_ARGS", ["--batch", "4", "--steps", "20", "--ns-iterations", "2",
                                                        "--rounds", "1"])
    monkeypatch.setattr(main_job, "KERNEL_MAX_LEN", 8)
    monkeypatch.setattr(main_job, "KERNEL_TRITON_MAX_LEN", 0)
    monkeypatch.setattr(main_job, "ITERATIONS", 30)
    return configs


def test_main_job_says_what_runs_and_where_everything_went(tiny_main_job, tmp_path, capsys):
    results = tmp_path / "quick"
    assert main_job.main(["--results", str(results), "--jobs", "1"]) == 0  # in this process: the stand-ins apply
    out = capsys.readouterr().out
    n = len(main_job.CASES)
    for i in range(1, n + 1):
        assert f"[{i}/{n}] " in out
        assert f"({n - i} more after this" in out
    for name in ("headline", "runs", "gd_iteration", "kernel_error_floor"):
        assert (results / "tables" / f"{name}.md").exists()
    assert (results / "report.html").exists() and (results / "report.md").exists()
    assert "MULTIPLY trained to the floor" in out and "float32 forward at L=8: rounded oracle" in out
    assert "Where everything went" in out and str(results / "report.html") in out
    head = pd.read_csv(results / "tables" / "headline.csv")
    assert set(head["question"]) >= {"MULTIPLY trained to the floor", "the GD step (gd_step) learned",
                                     "READ by an exact construction", "true GD applied 30 times",
                                     "the learned GD step applied 30 times",
                                     "kernel error floor: causal conv, float32, L=8 (relative L2)"}
    first = load_result(tiny_main_job[0], results).finished_at
    assert main_job.main(["--results", str(results), "--jobs", "1"]) == 0  # a second run trains nothing again
    assert load_result(tiny_main_job[0], results).finished_at == first
    sections = [a.get("id") for a in parse((results / "report.html").read_text()).of("section")]
    assert sections[:4] == ["headline", "runs", "gd_iteration", "kernel_error_floor"]
    assert "kernels_error_floor_cpu" not in sections  # the kernel floor once, with its figure
    page = (results / "report.html").read_text()
    kernel = page[page.index('id="kernel_error_floor"'):]
    assert "error_floor_cpu.png" in kernel[:kernel.index("</section>")]
    assert "profile quick; 3 of 3 runs recorded" in (results / "report.html").read_text()


def test_main_job_rejects_unknown_arguments_for_quick(capsys):
    with pytest.raises(SystemExit):
        main_job.main(["--bogus"])
    assert "unrecognized arguments for profile quick: --bogus" in capsys.readouterr().err
