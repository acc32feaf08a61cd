"""train.device: resolution and its errors, every tensor of a step on the model's device (checked
without a GPU by a stub device), and the tiny pipeline with `device: cpu` set explicitly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from classprune import device as dev
from classprune.errors import ConfigError
from classprune.lottery.losses import ClassDependentLoss
from classprune.lottery.masks import full_mask
from classprune.evaluation.metrics import evaluate
from classprune.models.network import build_model
from classprune.lottery.pruning import keep_top
from classprune.lottery.train import train_masked

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "profiles" / "tiny.yaml"


# --- resolution ----------------------------------------------------------------------------------------

def test_resolve_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto") == torch.device("cpu")


def test_auto_picks_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_gpu_is_one_line_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU") as exc:
        dev.resolve_device(name)
    assert "\n" not in str(exc.value) and name in str(exc.value)


def test_cuda_index_beyond_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="only 1 CUDA GPU"):
        dev.resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "tpu", "cuda:x"])
def test_unknown_device_names(name):
    with pytest.raises(ConfigError, match="unknown device") as exc:
        dev.resolve_device(name)
    assert "\n" not in str(exc.value)


def test_config_names_the_key(tmp_path):
    from classprune.config import load_params

    from classprune.profiles import merged_params

    raw = merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")
    raw["train"]["device"] = "gpu"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"train\.device: must be auto, cpu, cuda or cuda:N, got 'gpu'") as exc:
        load_params(path)
    assert "\n" not in str(exc.value)


def test_cuda_determinism_settings(monkeypatch):
    """What setup_determinism sets for a GPU (without touching one): restored afterwards, it is process-global."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        dev.setup_determinism(torch.device("cuda"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
    dev.setup_determinism(torch.device("cpu"))  # nothing to do on the CPU
    assert torch.are_deterministic_algorithms_enabled() == before[0]


def test_state_to_cpu_detaches():
    p = torch.nn.Parameter(torch.ones(2))
    out = dev.state_to_cpu({"w": p, "n": 3})
    assert out["n"] == 3 and not out["w"].requires_grad and out["w"].device.type == "cpu"


# --- every tensor on the model's device ----------------------------------------------------------------

class StubDevice(TorchFunctionMode):
    """Pretends ``.to(<cpu device>)`` moves a tensor to an accelerator: such tensors (and everything computed
    from them, gradients of on-device parameters included) are tagged as "on the device"; ``.cpu()`` leaves
    it. An op that mixes on-device tensors with off-device ones (other than 0-dim scalars, which torch
    accepts beside CUDA tensors) is what fails on a real GPU: it is recorded in ``violations``."""

    def __init__(self):
        super().__init__()
        self.violations: list[str] = []
        self.params: list[torch.Tensor] = []

    def _on(self, t: torch.Tensor) -> bool:
        return getattr(t, "_on_stub", False) or any(p.grad is t for p in self.params)

    def _tag(self, t):
        if isinstance(t, torch.Tensor):
            t._on_stub = True
            if isinstance(t, torch.nn.Parameter):
                self.params.append(t)
        return t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        leaves = [a for a in tree_flatten((args, kwargs))[0]]
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        if name == "cpu":
            if isinstance(out, torch.Tensor) and out is not args[0]:
                out._on_stub = False
            return out
        to_device = name == "to" and any(isinstance(a, (torch.device, str)) and torch.device(a).type == "cpu"
                                         for a in leaves[1:])
        factory_on_device = "device" in kwargs and kwargs["device"] is not None
        on = [self._on(t) for t in tensors]
        if any(on) and not all(o or t.dim() == 0 for o, t in zip(on, tensors)):
            self.violations.append(name)
        if to_device or factory_on_device or any(on):
            tree_map(self._tag, out)
            if name == "to" and isinstance(args[0], torch.nn.Parameter):
                self._tag(args[0])
        return out


def _loader(n=16, size=64, batch=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.tensor([0, 1] * (n // 2))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def test_masked_step_loss_and_evaluation_stay_on_the_device():
    """A masked training step with the full loss (weighted CE + ranking, gradient clipping), then evaluation:
    the model, its mask, the loss's gamma buffer and every batch meet on the model's device."""
    model = build_model(seed=0)
    mask = keep_top({n: torch.rand(p.shape) for n, p in model.named_parameters()}, full_mask(model), 0.5)
    stub = StubDevice()
    with stub:
        device = torch.device("cpu")
        model.to(device)
        loss = ClassDependentLoss([1.0, 5.0], lam=5.0).to(device)
        train_masked(model, mask, _loader(), loss, iterations=2, lr=0.01, grad_clip=1.0)
        metrics = evaluate(model, _loader())
    assert stub.params, "the stub did not see model.to(device)"
    assert stub.violations == []
    assert metrics["n"] == 16


def test_stub_device_catches_a_batch_left_behind():
    """The check itself: a forward pass on a batch that was not moved is reported."""
    model = build_model(seed=0)
    stub = StubDevice()
    with stub:
        model.to(torch.device("cpu"))
        loss = ClassDependentLoss([1.0, 1.0]).to(torch.device("cpu"))
        x, y = next(iter(_loader()))
        loss(model(x), y).backward()
    assert stub.violations[0] == "conv2d"  # the first conv mixes the stray batch with on-device weights


def test_loss_moves_gamma_with_to():
    loss = ClassDependentLoss([1.0, 5.0], lam=1.0)
    assert "gamma" in dict(loss.named_buffers())
    assert loss.to("meta").gamma.device.type == "meta"


# --- the tiny pipeline with device: cpu ------------------------------------------------------------------

def test_tiny_pipeline_with_device_cpu(tmp_path, monkeypatch, capsys):
    """`train.device: cpu` set explicitly (the tiny profile): data, init, a round trained, evaluated and pruned;
    the stage logs its device once, and the checkpoints hold CPU tensors that load weights_only."""
    from classprune.evaluation import evaluate as evaluation
    from classprune.lottery import runner as lottery
    from classprune.data import steps
    from classprune.models.pretrain import pretrain as pretrain_step
    from classprune.config import load_params

    from classprune.profiles import merged_params

    raw = merged_params("tiny", ROOT / "params.yaml", ROOT / "profiles")
    assert raw["train"]["device"] == "cpu"
    raw["prune"]["rounds"] = raw["prune"]["rounds"][:2]
    raw["run"]["seeds"] = [0]
    raw["train"]["loader_workers"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    params = load_params("params.yaml")
    steps.prepare(params)
    steps.split(params)
    steps.cache(params)
    pretrain_step(params)
    lottery.init(params, "red", 0)
    capsys.readouterr()
    lottery.train_round(params, "red", 0, 1)
    assert capsys.readouterr().err.count("device cpu") == 1
    lottery.train_round(params, "red", 0, 2)
    result = evaluation.evaluate_chain(params, "red", 0)
    assert all(0.0 <= f <= 1.0 for f in result["test_fnr"])
    for name in ("weights.pt", "mask.pt", "rewound.pt"):
        state = torch.load(tmp_path / "models" / "red" / "seed_0" / "round_2" / name, weights_only=True)
        assert all(t.device.type == "cpu" for t in state.values())


def test_lobs_and_snip_stay_on_the_device():
    """L-OBS builds identities, index ranges and outputs on the Hessian's device; SNIP moves its batches."""
    from classprune.baselines import lobs, snip

    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    data = [(torch.randn(8, 6), torch.tensor([0, 1] * 4))]
    stub = StubDevice()
    with stub:
        net.to(torch.device("cpu"))
        hessians = lobs.layer_hessians(net, data)
        h = lobs.damped(hessians["0"], 0.01)
        h_inv = lobs.spd_inverse(h)
        w = lobs._weight_matrix(net[0], net.state_dict(), "0")
        keep = lobs._keep_matrix(net[0], {"0.weight": torch.rand(4, 6) > 0.5}, "0")
        lobs.obs_update(w, keep, h, h_inv, block_bytes=64)
        snip.snip_scores(None, None, ["0.weight"], model=net, batches=data, loss_fn=torch.nn.CrossEntropyLoss())
    assert stub.violations == []
