"""Shared test settings: one torch thread for every test.

Tiny models on a 2-core CPU run many times faster on one thread than on two (no OpenMP waiting), and the
bit-exact checks (resume, determinism, same image whatever the batch) then compare like with like.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
