"""Test-wide settings.

Torch runs on one thread during the tests: the networks and batches here are small, where
intra-op threads cost more than they bring on a 2-core machine (and oversubscribe it when
other processes run), and results do not depend on the thread count.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
