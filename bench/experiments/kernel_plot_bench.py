"""Plot and tabulate a conv benchmark JSON written by bench/benchmarks/test_bench_kernels.py.

    python -m bench kernel-plot results/kernels/bench_cpu.json [--out results/kernels/bench_cpu.png]

Left: the paper's shapes (median ms per backend); right: ms over L for the small and
scaling sweeps; top forward, bottom forward+backward. Uses device time where the JSON has
it (CUDA), wall time otherwise. Prints a markdown table of the same numbers.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

GROUPS = ("conv-fwd", "conv-fwdbwd")
STYLE = {"direct": "C0", "fft": "C1", "triton": "C2", "conv1d": "C3"}


def load(path: Path) -> list[dict]:
    rows = []
    for bench in json.loads(path.read_text())["benchmarks"]:
        info = dict(bench["extra_info"])
        info["group"] = bench["group"]
        info["ms"] = info.get("device_ms_median", bench["stats"]["median"] * 1e3)
        rows.append(info)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| group | suite | B | L | D | backend | ms (median) | GB/s | rel L2 (y) |", "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: (r["group"], r["suite"], r["D"], r["L"], r["backend"])):
        lines.append(f"| {r['group']} | {r['suite']} | {r['B']} | {r['L']} | {r['D']} | {r['backend']} | "
                     f"{r['ms']:.3f} | {r['gb_per_s']:.2f} | {r['rel_l2_y']:.1e} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for row_axes, group in zip(axes, GROUPS):
        paper = [r for r in rows if r["group"] == group and r["suite"] == "paper"]
        shapes = sorted({(r["D"], r["L"]) for r in paper})
        backends = [b for b in STYLE if any(r["backend"] == b for r in paper)]
        ax = row_axes[0]
        width = 0.8 / max(1, len(backends))
        for j, backend in enumerate(backends):
            ms = {(r["D"], r["L"]): r["ms"] for r in paper if r["backend"] == backend}
            xs = [i + j * width for i, s in enumerate(shapes) if s in ms]
            ax.bar(xs, [ms[s] for s in shapes if s in ms], width, color=STYLE[backend], label=backend)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
        ax.set_xticklabels([f"D{d}\nL{L}" for d, L in shapes], fontsize=8)
        ax.set_yscale("log")
        batch = paper[0]["B"] if paper else "?"
        ax.set_title(f"{group}: paper shapes (B={batch})")
        ax.set_ylabel("median time (ms)")
        ax.legend(fontsize=8)
        ax = row_axes[1]
        lines = defaultdict(list)
        for r in rows:
            if r["group"] == group and r["suite"] != "paper":
                lines[(r["suite"], r["backend"], r["B"], r["D"])].append((r["L"], r["ms"]))
        for (suite, backend, batch, channels), pts in sorted(lines.items()):
            pts.sort()
            ax.loglog(*zip(*pts), "-o" if suite == "scaling" else "--s", color=STYLE[backend], ms=4,
                      label=f"{backend} ({suite}: B={batch}, D={channels})")
        ax.set_title(f"{group}: time over L")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench kernel-plot", description="Plot and tabulate a conv benchmark JSON.")
    parser.add_argument("json", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="figure path (default: the JSON's name, .png)")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    machine = data.get("machine_info", {})
    title = (f"causal conv, fp32: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))} "
             f"{' '.join(machine.get('gpus', []))} torch {machine.get('torch', '')}")
    rows = load(args.json)
    plot(rows, args.out or args.json.with_suffix(".png"), title)
    print(table(rows))
