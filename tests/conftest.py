"""Shared fixtures for the unit tests."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: training runs are then reproducible to the bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
