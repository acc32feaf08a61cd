import pytest
import torch

from classprune.data.augment import TRANSFORMS, ThinPlateSplineWarp, build_transform
from classprune.errors import DataError


def _image(dtype=torch.uint8, batch=()):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(*batch, 3, 40, 40, generator=g)
    return (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_tps_keeps_shape_dtype_and_changes_image(dtype, batch):
    x = _image(dtype, batch)
    y = ThinPlateSplineWarp(grid=4, max_shift=0.1, seed=0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.equal(y, x)


def test_tps_identity_at_zero_shift():
    x = _image()
    assert torch.equal(ThinPlateSplineWarp(max_shift=0.0)(x), x)


def test_tps_zero_displacement_grid_is_identity():
    """The spline through unmoved points is the identity map, so sampling returns the input."""
    from classprune.data.augment import _tps_grid

    lin = torch.linspace(-1, 1, 4, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), -1).reshape(1, -1, 2)
    grid = _tps_grid(pts, pts, 20, 20)
    x = _image(torch.float64, (1,))[..., :20, :20]
    out = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(out, x)


def test_tps_moves_control_points_and_is_seeded():
    """Content at an origin lands on its destination: a tiny shift keeps the image close but not equal."""
    x = _image(torch.float32)
    a = ThinPlateSplineWarp(max_shift=0.1, seed=3)(x)
    b = ThinPlateSplineWarp(max_shift=0.1, seed=3)(x)
    c = ThinPlateSplineWarp(max_shift=0.1, seed=4)(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    smooth = torch.linspace(0, 1, 40).expand(3, 40, 40).contiguous()
    warped = ThinPlateSplineWarp(max_shift=0.01, seed=0)(smooth)
    assert (warped - smooth).abs().max() < 0.05


def test_registry():
    assert set(TRANSFORMS) == {"none", "crack", "isic"}
    assert build_transform("none", 32) is None
    x = _image()
    for name in ("crack", "isic"):
        y = build_transform(name, 40)(x)
        assert y.shape == x.shape and y.dtype == torch.uint8
    with pytest.raises(DataError, match="choose one of: none, crack, isic"):
        build_transform("fancy", 32)
