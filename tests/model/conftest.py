"""Shared set-up of the world-model tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # these models are tiny: intra-op threads gain nothing, and on a busy 2-core
    # machine two spinning threads make a training step ~10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
