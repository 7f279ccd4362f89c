"""bench.experiments.gpu_check: its --tiny dry run on CPU (the Triton interpreter) writes the JSON and figure the
GPU run writes, and the pieces that turn measurements into verdicts give the right answers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.experiments import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # a generous budget: on a loaded CI machine the default 60 s could cut cases, and this test
    # checks what a complete run writes (uncontended, the tiny run takes about 15 s)
    proc = subprocess.run([sys.executable, "-m", "bench", "gpu-check", "--tiny", "--budget-s", "400", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text())


def test_tiny_run_writes_every_section(tiny_run):
    out, result = tiny_run
    assert result["tiny"] is True and result["device"] == "cpu" and result["elapsed_s"] < result["budget_s"]
    assert result["sections"]["kernels"]["skipped"] and all(
        "Toeplitz kernel in the interpreter" in s["reason"] for s in result["sections"]["kernels"]["skipped"])
    assert set(result["sections"]) == {"kernels", "crossover", "training_step", "budget_slice"}
    assert {"kernels.png", "gpu_check.json"} <= set(result["files"]) and all((out / f).is_file() for f in result["files"])
    records = result["sections"]["kernels"]["records"]
    measured = {(r["backend"], r["mode"]) for r in records if "ms" in r}
    assert measured == {(b, m) for b in gpu_check.BACKENDS for m in gpu_check.MODES}, measured
    for row in records:
        assert "error" not in row, row
        assert row["ms"] > 0 and row["gb_per_s"] > 0 and row["hbm_pct"] is None  # no peaks known for a CPU
        assert row["rel_l2_y"] < 1e-5 and (row["mode"] == "fwd" or row["rel_l2_grad_k"] < 1e-5), row
    assert {r["suite"] for r in records} == {"paper", "scaling"}
    training = result["sections"]["training_step"]
    assert training["ours_ms_per_step"] > 0 and training["paper_ms_per_step"] > 0 and training["speedup"] > 0
    assert result["sections"]["budget_slice"]["steps"] == gpu_check.TINY.slice_max_steps
    assert set(result["targets"]) == {"triton_fft_fwd_vs_rfft", "triton_fft_hbm", "training_step_vs_paper"}
    assert all(t["met"] is None for t in result["targets"].values())  # tiny: no verdicts


def test_tiny_crossover_file_is_what_auto_reads(tiny_run):
    from kernels.fftconv import dispatch

    out, result = tiny_run
    cross = result["sections"]["crossover"]
    assert [w["L"] for w in cross["winners"]] == [L for _, L, _ in gpu_check.TINY.scaling]
    dispatch.load_crossover.cache_clear()
    assert dispatch.load_crossover(result["device_name"], out) == cross["segments"]
    dispatch.load_crossover.cache_clear()


def test_device_peaks_by_name():
    assert gpu_check.device_peaks("NVIDIA H200")["hbm_tb_s"] == 4.8
    assert gpu_check.device_peaks("NVIDIA H100 80GB HBM3")["hbm_tb_s"] == 3.35
    assert gpu_check.device_peaks("NVIDIA H100 PCIe")["hbm_tb_s"] == 2.0
    assert gpu_check.device_peaks("AMD EPYC") is None


def test_monarch_flop_count():
    # L=1024: N=2048 = 32 x 64, per sequence 8*2048*32 + 16*2048*64 flops
    assert gpu_check.monarch_flops(1, 1024, 1) == 2_621_440
    assert gpu_check.monarch_flops(64, 1024, 768) == 64 * 768 * 2_621_440


def _row(backend, mode, L, ms, **extra):
    return {"suite": "scaling", "backend": backend, "mode": mode, "B": 64, "L": L, "D": 768, "ms": ms, **extra}


def test_crossover_segments():
    rows = [_row("triton", "fwdbwd", 32, 1.0), _row("triton_fft", "fwdbwd", 32, 2.0), _row("fft", "fwdbwd", 32, 3.0),
            _row("triton", "fwdbwd", 64, 1.0), _row("triton_fft", "fwdbwd", 64, 2.0),
            _row("triton", "fwdbwd", 256, 5.0), _row("triton_fft", "fwdbwd", 256, 2.0), _row("fft", "fwdbwd", 256, 3.0),
            _row("triton", "fwdbwd", 8192, 50.0), _row("fft", "fwdbwd", 8192, 3.0),
            _row("triton", "fwd", 8192, 0.1)]  # forward only: not part of the crossover
    cross = gpu_check.crossover(rows, "NVIDIA H200", tiny=False)
    assert cross["segments"] == {"float32": [{"max_len": 64, "backend": "triton"},
                                             {"max_len": 256, "backend": "triton_fft"}]}
    assert cross["shape"] == {"B": 64, "D": 768}


def test_targets_from_measurements():
    rows = []
    for L, fft_ms, ours_ms in ((1024, 3.0, 0.9), (2048, 6.0, 1.9), (4096, 12.0, 4.5)):
        rows += [_row("fft", "fwd", L, fft_ms),
                 _row("triton_fft", "fwd", L, ours_ms, memory_bound=L == 1024, hbm_pct=60.0, flop_per_byte=10.0)]
    targets = gpu_check.evaluate_targets(rows, {"speedup": 5.5}, tiny=False)
    fwd = targets["triton_fft_fwd_vs_rfft"]
    assert fwd["speedup_by_L"] == pytest.approx({"1024": 3.0 / 0.9, "2048": 6.0 / 1.9, "4096": 12.0 / 4.5})
    assert fwd["met"] is False  # 2.67x at L=4096
    assert targets["triton_fft_hbm"] == {**targets["triton_fft_hbm"], "hbm_pct_by_L_memory_bound": {"1024": 60.0},
                                         "met": True}
    assert targets["training_step_vs_paper"]["met"] is True
    none_bound = gpu_check.evaluate_targets([{**r, "memory_bound": False} for r in rows], None, tiny=False)
    assert none_bound["triton_fft_hbm"]["met"] is None and "no measured shape is memory-bound" in \
        none_bound["triton_fft_hbm"]["note"]


@pytest.mark.parametrize("argv,match", [(["--budget-s", "600"], "within 8 minutes"),
                                        (["--tiny", "--install-crossover"], "not a --tiny one")])
def test_bad_arguments(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), *argv])
    assert match in capsys.readouterr().err
