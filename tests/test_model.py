import pytest
import torch

from classprune.errors import CheckpointError
from classprune.constants import NUM_PARAMETERS
from classprune.models.network import build_model, count_parameters


def test_alexnet_256_8_8_2_has_the_papers_parameter_count():
    model = build_model()
    assert count_parameters(model) == NUM_PARAMETERS == 2_471_842
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_seeded_init_is_reproducible_and_seed_dependent():
    a, b, c = build_model(seed=3).state_dict(), build_model(seed=3).state_dict(), build_model(seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_building_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model(seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_imagenet_weights_load_from_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = alexnet(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    model = build_model("imagenet", seed=0)
    assert torch.equal(model.features[0].weight, ref["features.0.weight"])
    assert count_parameters(model) == NUM_PARAMETERS


def test_missing_imagenet_weights_give_one_line_error_naming_file_and_dir(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError) as err:
        build_model("imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
