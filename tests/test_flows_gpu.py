"""The flow on a GPU machine: GPU stages hold a device slot, so they never share the GPU beyond
``gpu_slots``; CPU stages never wait for one."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from flows.gpu import GPU_STAGES, device_slot, stage_gpu


def _overlap(gpu, slots, tmp_path, n=3):
    """Max number of holders inside the slot at once, over n threads."""
    inside, peak, lock = [0], [0], threading.Lock()

    def work():
        with device_slot(gpu, tmp_path / "locks", slots, poll_s=0.01):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.15)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return peak[0]


def test_one_gpu_stage_per_device_by_default(tmp_path):
    assert _overlap("cuda:0", 1, tmp_path) == 1


def test_gpu_slots_allow_more(tmp_path):
    assert _overlap("cuda:0", 2, tmp_path, n=4) == 2


def test_cpu_stages_do_not_wait(tmp_path):
    assert _overlap(None, 1, tmp_path) == 3
    assert not (tmp_path / "locks").exists()


def test_slot_is_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with device_slot("cuda:0", tmp_path, 1):
            raise RuntimeError("stage failed")
    with device_slot("cuda:0", tmp_path, 1):  # would wait forever if the slot were still held
        pass


def test_stage_gpu_follows_train_device(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("train: {device: cpu}\n")
    assert stage_gpu(str(tmp_path)) is None
    (tmp_path / "params.yaml").write_text("train: {device: auto}\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stage_gpu(str(tmp_path)) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert stage_gpu(str(tmp_path)) == "cuda:0"
    (tmp_path / "params.yaml").write_text("train: {device: 'cuda:1'}\n")
    assert stage_gpu(str(tmp_path)) == "cuda:1"
    assert {"lt", "evaluate", "baseline"} <= set(GPU_STAGES)
