"""Channel lottery tickets: a conv output channel is pruned as one unit, rewound like any ticket, removed at export.

The unit is what Torch-Pruning's DependencyGraph couples to a conv output channel: its filter, its bias and
the slice of every layer that reads it (through ReLU, pooling and flatten, and, in residual or depthwise
networks, the layers tied to it). A channel mask is an ordinary weight mask (the artifact contract's
full-shape ``mask.pt``) whose pruned entries are whole units, so training, rewinding and evaluation stay
those of the weight tickets, and the masked network computes what the compact one computes: a pruned
channel's filter and bias are zero, and every reader of it reads it with zero weights.

Which channels go is :mod:`classprune.lottery.channel_criteria`'s.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .masks import Mask

ALL_CONV = "conv"  # prune.channel.layers: every Conv2d of the network


@dataclass(frozen=True)
class Slice:
    """Where channels of one unit sit in one parameter: positions ``index`` along ``dim`` belong to root
    channels ``channel`` (equal for a conv reading a conv; a flatten can map one channel to many)."""
    param: str
    dim: int
    index: torch.Tensor
    channel: torch.Tensor


@dataclass(frozen=True)
class Unit:
    """The channels of one coupled group, named by its first conv layer (the root), and every parameter slice
    tied to them; ``stats`` are the BN running statistics that follow the channels but are not masked."""
    layer: str
    size: int
    slices: tuple[Slice, ...]
    stats: tuple[Slice, ...] = ()


def example_input(model: nn.Module, image_size: int) -> torch.Tensor:
    """One image of zeros in the model's dtype and on its device: what the graph is traced with."""
    p = next(model.parameters())
    return torch.zeros(1, 3, image_size, image_size, dtype=p.dtype, device=p.device)


def dependency_graph(model: nn.Module, image_size: int):
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model, image_size))
    except Exception as exc:  # noqa: BLE001 - any tracing failure is "this network cannot be traced"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Torch-Pruning's dependency graph cannot trace {type(model).__name__} "
                          f"(channel tickets): {first}") from None
    finally:
        model.train(was_training)


def conv_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """``prune.channel.layers`` as module names: ``conv`` is every Conv2d; a name that is not one is an error."""
    convs = conv_layers(model)
    if layers == ALL_CONV:
        return convs
    if isinstance(layers, str) or not layers:
        raise ConfigError(f"prune.channel.layers must be {ALL_CONV!r} or a non-empty list of conv layers; "
                          f"conv layers: {', '.join(convs)}")
    bad = [n for n in layers if n not in convs]
    if bad:
        raise ConfigError(f"prune.channel.layers names {bad[0]!r}, which is not a Conv2d of the network; "
                          f"conv layers: {', '.join(convs)}")
    return list(layers)


def _slices(dep, idxs, root_idxs, names: Mapping[nn.Module, str]) -> tuple[list[Slice], list[Slice]]:
    """(parameter slices, running-statistics slices) of one dependency of a group; layers without parameters
    (ReLU, pooling, additions) give none."""
    import torch_pruning as tp

    layer, fn = dep.layer, dep.pruning_fn
    if not isinstance(layer, nn.Module) or not any(True for _ in layer.parameters(recurse=False)):
        return [], []
    index, channel = torch.tensor(list(idxs), dtype=torch.long), torch.tensor(list(root_idxs), dtype=torch.long)
    name = names[layer]

    def along(dim: int, *attrs: str) -> list[Slice]:
        return [Slice(f"{name}.{a}", dim, index, channel) for a in attrs if getattr(layer, a, None) is not None]

    if isinstance(layer, nn.BatchNorm2d):  # a pruned channel takes its BN entries with it
        return along(0, "weight", "bias"), along(0, "running_mean", "running_var")
    if _depthwise(layer) and fn in (tp.prune_depthwise_conv_out_channels, tp.prune_depthwise_conv_in_channels):
        return along(0, "weight", "bias"), []  # channel c is filter c: its input and output at once
    grouped = isinstance(layer, nn.Conv2d) and layer.groups != 1
    if fn in (tp.prune_conv_out_channels, tp.prune_linear_out_channels) and not grouped:
        return along(0, "weight", "bias"), []
    if fn in (tp.prune_conv_in_channels, tp.prune_linear_in_channels) and not grouped:
        return along(1, "weight"), []
    raise ConfigError(f"channel tickets cannot yet mask {name} ({type(layer).__name__}, "
                      f"{getattr(fn, '__name__', fn)}) tied to a pruned channel; leave its root layer out of "
                      "prune.channel.layers")


def _depthwise(layer: nn.Module) -> bool:
    """A conv whose every filter reads only its own channel (MobileNetV2's): its input and output are one."""
    return isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels == layer.out_channels > 1


def _root_fn(conv: nn.Conv2d):
    import torch_pruning as tp

    return tp.prune_depthwise_conv_out_channels if _depthwise(conv) else tp.prune_conv_out_channels


def coupled_group(graph, conv: nn.Conv2d, idxs: Sequence[int]):
    """Torch-Pruning's group of ``conv``'s output channels ``idxs``: every layer tied to them."""
    return graph.get_pruning_group(conv, _root_fn(conv), idxs=list(idxs))


def units(model: nn.Module, layers: str | Sequence[str], image_size: int) -> list[Unit]:
    """One unit per coupled group of the conv layers in ``layers``: a residual addition (ResNet, MobileNetV2)
    or a depthwise conv ties several convs' channels into one group, which is one unit named by its first
    conv (the others are not units of their own: pruning one prunes all)."""
    names = resolve_layers(model, layers)
    graph = dependency_graph(model, image_size)
    modules, module_names = dict(model.named_modules()), {m: n for n, m in model.named_modules()}
    out, covered = [], set()
    for name in names:
        if name in covered:
            continue
        conv = modules[name]
        group = coupled_group(graph, conv, range(conv.out_channels))
        slices, stats = [], []
        for item in group:
            p, s = _slices(item.dep, item.idxs, item.root_idxs, module_names)
            slices += p
            stats += s
            if isinstance(item.dep.layer, nn.Conv2d) and any(x.param.endswith(".weight") and x.dim == 0 for x in p):
                covered.add(module_names[item.dep.layer])  # its output channels are this unit's
        out.append(Unit(name, conv.out_channels, tuple(slices), tuple(stats)))
    return out


def full_channel_mask(model: nn.Module, unit_list: Sequence[Unit]) -> Mask:
    """All-ones mask over every parameter a unit touches: round 0 of a channel chain."""
    params = dict(model.named_parameters())
    return {s.param: torch.ones_like(params[s.param], dtype=torch.bool) for u in unit_list for s in u.slices}


def alive(mask: Mapping[str, torch.Tensor], unit_list: Sequence[Unit]) -> dict[str, torch.Tensor]:
    """{layer: bool per channel}: a channel lives while any entry of its filter does."""
    return {u.layer: mask[f"{u.layer}.weight"].flatten(1).any(1) for u in unit_list}


def channel_mask(keep: Mapping[str, torch.Tensor], unit_list: Sequence[Unit], like: Mask) -> Mask:
    """The weight mask of the kept channels: ``like`` (the previous mask) with every slice of a dropped
    channel cleared, so masks only ever shrink."""
    out = {n: m.clone() for n, m in like.items()}
    for u in unit_list:
        dropped = ~keep[u.layer]
        for s in u.slices:
            where = s.index[dropped[s.channel]]
            out[s.param].index_fill_(s.dim, where, False)
    return out


def compact(model: nn.Module, mask: Mapping[str, torch.Tensor], unit_list: Sequence[Unit],
            image_size: int) -> nn.Module:
    """A copy of ``model`` with the pruned channels physically removed by Torch-Pruning (not hand slicing):
    its logits equal the masked network's."""
    small = copy.deepcopy(model)
    graph = dependency_graph(small, image_size)
    modules = dict(small.named_modules())
    for layer, live in alive(mask, unit_list).items():
        dead = (~live).nonzero().flatten().tolist()
        if dead:
            coupled_group(graph, modules[layer], dead).prune()
    return small


def live_index(mask: Mapping[str, torch.Tensor], unit_list: Sequence[Unit]) -> dict[str, dict[int, torch.Tensor]]:
    """{param: {dim: positions of the live channels along dim}}: where the compact network's tensors sit in
    the full-shape ones."""
    live = alive(mask, unit_list)
    out: dict[str, dict[int, torch.Tensor]] = {}
    for u in unit_list:
        for s in u.slices + u.stats:
            out.setdefault(s.param, {})[s.dim] = s.index[live[u.layer][s.channel]]
    return out


def _grid(index: Mapping[int, torch.Tensor], shape: torch.Size) -> tuple[torch.Tensor, ...]:
    """Broadcasting indices that pick ``index`` along its dims and everything along the others."""
    out = []
    for d, n in enumerate(shape):
        view = [1] * len(shape)
        view[d] = -1
        out.append(index.get(d, torch.arange(n)).view(view))
    return tuple(out)


def expand(small: Mapping[str, torch.Tensor], index: Mapping[str, Mapping[int, torch.Tensor]],
           like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A compact network's state in full shape (``like``'s), zero where channels were removed: the artifact
    contract's weights.pt of a channel ticket trained physically small."""
    out = {}
    for name, full in like.items():
        t = small[name].detach().cpu()
        if name not in index:
            if t.shape != full.shape:
                raise ValueError(f"{name}: compact shape {tuple(t.shape)} but no channel index for full {tuple(full.shape)}")
            out[name] = t.clone()
            continue
        grown = torch.zeros_like(full)
        grown[_grid(index[name], full.shape)] = t
        out[name] = grown
    return out


def macs_and_params(model: nn.Module, image_size: int) -> tuple[int, int]:
    """Multiply-accumulates of one image and parameter count, by Torch-Pruning's counter."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        macs, n = tp.utils.count_ops_and_params(model, example_input(model, image_size))
    finally:
        model.train(was_training)
    return int(macs), int(n)
