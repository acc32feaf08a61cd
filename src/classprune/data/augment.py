"""Training-time augmentation: a light default for CRACK and the paper's Table I recipe for ISIC-2016.

Transforms run on uint8 C x H x W tensors straight from the cache, before normalisation; evaluation never
augments (the loader only asks for a transform when train=True).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import DataError


class ThinPlateSplineWarp(torch.nn.Module):
    """Elastic warp: a grid x grid lattice of control points each moves up to ``max_shift`` x width.

    A thin plate spline through the moved points gives a smooth dense displacement field, which mimics the
    skin stretching of dermoscopy (Table I, after Perez et al.). Each image in a batch gets its own warp.
    """

    def __init__(
        self,
        grid: int = 4,
        max_shift: float = 0.1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if grid < 2 or max_shift < 0:
            raise DataError(f"thin plate spline warp needs grid >= 2 and max_shift >= 0, got {grid}, {max_shift}")
        self.grid, self.max_shift = grid, float(max_shift)
        self.generator = generator if generator is not None or seed is None else torch.Generator().manual_seed(seed)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.max_shift == 0:
            return image
        batch = image if image.ndim == 4 else image.unsqueeze(0)
        b, _, h, w = batch.shape
        lin = torch.linspace(-1, 1, self.grid, dtype=torch.float64)
        origins = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), dim=-1).reshape(-1, 2)  # (x, y)
        shift = (torch.rand(b, len(origins), 2, generator=self.generator, dtype=torch.float64) * 2 - 1)
        shift *= 2 * self.max_shift * torch.tensor([1.0, w / h], dtype=torch.float64)  # fraction of the width
        grid = _tps_grid(origins + shift, origins.expand(b, -1, -1), h, w)
        dtype = batch.dtype if batch.is_floating_point() else torch.float32
        out = F.grid_sample(
            batch.to(dtype), grid.to(device=batch.device, dtype=dtype),
            mode="bilinear", padding_mode="reflection", align_corners=False,
        )
        if not batch.is_floating_point():
            out = out.round().clamp(torch.iinfo(batch.dtype).min, torch.iinfo(batch.dtype).max).to(batch.dtype)
        out = out if image.ndim == 4 else out[0]
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out

    def extra_repr(self) -> str:
        return f"grid={self.grid}, max_shift={self.max_shift}"


def _tps_grid(dst: torch.Tensor, src: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sampling grid (B x H x W x 2) of the spline mapping each destination point back to its origin.

    grid_sample pulls pixels, so the spline is fitted from destinations to origins: the content at an
    origin ends up at its destination.
    """
    b, n, _ = dst.shape

    def kernel(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r2 = torch.cdist(a, c).square()
        return r2 * torch.log(r2.clamp_min(1e-12))  # U(r) = r^2 log r^2, 0 at r = 0

    system = torch.zeros(b, n + 3, n + 3, dtype=torch.float64)
    affine = torch.cat([torch.ones(b, n, 1, dtype=torch.float64), dst], dim=-1)
    system[:, :n, :n] = kernel(dst, dst)
    system[:, :n, n:] = affine
    system[:, n:, :n] = affine.transpose(1, 2)
    rhs = torch.cat([src, torch.zeros(b, 3, 2, dtype=torch.float64)], dim=1)
    params = torch.linalg.solve(system, rhs)  # B x (n + 3) x 2: spline weights, then affine part

    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1  # pixel centres (align_corners=False)
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 2).expand(b, -1, -1)
    points_affine = torch.cat([torch.ones(b, h * w, 1, dtype=torch.float64), points], dim=-1)
    grid = kernel(points, dst) @ params[:, :n] + points_affine @ params[:, n:]
    return grid.reshape(b, h, w, 2)


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees: exact, no interpolation (cracks have no up direction)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, ()).item())
        return torch.rot90(image, k, dims=(-2, -1)) if k else image


def _crack(image_size: int) -> v2.Compose:
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        v2.ColorJitter(brightness=0.1, contrast=0.1),
    ])


def _isic(image_size: int) -> v2.Compose:
    """Paper Table I."""
    return v2.Compose([
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=90, shear=20, scale=(0.8, 1.2)),
        v2.RandomResizedCrop(image_size, scale=(0.4, 1.0), antialias=True),
        ThinPlateSplineWarp(grid=4, max_shift=0.1),
    ])


TRANSFORMS: dict[str, Callable[[int], Callable | None]] = {
    "none": lambda image_size: None,
    "crack": _crack,
    "isic": _isic,
}


def build_transform(name: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The named training augmentation for square images of ``image_size`` pixels (None for "none")."""
    if name not in TRANSFORMS:
        raise DataError(f"unknown augmentation {name!r}; choose one of: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name](image_size)
