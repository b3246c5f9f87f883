"""Fixtures shared by the model tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP's spinning threads make each op ~20x slower. Use it in a module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
