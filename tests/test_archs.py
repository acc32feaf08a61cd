"""The network registry (model.arch): each architecture's tiny weight chain runs end to end on the CPU with
its masks honest and its BatchNorm done right, and a bad arch is one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from classprune.errors import ConfigError
from classprune.models import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _project import ROOT, build_tiny_cache  # noqa: E402

ROUNDS = 3


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return build_tiny_cache(tmp_path_factory.mktemp("archs") / "data_src", n_positive=12, n_negative=38)


@pytest.fixture
def in_project(tiny_cache, tmp_path, monkeypatch):
    """tmp_path as a project whose data/cache is the tiny cache, and the working directory (the stages' paths)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cache").symlink_to(tiny_cache)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(arch: str):
    from classprune.config import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(arch=arch, pretrained="none")
    raw["train"].update(iterations=12, warmup=1, batch_size=8, device="cpu", loader_workers=0)
    raw["prune"].update(rounds=[{"k": k, "prev": k - 1} for k in range(1, ROUNDS + 1)],
                        ignore=[registry.get(arch).output_layer])
    raw["run"].update(seeds=[0], scenarios=["black"], channel_scenarios=[])
    raw["baselines"]["methods"], raw["evaluate"]["batch_size"] = [], 16
    return Params.model_validate(raw)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "alexnet"])
def test_each_architectures_tiny_chain_prunes_rewinds_and_keeps_batchnorm_whole(arch, in_project, tmp_path):
    from classprune import io
    from classprune.evaluation.evaluate import evaluate_chain
    from classprune.lottery import runner
    from classprune.lottery.masks import load_mask

    params = _params(arch)
    runner.run_chain(params, "black", 0)
    result = evaluate_chain(params, "black", 0)
    chain = tmp_path / "models" / "black" / "seed_0"
    w0 = io.load_torch(chain / "round_0" / "weights.pt")
    model = runner.build(params, 0, w0)
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert bool(bn) == registry.get(arch).batch_norm
    bn_state = [k for k in w0 if k.rpartition(".")[0] in bn]   # weight, bias, running_mean/var, num_batches
    prunable = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for k in range(1, ROUNDS + 1):
        d = chain / f"round_{k}"
        mask, weights, rewound = load_mask(d / "mask.pt"), io.load_torch(d / "weights.pt"), io.load_torch(d / "rewound.pt")
        assert set(mask) == prunable - {registry.get(arch).output_layer}, "only conv and linear weights are pruned"
        kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        assert abs(kept - 0.5 ** (k - 1)) < 0.01, (k, kept)
        for n, m in mask.items():
            assert not weights[n][~m].any() and not rewound[n][~m].any(), f"pruned {n} not 0 in round {k}"
            assert torch.equal(rewound[n][m], w0[n][m]), "survivors rewind to W0"
        # rewinding restores W0's BN parameters and running statistics; training moved them
        assert all(torch.equal(rewound[key], w0[key]) for key in bn_state), f"BN not rewound to W0 in round {k}"
        if bn_state:
            assert any(not torch.equal(weights[key], w0[key]) for key in bn_state if "running" in key)
    assert len(result["test_auc"]) == ROUNDS and all(0 <= a <= 1 for a in result["test_auc"])
    rounds = json.loads((tmp_path / "reports" / "rounds" / "seed_0" / "black.json").read_text())["rounds"]
    width = registry.get(arch).width   # the diagnosis watches the small head on every network
    assert all(r["diagnosis"]["units"] == {"features": width, "head1": 8, "head2": 8} for r in rounds), rounds[0]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_each_architectures_channel_ticket_drops_coupled_groups_whole_and_its_compact_network_is_the_masked_one(
        arch, in_project, tmp_path):
    """Channel granularity on a residual (ResNet-18) and a depthwise (MobileNetV2) network: a unit is a coupled
    group (the convs a residual addition or a depthwise conv ties together), a pruned channel takes its BN
    entries with it, and the physically smaller network computes the masked one's logits."""
    from classprune import io
    from classprune.evaluation.evaluate import evaluate_channel_chain
    from classprune.lottery import channels, runner
    from classprune.lottery.masks import load_mask

    params = _params(arch)
    runner.run_chain(params, "black", 0, "channel")
    result = evaluate_channel_chain(params, "black", 0)
    chain = tmp_path / "models" / "black-channel" / "seed_0"
    last = chain / f"round_{ROUNDS}"
    mask, weights = load_mask(last / "mask.pt"), io.load_torch(last / "weights.pt")
    model = runner.build(params, 0, weights).eval()
    units = runner.channel_units(params, model)
    convs = channels.conv_layers(model)
    assert len(units) < len(convs), "coupled convs form one unit, not one each"
    owned = [s.param for u in units for s in u.slices if s.dim == 0 and s.param.removesuffix(".weight") in convs]
    assert sorted(owned) == sorted(f"{c}.weight" for c in convs), "every conv's output channels are in one unit"
    live = channels.alive(mask, units)
    assert all(0 < int(v.sum()) < v.numel() for v in live.values()), "every group lost channels, none all"
    for u in units:
        for s in u.slices:   # a group is pruned whole: every member's slice of a dead channel is zero
            dead = s.index[~live[u.layer][s.channel]]
            assert not weights[s.param].index_select(s.dim, dead).any(), (u.layer, s.param)
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    bn = {s.param for u in units for s in u.slices if s.param.rpartition(".")[0] in norms}
    assert bn == {f"{n}.{p}" for n in norms for p in ("weight", "bias")}, "BN weights and biases follow their channel"
    probe = torch.randn(4, 3, 32, 32)
    small = channels.compact(model, mask, units, 32).eval()
    with torch.no_grad():
        assert torch.allclose(small(probe), model(probe), atol=1e-5)
    rounds = json.loads((tmp_path / "reports" / "rounds" / "seed_0" / "black-channel.json").read_text())["rounds"]
    macs = [r["macs"] for r in rounds]
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0], "the compact network shrinks round by round"
    assert len(result["test_auc"]) == ROUNDS


def test_evaluation_uses_the_running_statistics():
    """In eval mode a BN network scores an image the same alone or in any batch (running statistics, not the
    batch's), which is what evaluation and a shipped model rely on."""
    from classprune.models.network import build_model

    model = build_model("none", seed=0, arch="resnet18").eval()
    x = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        together, alone = model(x), torch.cat([model(x[i:i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_the_alexnet_entry_is_the_papers_network():
    from classprune.constants import NUM_PARAMETERS
    from classprune.models.network import build_model, count_parameters

    model = build_model("none", seed=0)
    assert count_parameters(model) == NUM_PARAMETERS
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [8, 8, 2]


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_the_registrys_prunable_size_is_the_built_networks(arch):
    """Params validation counts a network's prunable weights from its entry (no torch); that count must be what
    the masks cover, for any head."""
    from classprune.lottery.masks import prunable_names

    for hidden in ((8, 8), (16, 4)):
        with torch.device("meta"):
            model = registry.build(arch, hidden)
        names, params = prunable_names(model), dict(model.named_parameters())
        assert registry.prunable_size(arch, hidden) == (sum(params[n].numel() for n in names), len(names))


def test_rounds_that_would_empty_a_network_are_refused_per_network(tmp_path):
    """6 rounds at rate 0.9 keep 1e-5 of the weights: 24.7 of AlexNet's 2.47 M (16 prunable tensors) and 112 of
    ResNet-18's 11.2 M (26), but 22.0 of MobileNetV2's 2.2 M, fewer than its 58 tensors: refused in one line."""
    from classprune.config import load_params

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prune"]["rate"], params["prune"]["rounds"] = 0.9, [{"k": k, "prev": k - 1} for k in range(1, 7)]
    for arch in ("alexnet", "resnet18", "mobilenet_v2"):
        params["model"]["arch"] = arch
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        if arch != "mobilenet_v2":
            load_params(tmp_path / "params.yaml")
            continue
        with pytest.raises(ConfigError) as err:
            load_params(tmp_path / "params.yaml")
        assert "\n" not in str(err.value) and "prune" in str(err.value) and "58 prunable tensors" in str(err.value)


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_the_head_widths_are_params_on_every_network(arch):
    from classprune.models.network import build_model

    model = build_model("none", seed=0, arch=arch, head=(4, 6))
    head = model.get_submodule(registry.get(arch).head)
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [4, 6, 2]
    assert head[1].in_features == registry.get(arch).width
    assert registry.get(arch).output_layer in dict(model.named_parameters())


def test_a_bad_head_width_is_one_line_naming_the_key(tmp_path):
    from classprune.config import load_params

    with pytest.raises(ConfigError) as err:
        load_params(_params_file(tmp_path, head=[0, 8]))
    assert "model.head" in str(err.value) and "\n" not in str(err.value), str(err.value)


def _params_file(tmp_path: Path, **model) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("model", "needles"), [({"arch": "vgg16"}, ("model.arch", "vgg16"))])
def test_an_unknown_arch_is_one_line_naming_the_key(tmp_path, model, needles):
    from classprune.config import load_params

    with pytest.raises(ConfigError) as err:
        load_params(_params_file(tmp_path, **model))
    assert all(n in str(err.value) for n in needles) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_the_source_task_pretrains_each_architectures_backbone_and_w0_takes_it(arch):
    """W0 per architecture: the backbone (BN running statistics included) learned on the source task, a fresh
    small head; another network's features are refused in one line."""
    from classprune.errors import CheckpointError
    from classprune.models.network import build_model
    from classprune.models.pretrain import build_w0, pretrain_features

    out = pretrain_features(steps=3, batch_size=8, n_per_class=4, n_check_per_class=2, arch=arch)
    head = registry.get(arch).head + "."
    fresh = build_model("none", seed=1, arch=arch).state_dict()
    assert set(out["features"]) == {k for k in fresh if not k.startswith(head)}
    moved = [k for k in out["features"] if "running_mean" in k and not torch.equal(out["features"][k], fresh[k])]
    assert moved, "pretraining left the BN running statistics at their init"
    w0 = build_w0(out["features"], seed=1, arch=arch).state_dict()
    assert all(torch.equal(w0[k], v) for k, v in out["features"].items())
    assert all(torch.equal(w0[k], fresh[k]) for k in fresh if k.startswith(head)), "the head is the seed's"
    alexnet = pretrain_features(steps=1, batch_size=4, n_per_class=2, n_check_per_class=1)["features"]
    with pytest.raises(CheckpointError, match="do not fit"):
        build_w0(alexnet, seed=1, arch=arch)


def test_the_init_stage_refuses_an_unknown_arch_in_one_line_and_writes_nothing(tmp_path):
    _params_file(tmp_path, arch="vgg16", pretrained="none")
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "init.py"), "--scenario", "red", "--seed", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "model.arch" in lines[0] and "vgg16" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]



def _bn_ticket(arch: str, keep: float) -> tuple[nn.Module, dict, dict]:
    """A pruned weight ticket of ``arch`` as an lt stage leaves it: pruned weights exactly 0, BN running
    statistics moved away from their init (so that a file that drops or misreads them shows)."""
    from classprune.lottery.masks import full_mask
    from classprune.lottery.pruning import keep_top
    from classprune.models.network import build_model

    model = build_model("none", seed=0, arch=arch).train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # running statistics of real activations (as training leaves them), not the init's
        for m in norms:
            m.momentum = None   # a plain average over the batches
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32, generator=g))
        for m in norms:
            m.momentum = 0.1
    head = model.get_submodule(registry.get(arch).head)
    with torch.no_grad():   # a live head: the scores differ from image to image, so a wrong file shows
        head[1].weight.mul_(20.0)
        head[1].bias.fill_(0.5)
        head[4].bias.fill_(0.5)
    full = full_mask(model, False, [registry.get(arch).output_layer])
    mask = keep_top({n: p.detach().abs() for n, p in model.named_parameters() if n in full}, full, keep)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in mask:
                p.mul_(mask[n])
    return model.eval(), {k: v.clone() for k, v in model.state_dict().items()}, mask


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_each_architecture_exports_sparse_onnx_and_int8_files_that_compute_the_ticket(arch, tmp_path):
    """The edge path on BN networks: the sparse file names its network and keeps BN's running statistics and
    integer counter, the ONNX file (BN folded by the exporter) computes the ticket's logits, int8 keeps every
    pruned weight at zero, and the compact network of a channel ticket exports too."""
    import numpy as np

    from classprune.edge import onnx_files, sparse
    from classprune.edge.export import export_model
    from classprune.lottery import channel_criteria, channels
    from classprune.lottery.masks import save_mask

    model, state, mask = _bn_ticket(arch, 0.3)
    torch.save(state, tmp_path / "weights.pt")
    save_mask(mask, tmp_path / "mask.pt")
    meta = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    export_model(tmp_path / "out", tmp_path / "weights.pt", tmp_path / "mask.pt", meta, 0.5,
                 network={"arch": arch, "head": [8, 8]})
    raw = torch.load(tmp_path / "out" / "sparse_fp32.pt", weights_only=True)
    assert raw["network"] == {"arch": arch, "head": [8, 8]}
    shipped = sparse.load_sparse(tmp_path / "out" / "sparse_fp32.pt")
    assert all(torch.equal(shipped.state_dict()[k], v) for k, v in state.items()), "the file is the checkpoint"
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x).numpy()
    logodds = logits[:, 1] - logits[:, 0]
    assert logodds.std() > 1e-3, "a live ticket (one score for every image would hide a wrong file)"
    onnx_logodds, _ = onnx_files.run(onnx_files.session(tmp_path / "out" / "model.onnx"), [x.numpy()])
    np.testing.assert_allclose(onnx_logodds, logodds, atol=1e-4)
    calib = [np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)]
    onnx_files.quantize_int8(tmp_path / "out" / "model.onnx", tmp_path / "out" / "model_int8.onnx", calib,
                             reduce_range=True)   # refuses a file whose pruned weights are no longer zero
    int8_logodds, _ = onnx_files.run(onnx_files.session(tmp_path / "out" / "model_int8.onnx"), [x.numpy()])
    # int8 of a random network is not its fp32 (the pipeline judges a trained one as shipped); it follows it
    assert np.isfinite(int8_logodds).all() and np.corrcoef(int8_logodds, logodds)[0, 1] > 0.5
    units = channels.units(model, "conv", 32)
    full = channels.full_channel_mask(model, units)
    cmask = channel_criteria.prune_channels(model, full, units, 0.5, "layerwise", "l1", 32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in cmask:
                p.mul_(cmask[n])
    small = channels.compact(model, cmask, units, 32).eval()   # the graph is traced with autograd
    onnx_files.export_onnx(small, 32, tmp_path / "compact.onnx", {})
    compact_logodds, _ = onnx_files.run(onnx_files.session(tmp_path / "compact.onnx"), [x.numpy()])
    with torch.no_grad():
        masked = model(x).numpy()
    np.testing.assert_allclose(compact_logodds, masked[:, 1] - masked[:, 0], atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_the_baselines_run_from_the_registry_and_lobs_is_refused_where_it_does_not_apply(arch, in_project, tmp_path):
    """SNIP, SNIP + training and the MobileNet point on each network (the MobileNet counted against the pruned
    network's own size); L-OBS on ResNet-18, and on MobileNetV2 a one-line refusal that says why."""
    from classprune.baselines.common import run_baseline
    from classprune.config import Params
    from classprune.lottery import runner
    from classprune.models.network import dense_parameters

    params = _params(arch)
    raw = params.model_dump()
    raw["run"]["scenarios"], raw["baselines"]["source_scenario"] = ["red"], "red"
    raw["prune"]["rounds"], raw["prune"]["rate"] = [{"k": 1, "prev": 0}, {"k": 2, "prev": 1}], 0.9
    raw["baselines"].update(snip={"batches": 1}, snip_trained={"batches": 1, "loss": "ce"},
                            lobs={"batches": 1, "damp": 0.01, "block_mb": 256})
    raw["train"]["iterations"] = 2
    applicable = ["snip", "snip_trained", "mobilenet"] + ([] if registry.get(arch).depthwise else ["lobs"])
    if registry.get(arch).depthwise:
        with pytest.raises(ValueError, match="lobs does not apply") as err:
            Params.model_validate({**raw, "baselines": {**raw["baselines"], "methods": ["lobs"]}})
        assert "depthwise" in str(err.value)
    params = Params.model_validate({**raw, "baselines": {**raw["baselines"], "methods": applicable}})
    runner.init(params, "red", 0)
    runner.train_round(params, "red", 0, 1)
    out = {m: run_baseline(params, m, 0) for m in applicable}
    for method in applicable:
        rounds = json.loads((tmp_path / "reports" / "rounds" / "seed_0" / f"{method}.json").read_text())["rounds"]
        if method == "mobilenet":
            assert rounds[0]["remaining"] == pytest.approx(rounds[0]["parameters"] / dense_parameters(arch))
        else:
            assert [r["remaining"] for r in rounds] == pytest.approx([1.0, 0.1], abs=2e-3), method
        assert all(0 <= r["test"]["auc"] <= 1 for r in rounds), (method, out[method])


@pytest.mark.parametrize("arch", sorted(registry.ARCHS))
def test_the_default_ignore_names_each_networks_output_layer_and_the_mask_leaves_it_whole(arch):
    """params.yaml's prune.ignore [output] is the registry's output layer of model.arch, so switching networks
    needs no other key; the mask then covers every conv and linear weight but that one."""
    from classprune.config import Params
    from classprune.lottery.masks import full_mask
    from classprune.models.network import build_model

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["prune"]["ignore"] == ["output"]
    raw["model"]["arch"], raw["baselines"]["methods"] = arch, ["snip"]   # L-OBS does not apply to every network
    params = Params.model_validate(raw)
    assert params.prune.ignore == [registry.get(arch).output_layer]
    model = build_model("none", seed=0, arch=arch)
    mask = full_mask(model, params.prune.include_biases, params.prune.ignore)
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(mask) == weights - {registry.get(arch).output_layer}
