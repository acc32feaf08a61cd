import os

import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# make test runs two test files at once (pytest-xdist): then one torch thread each, so that they fit 2 cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def tiny_loader():
    """A small, fixed, imbalanced batch stream at AlexNet's minimum input size."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 64, 64, generator=g)
    y = torch.tensor([1] * 6 + [0] * 18)
    x[y == 1, :, 30:34, :] -= 2.0  # a dark stripe the net can learn
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=12, shuffle=True, generator=torch.Generator().manual_seed(1))
