"""One prepared GPU check: every conv backend, our training step against the paper's, a slice of
the paper's budget, the crossover for `auto`, and the GPU targets, within a hard time budget.

    python -m bench gpu-check --out DIR [--budget-s 420] [--install-crossover]
    python -m bench gpu-check --out DIR --tiny      # CPU, Triton interpreter, tiny sizes (CI)

Writes to DIR (gpu_check.json is rewritten atomically after every section, so a run cut short
keeps what it finished):
    gpu_check.json               environment, device peaks, every measurement, the targets
    kernels.png                  ms and relative error over L, per backend (B x D = 64 x 768)
    crossover_<device>.json      the measured segments `auto` reads on CUDA (kernels/fftconv/
                                 dispatch.py); --install-crossover also writes it to results/kernels/

Sections, each stopped at its share of the budget (cases past it are listed as skipped):
    kernels        backends direct, fft, triton, triton_fft (IEEE), triton_fft:tf32x3 (opt-in),
                   conv1d; forward and forward+backward; fp32 at the paper's training shapes
                   (B=1024, L in {20, 40}, D=64) and over L = 32 .. 8192 at B x D = 64 x 768:
                   ms (CUDA: triton.testing.do_bench median), GB/s of the minimal traffic,
                   % of the device's HBM bandwidth, relative L2 error against the float64 oracle
                   (2 x L x 16 slice), and for triton_fft its arithmetic intensity against the
                   device's ridge point (memory-bound or not)
    crossover      fastest of triton / triton_fft / fft forward+backward at each L (fp32)
    training_step  ms/step of our MULTIPLY step at the paper's config (bench.benchmarks.paper_reference.
                   ours_at_paper_config) and of the paper's step structure (PaperTrainer),
                   interleaved rounds, medians; then ours with RunConfig.compile="reduce-overhead"
                   (torch.compile with CUDA graphs; skipped in --tiny, where compiling takes minutes)
    budget_slice   as many of the paper's 1M steps as fit (at most 20,000) of MULTIPLY, then the
                   eval metrics and the projected time of the full budget
    targets        Triton FFT forward >= 3x torch's rfft conv (fp32, L = 1K-4K); >= 50% of HBM
                   bandwidth where memory-bound; training step >= 5x the paper's

Device peaks are datasheet figures by device name (PEAKS), not measurements. --tiny runs the
same code on CPU in the Triton interpreter at toy sizes: its numbers say nothing about speed,
it checks that the check runs and what it writes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.harness.records import atomic_write, environment

# Datasheet peaks (NVIDIA): HBM TB/s, fp32 FMA TFLOP/s (no tensor cores: what IEEE fp32 tl.dot
# runs on), dense TF32 tensor-core TFLOP/s. Matched by substring of torch.cuda.get_device_name,
# first match wins (so "H100 PCIe" before "H100").
PEAKS = (
    ("H200", dict(hbm_tb_s=4.8, fp32_tflop_s=67.0, tf32_tflop_s=494.7)),
    ("H100 PCIe", dict(hbm_tb_s=2.0, fp32_tflop_s=51.0, tf32_tflop_s=378.0)),
    ("H100 NVL", dict(hbm_tb_s=3.9, fp32_tflop_s=60.0, tf32_tflop_s=417.5)),
    ("H100", dict(hbm_tb_s=3.35, fp32_tflop_s=67.0, tf32_tflop_s=494.7)),  # SXM ("H100 80GB HBM3")
    ("A100-SXM4-80GB", dict(hbm_tb_s=2.039, fp32_tflop_s=19.5, tf32_tflop_s=156.0)),
    ("A100", dict(hbm_tb_s=1.555, fp32_tflop_s=19.5, tf32_tflop_s=156.0)),
)
BACKENDS = ("direct", "fft", "triton", "triton_fft", "triton_fft:tf32x3", "conv1d")
CROSSOVER_BACKENDS = ("triton", "triton_fft", "fft")
MODES = ("fwd", "fwdbwd")
SHARES = {"kernels": 0.5, "training_step": 0.2, "budget_slice": 0.25}  # of the budget; the rest is slack
SLICE_MAX_STEPS = 20_000
PAPER_STEPS = 1_000_000


@dataclass(frozen=True)
class Sizes:
    paper: tuple  # (B, L, D) cases at the paper's training shapes
    scaling: tuple  # (B, L, D) cases over L
    train_batch: int
    train_rounds: int
    slice_max_steps: int
    slice_max_s: float


FULL = Sizes(paper=tuple((1024, L, 64) for L in (20, 40)),
             scaling=tuple((64, L, 768) for L in (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)),
             train_batch=1024, train_rounds=20, slice_max_steps=SLICE_MAX_STEPS, slice_max_s=120.0)
TINY = Sizes(paper=((2, 20, 4),), scaling=((2, 64, 4), (2, 256, 4)),
             train_batch=16, train_rounds=2, slice_max_steps=20, slice_max_s=5.0)
TINY_TRITON_MAX_LEN = 64  # the Toeplitz kernel in the interpreter is slow past this


def device_peaks(device_name: str) -> dict | None:
    for key, peaks in PEAKS:
        if key in device_name:
            return {"matched": key, "source": "NVIDIA datasheet", **peaks}
    return None


def monarch_flops(batch: int, seq_len: int, channels: int) -> int:
    """Real flops of the triton_fft forward: 8 N N1 + 16 N N2 per sequence (12 real matmuls)."""
    from kernels.fftconv import fft_plan

    n = fft_plan.fft_size(seq_len)
    n1, n2 = fft_plan.factor(n)
    return batch * channels * (8 * n * n1 + 16 * n * n2)


class Deadline:
    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def section_end(self, shares_done: float) -> float:
        """Elapsed seconds by which the sections up to this cumulative share must end."""
        return self.budget_s * shares_done


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(step, device: str, *, quick: bool = False, rep_ms: int = 25) -> tuple[float, str]:
    """Median ms of step (after a warm-up call), and how it was measured (quick: one timed call)."""
    step()  # compiles, allocates
    t0 = time.perf_counter()
    step()
    once = time.perf_counter() - t0
    if quick:
        return 1e3 * once, "one call"
    if device == "cuda" and once < 0.5:
        import triton.testing

        return triton.testing.do_bench(step, warmup=5, rep=rep_ms, return_mode="median"), "do_bench median"
    if once < 0.5:
        times = [once]
        for _ in range(2):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times), "median of 3 calls"
    return 1e3 * once, "one call (slow case)"


def skip_reason(backend: str, seq_len: int, channels: int, device: str, tiny: bool) -> str | None:
    from kernels.fftconv import fft_plan

    if backend.startswith("triton_fft") and seq_len > fft_plan.max_len(torch.float32):
        return f"triton_fft takes L <= {fft_plan.max_len(torch.float32)}"
    if backend == "direct":
        toeplitz_bytes = 2 * channels * seq_len * seq_len * 4  # T forward, G U^T backward
        limit = 0.4 * torch.cuda.get_device_properties(0).total_memory if device == "cuda" else 2**30
        if toeplitz_bytes > limit:
            return f"direct needs D*L*L Toeplitz matrices ({toeplitz_bytes / 2**30:.1f} GiB) at L={seq_len}"
    if tiny and backend == "triton" and seq_len > TINY_TRITON_MAX_LEN:
        return f"the Toeplitz kernel in the interpreter is slow past L={TINY_TRITON_MAX_LEN}"
    return None


def kernel_section(sizes: Sizes, device: str, peaks: dict | None, deadline: Deadline, end_s: float,
                   tiny: bool) -> dict:
    from bench.benchmarks.kernel_cases import draw, oracle_on_slice, relative_errors, run_backend, traffic_bytes

    records, skipped = [], []
    cases = [("paper", *shape) for shape in sizes.paper] + [("scaling", *shape) for shape in sizes.scaling]
    for suite, batch, seq_len, channels in cases:
        u, k, grad_y = draw(batch, seq_len, channels, device)
        oracle = oracle_on_slice(u, k, grad_y)
        for backend in BACKENDS:
            for mode in MODES:
                row = {"suite": suite, "backend": backend, "mode": mode, "B": batch, "L": seq_len, "D": channels,
                       "dtype": "float32"}
                reason = skip_reason(backend, seq_len, channels, device, tiny)
                if reason is None and deadline.elapsed() > end_s:
                    reason = "time budget"
                if reason:
                    skipped.append({**row, "reason": reason})
                    continue
                fn = run_backend(backend)
                with_grads = mode == "fwdbwd"
                uu = u.detach().requires_grad_(with_grads)
                kk = k.detach().requires_grad_(with_grads)

                def step():
                    if with_grads:
                        torch.autograd.grad(fn(uu, kk), (uu, kk), grad_y)
                    else:
                        with torch.no_grad():
                            fn(uu, kk)
                    _sync(device)

                try:
                    ms, how = time_ms(step, device, quick=tiny)
                    row.update(ms=ms, timing=how)
                    traffic = traffic_bytes(batch, seq_len, channels, u.element_size(), with_grads)
                    row["gb_per_s"] = traffic / (ms / 1e3) / 1e9
                    row["hbm_pct"] = 100 * row["gb_per_s"] / (1e3 * peaks["hbm_tb_s"]) if peaks else None
                    if backend.startswith("triton_fft") and mode == "fwd":
                        intensity = monarch_flops(batch, seq_len, channels) / traffic
                        row["flop_per_byte"] = intensity
                        if peaks:
                            tflops = peaks["tf32_tflop_s"] / 3 if backend.endswith("tf32x3") else peaks["fp32_tflop_s"]
                            row["ridge_flop_per_byte"] = tflops / peaks["hbm_tb_s"]
                            row["memory_bound"] = intensity < row["ridge_flop_per_byte"]
                    row.update(relative_errors(fn, u, k, grad_y, with_grads, oracle))
                except Exception as error:  # a failed case (out of resources, ...) is a result, not the end
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    if device == "cuda":
                        torch.cuda.empty_cache()
                records.append(row)
                print(f"kernels {suite:7s} {backend:18s} {mode:6s} L={seq_len:5d} "
                      + (f"{row['ms']:.4f} ms" if "ms" in row else row.get("error", "")), flush=True)
    return {"records": records, "skipped": skipped, "elapsed_s": deadline.elapsed()}


def crossover(kernel_records: list[dict], device_name: str, tiny: bool) -> dict:
    """Fastest forward+backward of CROSSOVER_BACKENDS at each scaling L, merged into segments."""
    times: dict[int, dict[str, float]] = {}
    for row in kernel_records:
        if row["suite"] == "scaling" and row["mode"] == "fwdbwd" and row["backend"] in CROSSOVER_BACKENDS and "ms" in row:
            times.setdefault(row["L"], {})[row["backend"]] = row["ms"]
    winners = [(L, min(t, key=t.get)) for L, t in sorted(times.items()) if t]
    segments: list[dict] = []
    for seq_len, backend in winners:
        if segments and segments[-1]["backend"] == backend:
            segments[-1]["max_len"] = seq_len
        else:
            segments.append({"max_len": seq_len, "backend": backend})
    while segments and segments[-1]["backend"] == "fft":  # auto takes fft past the last segment anyway
        segments.pop()
    shape = next(((r["B"], r["D"]) for r in kernel_records if r["suite"] == "scaling"), (None, None))
    return {"device_name": device_name, "tiny": tiny, "mode": "fwdbwd", "dtype": "float32",
            "shape": {"B": shape[0], "D": shape[1]}, "ms": {str(L): t for L, t in sorted(times.items())},
            "winners": [{"L": L, "backend": b} for L, b in winners], "segments": {"float32": segments}}


def compiled_step(cfg, rounds: int, device: str, deadline: Deadline, end_s: float, workdir: Path) -> dict:
    """ms/step of our step with RunConfig.compile set (the first two steps compile and are not timed)."""
    from bench.harness.train import Trainer

    trainer = Trainer(cfg, workdir, progress=False)
    t0 = time.perf_counter()
    try:
        for _ in range(2):
            trainer.step_once()
        _sync(device)
    except Exception as error:  # a failed compile is a result
        return {"mode": cfg.compile, "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        if deadline.elapsed() > end_s and times:
            break
        t0 = time.perf_counter()
        trainer.step_once()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"mode": cfg.compile, "compile_s": compile_s, "rounds": len(times),
            "ms_per_step": 1e3 * statistics.median(times), "config_hash": cfg.hash}


def training_section(sizes: Sizes, device: str, deadline: Deadline, end_s: float, workdir: Path,
                     compile_mode: str | None = None) -> dict:
    from kernels import select_backend

    from bench.benchmarks.paper_reference import PaperTrainer, ours_at_paper_config
    from bench.harness.train import Trainer

    cfg = ours_at_paper_config(sizes.train_batch, device, "auto")
    ours = Trainer(cfg, workdir, progress=False)
    theirs = PaperTrainer(batch_size=sizes.train_batch, device=device)
    probe = torch.zeros(1, 40, 64, device=device)
    ours_s, theirs_s = [], []
    for fn in (theirs.step, ours.step_once):  # warm-up both
        fn()
        _sync(device)
    for _ in range(sizes.train_rounds):
        if deadline.elapsed() > end_s and ours_s:
            break
        for fn, out in ((theirs.step, theirs_s), (ours.step_once, ours_s)):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    ours_ms, theirs_ms = 1e3 * statistics.median(ours_s), 1e3 * statistics.median(theirs_s)
    compiled = None
    if compile_mode is not None and deadline.elapsed() < end_s:
        compiled = compiled_step(ours_at_paper_config(sizes.train_batch, device, "auto", compile=compile_mode),
                                 sizes.train_rounds, device, deadline, end_s, workdir / "compiled")
        if "ms_per_step" in compiled:
            compiled["speedup_over_paper"] = theirs_ms / compiled["ms_per_step"]
            compiled["speedup_over_uncompiled"] = ours_ms / compiled["ms_per_step"]
    return {"batch_size": sizes.train_batch, "rounds": len(ours_s), "ours_ms_per_step": ours_ms,
            "paper_ms_per_step": theirs_ms, "speedup": theirs_ms / ours_ms, "compiled": compiled,
            "ours_conv_backend": select_backend(probe, torch.zeros(64, 40, device=device)),
            "ours_param_count": ours.param_count, "paper_param_count": sum(p.numel() for p in theirs.model.parameters()),
            "config_hash": cfg.hash, "elapsed_s": deadline.elapsed()}


def budget_slice(sizes: Sizes, device: str, deadline: Deadline, end_s: float, workdir: Path) -> dict:
    from bench.benchmarks.paper_reference import ours_at_paper_config
    from bench.harness.train import Diverged, Trainer

    cfg = ours_at_paper_config(sizes.train_batch, device, "auto", schedule={"name": "step", "gamma": 0.9,
                                                                           "every": 10_000},
                               eval_size=1024 if sizes is FULL else 64)
    trainer = Trainer(cfg, workdir, progress=False)
    limit_s = max(0.0, min(sizes.slice_max_s, end_s - deadline.elapsed()))
    train_s, diverged, chunk = 0.0, None, 100 if sizes is FULL else 5
    while trainer.state.step < sizes.slice_max_steps and train_s < limit_s and diverged is None:
        t0 = time.perf_counter()
        try:
            for _ in range(min(chunk, sizes.slice_max_steps - trainer.state.step)):
                trainer.step_once()
        except Diverged as why:
            diverged = str(why)
        _sync(device)
        train_s += time.perf_counter() - t0
    steps = trainer.state.step
    metrics = trainer.evaluate() if diverged is None else {}
    per_step = train_s / steps if steps else None
    return {"task": "multiply", "config_hash": cfg.hash, "steps": steps, "train_s": train_s,
            "steps_per_s": steps / train_s if train_s else None,
            "projected_hours_for_paper_budget": per_step * PAPER_STEPS / 3600 if per_step else None,
            "paper_budget_steps": PAPER_STEPS, "diverged": diverged,
            "eval_mse": metrics.get("mse"), "eval_rel": metrics.get("rel"), "floor": trainer.floor,
            "elapsed_s": deadline.elapsed()}


def evaluate_targets(kernel_records: list[dict], training: dict | None, tiny: bool) -> dict:
    by = {(r["backend"], r["mode"], r["L"]): r for r in kernel_records if r["suite"] == "scaling" and "ms" in r}
    speedups = {}
    for seq_len in (1024, 2048, 4096):
        fft, ours = by.get(("fft", "fwd", seq_len)), by.get(("triton_fft", "fwd", seq_len))
        if fft and ours:
            speedups[str(seq_len)] = fft["ms"] / ours["ms"]
    tf32x3 = {str(L): by[("fft", "fwd", L)]["ms"] / by[("triton_fft:tf32x3", "fwd", L)]["ms"]
              for L in (1024, 2048, 4096) if ("fft", "fwd", L) in by and ("triton_fft:tf32x3", "fwd", L) in by}
    fft_rows = [r for (b, m, _), r in sorted(by.items()) if b == "triton_fft" and m == "fwd"]
    bound = [r for r in fft_rows if r.get("memory_bound")]
    hbm = {str(r["L"]): r["hbm_pct"] for r in bound}
    classified = [r for r in fft_rows if "memory_bound" in r]
    targets = {
        "triton_fft_fwd_vs_rfft": {
            "target": ">= 3x torch's rfft conv, fp32 forward, L = 1K-4K, B x D = 64 x 768", "speedup_by_L": speedups,
            "met": (min(speedups.values()) >= 3.0) if len(speedups) == 3 else None,
            "tf32x3_speedup_by_L": tf32x3},
        "triton_fft_hbm": {
            "target": ">= 50% of HBM bandwidth where the shape is memory-bound (triton_fft forward)",
            "hbm_pct_by_L_memory_bound": hbm,
            "met": (min(hbm.values()) >= 50.0) if hbm else None,
            "note": None if hbm else ("no measured shape is memory-bound: the IEEE Monarch FFT's flops per byte "
                                      "(flop_per_byte) exceed the fp32 ridge point at every L" if classified
                                      else "device peaks unknown: not classified"),
        },
        "training_step_vs_paper": {
            "target": ">= 5x the paper's step structure (ms/step, paper config)",
            "speedup": training.get("speedup") if training else None,
            "met": (training["speedup"] >= 5.0) if training and "speedup" in training else None,
        },
    }
    if tiny:
        for target in targets.values():
            target["met"] = None
            target["note"] = "tiny mode: CPU and the Triton interpreter, not a speed measurement"
    return targets


def plot(kernel_records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, backend in enumerate(BACKENDS):
        for ax, mode, key in ((axes[0], "fwd", "ms"), (axes[1], "fwdbwd", "ms"), (axes[2], "fwd", "rel_l2_y")):
            rows = sorted((r for r in kernel_records if r["suite"] == "scaling" and r["backend"] == backend
                           and r["mode"] == mode and r.get(key)), key=lambda r: r["L"])
            if rows:
                ax.loglog([r["L"] for r in rows], [r[key] for r in rows], "-o", color=f"C{i}", ms=3, label=backend)
    for ax, label in zip(axes, ("forward ms", "forward + backward ms", "forward rel. L2 error vs float64")):
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), binary=True)
    plt.close(fig)


def run_check(out: Path, *, tiny: bool, budget_s: float, install_crossover: bool) -> dict:
    from kernels.fftconv.dispatch import CROSSOVER_DIR, device_slug, load_crossover

    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.experiments.gpu_check needs a CUDA GPU (use --tiny for the CPU dry run)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device_name = torch.cuda.get_device_name() if device == "cuda" else environment("cpu")["device_name"]
    peaks = device_peaks(device_name) if device == "cuda" else None
    sizes = TINY if tiny else FULL
    deadline = Deadline(budget_s)
    out.mkdir(parents=True, exist_ok=True)
    result = {"schema": 1, "tiny": tiny, "device": device, "device_name": device_name, "budget_s": budget_s,
              "command": "python -m bench gpu-check " + " ".join(sys.argv[1:]), "environment": environment(device),
              "peaks": peaks, "sections": {}, "targets": None, "files": []}
    json_path = out / "gpu_check.json"

    def save():
        result["elapsed_s"] = deadline.elapsed()
        atomic_write(json_path, lambda f: json.dump(result, f, indent=1, default=str))

    sections = result["sections"]
    sections["kernels"] = kernel_section(sizes, device, peaks, deadline, deadline.section_end(SHARES["kernels"]), tiny)
    save()
    cross = crossover(sections["kernels"]["records"], device_name, tiny)
    sections["crossover"] = cross
    cross_path = out / f"crossover_{device_slug(device_name)}.json"
    atomic_write(cross_path, lambda f: json.dump(cross, f, indent=1))
    result["files"].append(cross_path.name)
    if install_crossover:
        installed = CROSSOVER_DIR / cross_path.name
        atomic_write(installed, lambda f: json.dump(cross, f, indent=1))
        cross["installed_as"] = str(installed)
        load_crossover.cache_clear()  # the training step's `auto` then follows what was just measured
    save()
    with tempfile.TemporaryDirectory() as workdir:
        share = SHARES["kernels"] + SHARES["training_step"]
        try:
            sections["training_step"] = training_section(sizes, device, deadline, deadline.section_end(share),
                                                         Path(workdir), None if tiny else "reduce-overhead")
        except Exception as error:
            sections["training_step"] = {"error": f"{type(error).__name__}: {error}"}
        save()
        share += SHARES["budget_slice"]
        try:
            sections["budget_slice"] = budget_slice(sizes, device, deadline, deadline.section_end(share),
                                                    Path(workdir))
        except Exception as error:
            sections["budget_slice"] = {"error": f"{type(error).__name__}: {error}"}
    result["targets"] = evaluate_targets(sections["kernels"]["records"], sections.get("training_step"), tiny)
    plot(sections["kernels"]["records"], out / "kernels.png",
         f"causal conv, fp32, B x D = {sizes.scaling[0][0]} x {sizes.scaling[0][2]}, {device_name}")
    result["files"] += ["kernels.png", json_path.name]
    save()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, kernels.png, crossover_*.json")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run in the Triton interpreter at toy sizes")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="hard budget for all sections (default 420 s; tiny: 60 s); startup is on top")
    parser.add_argument("--install-crossover", action="store_true",
                        help="also write the measured crossover to results/kernels/, where `auto` reads it")
    args = parser.parse_args(argv)
    if args.out.suffix or args.out.is_file():
        parser.error(f"--out is a folder, got {args.out}")
    if args.tiny and args.install_crossover:
        parser.error("--install-crossover takes a GPU measurement, not a --tiny one")
    budget = args.budget_s if args.budget_s is not None else (60.0 if args.tiny else 420.0)
    if not (0 < budget <= 450):
        parser.error(f"--budget-s must be in (0, 450] (the check must end within 8 minutes), got {budget}")
    if args.tiny:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the Triton modules are first imported
    result = run_check(args.out, tiny=args.tiny, budget_s=budget, install_crossover=args.install_crossover)
    print(json.dumps(result["targets"], indent=1, default=str))
    print(f"wrote {', '.join(result['files'])} to {args.out} in {result['elapsed_s']:.0f} s")
