"""MobileNet (Howard et al.): a compact architecture trained with the class-dependent loss, one point."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import Params


def build_mobilenet(arch: str = "mobilenet_v3_small", seed: int = 0, pretrained: str = "none") -> nn.Module:
    """torchvision MobileNet with a 2-way head; ImageNet features when the AlexNet gets them too."""
    import torchvision.models as tvm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(tvm, arch)(weights=None, num_classes=2)
    if pretrained == "imagenet":
        state = _imagenet_mobilenet(arch)
        head = [k for k, v in model.state_dict().items() if v.shape != state.get(k, v).shape]
        model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    return model


def _imagenet_mobilenet(arch: str) -> dict[str, torch.Tensor]:
    from torch.hub import get_dir, load_state_dict_from_url
    from torchvision.models import get_model_weights

    from ..errors import CheckpointError

    url = get_model_weights(arch).IMAGENET1K_V1.url
    ckpt_dir = f"{get_dir()}/checkpoints"
    try:
        return load_state_dict_from_url(url, model_dir=ckpt_dir, map_location="cpu", progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "weights not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"ImageNet weights for {arch} not available: put {url.rsplit('/', 1)[-1]} into "
                              f"{ckpt_dir} (or set TORCH_HOME), or use model.pretrained: none ({reason})") from None


def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device) -> None:
    """Recompute every BatchNorm's running mean/var over the training split (un-augmented), as a plain average.

    With torchvision's momentum 0.01, one round's few hundred steps leave the running statistics near their
    initial values, so an evaluated MobileNet would normalise with statistics it never saw (train loss
    near 0, test AUC near chance).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    model.train(was_training)


def mobilenet(params: Params, seed: int, device: torch.device) -> list[dict]:
    """MobileNet trained with the class-dependent loss of ``baselines.mobilenet`` (gamma, lam) for
    one LT round's iterations; one point at its parameter count relative to the pruned network's (model.arch)."""
    from ..data.loader import class_counts
    from ..evaluation.evaluate import evaluate_model
    from ..lottery.losses import ClassDependentLoss, resolve_gamma
    from ..lottery.runner import round_seed, train_loader
    from ..lottery.masks import full_mask
    from ..paths import CACHE
    from ..models.network import count_parameters, dense_parameters
    from ..lottery import trainlog
    from ..lottery.train import sgd, train_masked

    cfg, t = params.baselines.mobilenet, params.train
    model = build_mobilenet(cfg.arch, seed, params.model.pretrained).to(device)
    mask = full_mask(model, params.prune.include_biases)
    gamma = resolve_gamma(cfg.gamma, class_counts(CACHE, "train"))
    loss = ClassDependentLoss(gamma, cfg.lam, t.margin).to(device)
    torch.manual_seed(round_seed(seed, 1))
    with contextlib.nullcontext() if (log := trainlog.level(1)) is None else log:
        losses = train_masked(model, mask, train_loader(params, seed=round_seed(seed, 1), device=device), loss,
                              t.iterations, **sgd(t), desc=cfg.arch, log=log)
    recalibrate_batchnorm(model, train_loader(params, train=False, device=device), device)
    result = evaluate_model(params, model, mask)
    n_params, dense = count_parameters(model), dense_parameters(params.model.arch, params.model.head)
    return [{"round": 1, **result, "remaining": n_params / dense, "remaining_all": n_params / dense,
             "parameters": n_params,
             "arch": cfg.arch, "final_loss": losses[-1]}]


