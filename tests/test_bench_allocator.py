"""bench/allocator.py: freed memory stays in the process (checked in a fresh interpreter,
since the setting is process-wide and one-way)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Page faults per training step (BaseConv on MULTIPLY, batch 1024, the paper's: activations of 10-42 MB).
# With mmap'd allocations every large activation is mapped afresh and page-faults on first
# touch; kept in the heap, the next step reuses the last one's memory.
PROBE = """
import resource, sys, tempfile
import torch
from bench import allocator
from bench.config import make_run_config
from bench.train import Trainer
torch.set_num_threads(1)
cfg = make_run_config(task={"name": "multiply"}, model={"name": "baseconv", "params": {"width": 64, "depth": 2}},
                      batch_size=1024, eval_size=16, steps=100)
trainer = Trainer(cfg, tempfile.mkdtemp(), progress=False)  # applies keep_freed_memory unless turned off
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    trainer.step_once()
before = faults()
for _ in range(3):
    trainer.step_once()
print((faults() - before) // 3, allocator.applied())
"""


def probe(**env) -> tuple[int, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, **env}).stdout.split()
    return int(out[0]), out[1] == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_freed_memory_is_reused_without_page_faults():
    faults_off, applied_off = probe(PB_KEEP_FREED_MEMORY="0")
    faults_on, applied_on = probe()
    assert not applied_off and applied_on
    assert faults_off > 10_000
    assert faults_on < 0.2 * faults_off


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_environment_variable_turns_it_off():
    script = "from bench import allocator; print(allocator.keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PB_KEEP_FREED_MEMORY": "0"})
    assert out.stdout.strip() == "False"
