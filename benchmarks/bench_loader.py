"""Training throughput through the decoded cache vs bare torchvision loops that read the image files.

A synthetic CRACK-like data set (``classprune.data.synthetic.generate``, JPEG, 227 x 227 px like the real
CRACK files by default) is written to a temporary directory. At each training size (64 and 224 px):

* ours: ``classprune.data.cache.build_cache`` once (timed separately: a one-off cost), then
  ``classprune.data.loader.make_loader`` over the train split (no augmentation);
* reference 1: ``torchvision.datasets.ImageFolder`` (PIL decode) + Resize + ToTensor + Normalize;
* reference 2: ``torchvision.io.decode_image`` + ``transforms.v2.functional.resize`` + Normalize;

all with the same images, the same batch size, shuffling and ``num_workers=0``. "data" iterates one epoch
and counts images/s; "data + train" adds a dense SGD step of AlexNet-256-8-8-2 on each batch (a few
batches per repetition). The ratio is ours over the faster reference; repetitions are interleaved.

    python benchmarks/bench_loader.py [--images 200] [--file-size 227] [--sizes 64 224] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import interleaved, median, print_result, row, set_threads  # noqa: E402

TARGET = 1.0


def make_dataset(root: Path, n_images: int, file_size: int, seed: int = 0):
    """JPEG files (1 positive : 4 negatives) and a manifest: 80 % train, 10 % val, 10 % test per class."""
    from classprune.data.synthetic import generate

    n_pos = max(2, n_images // 5)
    index = generate(root / "raw", n_positive=n_pos, n_negative=n_images - n_pos, image_size=file_size,
                     seed=seed, fmt="jpg")
    rank = index.groupby("label").cumcount() % 10
    index["split"] = "train"
    index.loc[rank == 8, "split"] = "val"
    index.loc[rank == 9, "split"] = "test"
    return index


class DecodeImageFiles(torch.utils.data.Dataset):
    """Reference 2: read_file + decode_image (libjpeg-turbo in torchvision) + antialiased resize + normalise."""

    def __init__(self, paths, labels, size, mean, std):
        self.paths, self.labels, self.size = list(paths), list(labels), size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from torchvision.io import ImageReadMode, decode_image, read_file
        from torchvision.transforms.v2.functional import resize

        image = decode_image(read_file(self.paths[i]), mode=ImageReadMode.RGB)
        image = resize(image, [self.size, self.size], antialias=True)
        return (image.to(torch.float32) / 255 - self.mean) / self.std, self.labels[i]


def _image_folder(raw: Path, train_paths: set[str], size: int, mean, std):
    """Reference 1: the textbook torchvision loop."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(mean, std)])
    return datasets.ImageFolder(str(raw), transform=tf, is_valid_file=lambda p: os.path.normpath(p) in train_paths)


def _train_step(size: int):
    from classprune.lottery.losses import ClassDependentLoss
    from classprune.models.network import build_model

    model = build_model(seed=0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_fn = ClassDependentLoss([1.0, 5.0], 5.0)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def run(n_images: int = 200, file_size: int = 227, sizes=(64, 224), batch: int = 32, reps: int = 5,
        train_reps: int = 3, train_batches: int = 3, threads: int | None = None) -> dict:
    from torch.utils.data import DataLoader

    from classprune.data.cache import build_cache
    from classprune.data.loader import make_loader

    threads = set_threads(threads)
    rows, notes, details = [], [], {"threads": threads, "images": n_images, "file_size": file_size, "batch": batch,
                                     "reps": reps, "train_reps": train_reps, "train_batches": train_batches}
    with tempfile.TemporaryDirectory(prefix="classprune-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        index = make_dataset(tmp, n_images, file_size)
        train = index[index["split"] == "train"]
        train_paths = {os.path.normpath(p) for p in train["path"]}
        notes.append(f"data loading: {len(index)} synthetic {file_size} x {file_size} JPEGs ({len(train)} in the train "
                     f"split) generated in {time.perf_counter() - t0:.1f} s; batch {batch}, num_workers=0, "
                     f"{threads} torch threads; data: median of {reps} epochs, data + train: median of {train_reps} "
                     f"runs of {train_batches} batches, interleaved")
        for size in sizes:
            t0 = time.perf_counter()
            meta = build_cache(index, tmp / f"cache_{size}", size, workers=1)
            t_build = time.perf_counter() - t0
            mean, std = meta["mean"], meta["std"]
            g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
            loaders = {
                "cache": make_loader(tmp / f"cache_{size}", "train", batch, train=True, augment="none", seed=0),
                "ImageFolder": DataLoader(_image_folder(tmp / "raw", train_paths, size, mean, std), batch_size=batch,
                                          shuffle=True, num_workers=0, generator=g()),
                "decode_image": DataLoader(DecodeImageFiles(train["path"], train["label"], size, mean, std),
                                           batch_size=batch, shuffle=True, num_workers=0, generator=g()),
            }
            assert all(len(ld.dataset) == len(train) for ld in loaders.values())
            shapes = {name: tuple(next(iter(ld))[0].shape[1:]) for name, ld in loaders.items()}
            assert len(set(shapes.values())) == 1, shapes

            def epoch(ld):
                return lambda: sum(len(y) for _, y in ld)

            data_t = interleaved({name: epoch(ld) for name, ld in loaders.items()}, reps=reps, warmup=1)
            data_ips = {name: len(train) / median(ts) for name, ts in data_t.items()}

            steps = {name: _train_step(size) for name in loaders}

            def train_run(name, ld):
                def go():
                    for b, (x, y) in enumerate(ld):
                        if b == train_batches:
                            break
                        steps[name](x, y)
                return go

            n_train = min(train_batches * batch, len(train))
            train_t = interleaved({name: train_run(name, ld) for name, ld in loaders.items()}, reps=train_reps, warmup=1)
            train_ips = {name: n_train / median(ts) for name, ts in train_t.items()}

            for label, ips in (("data", data_ips), ("data + train step", train_ips)):
                best = max(("ImageFolder", "decode_image"), key=ips.get)
                ratio = ips["cache"] / ips[best]
                rows.append(row(f"{label}, {size} px: cache vs files ({best})", ours=ips["cache"], reference=ips[best],
                                unit="img/s", ratio=ratio, ratio_name="throughput", target=f">= {TARGET:g}x",
                                met=ratio >= TARGET))
                notes.append(f"  {size} px {label}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in ips.items())
                             + f" -> cache / fastest files loop ({best}) = {ratio:.2f}x (target >= {TARGET:g}x)")
            notes.append(f"  {size} px cache build (one-off, {len(index)} images, 1 decode thread): {t_build:.2f} s")
            details[f"{size}px"] = {"cache_build_s": t_build, "data_s": data_t, "data_img_per_s": data_ips,
                                    "train_s": train_t, "train_img_per_s": train_ips, "train_images_per_run": n_train}
    return {"name": "loader", "rows": rows, "notes": notes, "details": details}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--file-size", type=int, default=227, help="side of the JPEG files (real CRACK: 227)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--train-reps", type=int, default=3)
    p.add_argument("--train-batches", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = p.parse_args(argv)
    print_result(run(a.images, a.file_size, tuple(a.sizes), a.batch, a.reps, a.train_reps, a.train_batches, a.threads))


if __name__ == "__main__":
    main()
