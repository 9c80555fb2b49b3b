"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests run small models and matrices: one thread is fastest there, and on a busy
    2-core machine torch's OpenMP barriers otherwise cost more than a second thread gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
