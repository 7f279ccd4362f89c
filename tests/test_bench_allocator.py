"""bench/harness/allocator.py: freed memory stays in the process (checked in a fresh interpreter,
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
from bench.harness import allocator
from bench.harness.config import make_run_config
from bench.harness.train import Trainer
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
    script = "from bench.harness import allocator; print(allocator.keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PB_KEEP_FREED_MEMORY": "0"})
    assert out.stdout.strip() == "False"


GIVE_BACK = """
import torch
from bench.harness import allocator
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
kept = allocator.keep_freed_memory()
x = torch.ones(64 * 2**20)  # 256 MiB
del x
held = rss_mib()
gave = allocator.give_back_freed_memory()
print(kept, gave, held - rss_mib(), allocator.applied(), allocator.give_back_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_give_back_freed_memory_returns_a_freed_block_to_the_kernel():
    out = subprocess.run([sys.executable, "-c", GIVE_BACK], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    kept, gave, released, applied, again = out
    assert (kept, gave, applied, again) == ("True", "True", "False", "False")  # a second call has nothing to undo
    assert int(released) > 200  # of the freed 256 MiB the kept heap held on to
