"""Shared fixtures for the unit tests."""
import pytest
import torch


def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: training runs are then reproducible to the bit."""
    yield from _one_torch_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module (its module-scoped fixtures included)."""
    yield from _one_torch_thread()
