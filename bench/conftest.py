"""pytest configuration for the benchmark modules that `pytest bench/` collects.

    pytest bench --profile smoke|ci|paper --benchmark-json results/benchmarks/bench-ci.json

Profiles size every benchmark: `smoke` (seconds, checks the benchmarks run), `ci` (the
default, sized for a 2-core CPU), `paper` (the paper's shapes and long runs). TF32 is
off for the whole session, and the benchmark JSON's machine_info records torch,
triton, CUDA and GPU names.
"""
from __future__ import annotations

import importlib.metadata
import os

import pytest
import torch

PROFILES = ("smoke", "ci", "paper")


def pytest_addoption(parser):
    parser.addoption("--profile", choices=PROFILES, default=os.environ.get("PROFILE", "ci"),
                     help="benchmark sizes: smoke (seconds), ci (2-core CPU, default), paper (full size)")
    parser.addoption("--threads", type=int, default=None,
                     help="torch CPU threads for the session (default: torch's own choice); 1 gives steadier "
                          "timings on a machine shared with other work")


def pytest_configure(config):
    from bench.harness.train import set_ieee_precision

    set_ieee_precision()
    threads = config.getoption("--threads")
    if threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def profile(request) -> str:
    return request.config.getoption("--profile")


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def one_cpu_thread(device):
    """One torch thread on CPU, whatever --threads says: the timing (kernels) or the trajectory
    (time to precision: L-BFGS amplifies a change of summation order) is the one recorded."""
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_benchmark_update_machine_info(config, machine_info):
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = None
    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton_version
    machine_info["cuda"] = torch.version.cuda
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["gpus"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                            if torch.cuda.is_available() else [])
    machine_info["profile"] = config.getoption("--profile")
    # other work on the machine skews CPU timings: record how busy it was
    machine_info["load_avg"] = os.getloadavg() if hasattr(os, "getloadavg") else None
