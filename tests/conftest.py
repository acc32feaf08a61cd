import os

import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# make test runs two test files at once (pytest-xdist): then one torch thread each, so that they fit 2 cores,
# in this process and in the stages its tests start (CLASSPRUNE_THREADS wins over train.threads). Two threads
# beside a busy worker oversubscribe the cores, and torch's OpenMP threads then wait on each other: the tiny
# L-OBS stage took 392 s with 2 threads beside two busy processes, 72 s with 1 (39 s with 2 on idle cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["CLASSPRUNE_THREADS"] = "1"
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
