"""Data sets by name, class-balanced subsets and minibatches (the ``data`` stage of the pipeline).

``load_dataset(spec)`` understands four forms of spec:

* ``fashion-mnist``: the IDX files, from ``$SEELIKE_DATA``, the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``) or torchvision's download into the cache;
* ``cifar10``: torchvision's CIFAR-10 under ``$SEELIKE_DATA`` or the cache (downloaded if absent);
* ``imagefolder:PATH``: an ImageNet-style folder, one subfolder per class (``PATH/val`` or ``PATH/train`` used
  when present), with the standard evaluation transform (resize the shorter side to ``size / 0.875``, centre crop);
* ``synthetic[:n=256,size=28,channels=1,classes=10,seed=0]``: deterministic class-dependent gratings and blobs.

Images come out as float32 ``[C, H, W]`` tensors in ``[0, 1]``, never normalised: the normalisation (mean and std)
travels with the model and its adapter applies it. ``iterate_batches`` cuts a data set into minibatches whose
last remainder is merged rather than dropped, so that every batch has at least ``min_batch`` images (unbiased
HSIC needs n >= 4).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from seelike.errors import BadImageError, DataNotFoundError, InvalidInputError

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "SPLITS",
    "BatchIterator",
    "ImageDataset",
    "check_disjoint",
    "dataset_spec_string",
    "holdout_split",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "read_idx",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
KNOWN_SPECS = (
    "fashion-mnist",
    "cifar10",
    "imagefolder:PATH",
    "synthetic[:n=256,size=28,channels=1,classes=10,seed=0]",
)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
SYNTHETIC_DEFAULTS = {"n": 256, "size": 28, "channels": 1, "classes": 10, "seed": 0}
DEFAULT_IMAGE_SIZE = 224  # imagefolder crop size
CROP_FRACTION = 0.875  # resize the shorter side to size / 0.875, then centre-crop `size`
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------------------------- data set classes


class ImageDataset(Dataset):
    """Images and labels of one split of one data set; items are ``(float32 [C, H, W] in [0, 1], int label)``.

    Attributes: ``spec`` (canonical string), ``split``, ``classes``, ``num_classes``, ``labels`` (LongTensor of all
    labels in dataset order, available without reading images), ``image_shape`` (C, H, W), ``fraction`` and
    ``seed`` (of the class-balanced subset), ``source_indices`` (positions in the full split), ``source`` (where
    the files came from). Subclasses implement ``_read(source_indices) -> [k, C, H, W]``.
    """

    def __init__(
        self,
        spec: str,
        split: str,
        classes: Sequence[str],
        labels: Tensor,
        image_shape: tuple[int, int, int],
        source: str = "",
    ) -> None:
        self.spec = spec
        self.split = split
        self.classes = list(classes)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.source = source
        self.fraction = 1.0
        self.seed = 0
        self.source_indices = torch.arange(len(self.labels))
        #: what a result must record about how these images were chosen (skipped files, a held-out split)
        self.provenance: dict[str, Any] = {}

    @property
    def pool(self) -> str:
        """Names the images ``source_indices`` index into: two data sets with the same pool can share images."""
        return f"{self.spec}|{self.split}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} images")
        index %= len(self)
        return self.images([index])[0], int(self.labels[index])

    def images(self, indices: Sequence[int] | Tensor) -> Tensor:
        """Images at these positions as one float32 tensor ``[k, C, H, W]`` in [0, 1] (the fast batch path)."""
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return self._read(self.source_indices[indices])

    def _read(self, source_indices: Tensor) -> Tensor:
        raise NotImplementedError

    def subset(self, fraction: float, seed: int = 0) -> ImageDataset:
        """A class-balanced subset: per class, the first ``max(1, round(fraction * count))`` of a seeded permutation.

        Subsets with the same seed are nested (3% is a prefix of 10% per class); indices keep dataset order.
        """
        keep = balanced_subset_indices(self.labels, fraction, seed, self.num_classes)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.labels = self.labels[keep]
        new.source_indices = self.source_indices[keep]
        new.fraction, new.seed = float(fraction) * self.fraction, int(seed)
        return new

    def _select(self, keep: Tensor, split: str) -> ImageDataset:
        """A copy holding the images at positions ``keep``, labelled as split ``split``."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.labels, new.source_indices, new.split = self.labels[keep], self.source_indices[keep], split
        new.provenance = dict(self.provenance)
        return new

    def __repr__(self) -> str:
        subset = f", fraction={self.fraction:g}, seed={self.seed}" if self.fraction < 1 else ""
        return (
            f"{type(self).__name__}(spec={self.spec!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, image_shape={self.image_shape}{subset})"
        )


class TensorImageDataset(ImageDataset):
    """A data set held in memory as one ``[N, C, H, W]`` tensor (uint8, converted per batch) and resized on demand."""

    def __init__(self, data: Tensor, *, image_size: int | None = None, **kwargs: Any) -> None:
        self.data = data
        c, h, w = data.shape[1:]
        self.image_size = image_size
        shape = (c, image_size, image_size) if image_size else (c, h, w)
        super().__init__(image_shape=shape, **kwargs)

    def _read(self, source_indices: Tensor) -> Tensor:
        batch = self.data[source_indices]
        batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
        return _resize_batch(batch, self.image_size)


class SyntheticDataset(ImageDataset):
    """Deterministic class-dependent images, generated on demand (any ``n`` without holding them in memory).

    Class k is an oriented grating (angle and frequency set by k) plus a Gaussian blob on a circle at an angle set
    by k; each image gets its own phase, small shift and pixel noise from a numpy generator seeded by
    (seed, split, index), so the same spec gives identical images in every process and platform.
    """

    def __init__(self, params: dict[str, int], *, image_size: int | None = None, **kwargs: Any) -> None:
        self.params = dict(params)
        self.image_size = image_size
        n, k = params["n"], params["classes"]
        size = image_size or params["size"]
        labels = torch.arange(n) % k
        super().__init__(labels=labels, image_shape=(params["channels"], size, size), **kwargs)
        self._split_key = SPLITS.index(self.split)

    def _read(self, source_indices: Tensor) -> Tensor:
        p = self.params
        size, channels, num_classes = p["size"], p["channels"], p["classes"]
        coords = torch.linspace(-1.0, 1.0, size)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        out = torch.empty(len(source_indices), channels, size, size)
        channel_gain = 1.0 - 0.25 * torch.arange(channels, dtype=torch.float32) / max(channels, 1)
        for row, index in enumerate(source_indices.tolist()):
            rng = np.random.default_rng([p["seed"], self._split_key, index])
            k = index % num_classes
            phase, dx, dy = rng.random(3).tolist()
            angle = math.pi * k / num_classes
            freq = 2.0 + 2.0 * (k % 3)
            u = (xx - 0.1 * (dx - 0.5)) * math.cos(angle) + (yy - 0.1 * (dy - 0.5)) * math.sin(angle)
            grating = 0.5 + 0.25 * torch.cos(2 * math.pi * (freq * u / 2 + phase))
            bx, by = 0.5 * math.cos(2 * math.pi * k / num_classes), 0.5 * math.sin(2 * math.pi * k / num_classes)
            blob = 0.35 * torch.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / 0.08)
            noise = 0.08 * torch.from_numpy(rng.standard_normal((channels, size, size), dtype=np.float32))
            out[row] = (channel_gain[:, None, None] * (grating + blob) + noise).clamp_(0.0, 1.0)
        return _resize_batch(out, self.image_size)


class FolderImageDataset(ImageDataset):
    """An ImageNet-style folder read with PIL: RGB, shorter side to ``round(size / 0.875)``, centre crop ``size``.

    The images stay in [0, 1]; the model's own preprocessing then normalises them (mean/std of its weights).
    """

    def __init__(self, paths: Sequence[Path], image_size: int, **kwargs: Any) -> None:
        self.paths = list(paths)
        self.image_size = image_size
        super().__init__(image_shape=(3, image_size, image_size), **kwargs)

    @property
    def pool(self) -> str:
        """The folder read: a folder without train/ and val/ gives the same images to both splits."""
        return f"imagefolder|{self.source}"

    def _read(self, source_indices: Tensor) -> Tensor:
        paths = [self.paths[i] for i in source_indices.tolist()]
        if len(paths) <= 1:
            tensors = [self._load(p) for p in paths]
        else:  # PIL releases the GIL while decoding
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(paths))) as pool:
                tensors = list(pool.map(self._load, paths))
        return torch.stack(tensors) if tensors else torch.empty(0, *self.image_shape)

    def _load(self, path: Path) -> Tensor:
        return load_image(path, self.image_size)

    def drop_bad_images(self) -> list[str]:
        """Decode every image once and drop the ones that fail (``--skip-bad-images``); returns ``path: reason`` lines."""
        def problem(path: Path) -> str | None:
            try:
                self._load(path)
            except BadImageError as error:
                return f"{path}: {error.reason}"
            return None

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(problem, self.paths))
        bad = [i for i, p in enumerate(problems) if p is not None]
        if bad:
            keep = torch.tensor([i for i, p in enumerate(problems) if p is None], dtype=torch.long)
            positions = torch.nonzero(torch.isin(self.source_indices, keep)).flatten()
            self.labels, self.source_indices = self.labels[positions], self.source_indices[positions]
            log.warning("imagefolder: skipped %d unreadable image(s): %s", len(bad), "; ".join(problems[i] for i in bad[:5]))
        return [problems[i] for i in bad]


# --------------------------------------------------------------------------------------------------- public API


def load_dataset(
    spec: str,
    split: str = "test",
    fraction: float = 1.0,
    seed: int = 0,
    image_size: int | None = None,
    skip_bad_images: bool = False,
) -> ImageDataset:
    """Load a data set by spec (see the module docstring), optionally a class-balanced ``fraction`` of it.

    ``image_size`` resizes every image to ``image_size x image_size`` (for ``imagefolder`` it is the crop size,
    default 224; for the others the native size is kept when it is None). An unreadable image file raises a
    :class:`BadImageError` naming it when read; with ``skip_bad_images`` every file is decoded up front and the
    bad ones are dropped, listed in ``dataset.provenance["skipped_images"]``.
    """
    kind, arg = _parse_spec(spec)
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}: use one of {', '.join(repr(s) for s in SPLITS)}")
    _check_fraction(fraction)
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1):
        raise InvalidInputError(f"image_size must be a positive integer or None, not {image_size!r}")
    size = int(image_size) if image_size is not None else None

    if kind == "fashion-mnist":
        dataset: ImageDataset = _load_fashion_mnist(split, size)
    elif kind == "cifar10":
        dataset = _load_cifar10(split, size)
    elif kind == "imagefolder":
        dataset = _load_imagefolder(Path(arg), split, size or DEFAULT_IMAGE_SIZE)
        if skip_bad_images:
            skipped = dataset.drop_bad_images()
            dataset.provenance["skipped_images"] = skipped
            if not len(dataset):
                raise DataNotFoundError(f"imagefolder: every image in {dataset.source} is unreadable (e.g. {skipped[0]})")
    else:
        params = _parse_synthetic(arg)
        dataset = SyntheticDataset(
            params,
            image_size=size,
            spec=dataset_spec_string(spec),
            split=split,
            classes=[f"class_{k}" for k in range(params["classes"])],
            source="generated",
        )
    if fraction < 1.0:
        dataset = dataset.subset(fraction, seed)
    dataset.seed = int(seed)
    log.info("loaded %r", dataset)
    return dataset


def dataset_spec_string(spec: str) -> str:
    """The canonical form of a spec, as recorded in results.

    ``'Fashion-MNIST'`` -> ``'fashion-mnist'``, ``'imagefolder:~/x'`` -> ``'imagefolder:/home/u/x'``,
    ``'synthetic:n=8'`` -> ``'synthetic:n=8,size=28,channels=1,classes=10,seed=0'``.
    """
    kind, arg = _parse_spec(spec)
    if kind == "imagefolder":
        return f"imagefolder:{arg}"
    if kind == "synthetic":
        return "synthetic:" + ",".join(f"{k}={v}" for k, v in _parse_synthetic(arg).items())
    return kind


def balanced_subset_indices(labels: Tensor, fraction: float, seed: int = 0, num_classes: int | None = None) -> Tensor:
    """Sorted positions of a class-balanced subset: per class, a prefix of a permutation seeded by ``seed``.

    Each class keeps ``max(1, round(fraction * count))`` of its ``count`` examples (none if it has none).
    """
    _check_fraction(fraction)
    labels = torch.as_tensor(labels, dtype=torch.long)
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1 if len(labels) else 0
    g = torch.Generator().manual_seed(int(seed))
    kept = []
    for k in range(num_classes):
        members = torch.nonzero(labels == k).flatten()
        order = torch.randperm(len(members), generator=g)
        if len(members):
            kept.append(members[order[: max(1, round(fraction * len(members)))]])
    return torch.sort(torch.cat(kept)).values if kept else torch.empty(0, dtype=torch.long)


def balanced_sample(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` positions, class-balanced: per class a seeded permutation, classes taken round-robin, then shuffled.

    Every class gives ``n // classes`` or one more image while it has them (a class that runs out leaves its
    turns to the others); the draw depends only on the labels, ``n`` and ``seed``.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if not 0 <= n <= len(labels):
        raise InvalidInputError(f"n={n} must lie in 0..{len(labels)} (the images there are)")
    generator = torch.Generator().manual_seed(int(seed))
    members = [torch.nonzero(labels == k).flatten() for k in torch.unique(labels).tolist()]
    members = [m[torch.randperm(len(m), generator=generator)] for m in members]
    rank_in_class = torch.cat([torch.arange(len(m)) for m in members])
    class_turn = torch.cat([torch.full((len(m),), k) for k, m in enumerate(members)])
    positions = torch.cat(members)
    round_robin = positions[torch.argsort(rank_in_class * len(members) + class_turn)][:n]
    return round_robin[torch.randperm(n, generator=generator)]


def num_batches(total: int, batch_size: int, min_batch: int = 4) -> int:
    """How many batches ``iterate_batches`` yields for ``total`` examples."""
    return len(_batch_sizes(total, batch_size, min_batch))


class BatchIterator:
    """Iterable of ``(images [b, C, H, W], labels [b], indices [b])`` with a ``len`` (for progress bars)."""

    def __init__(self, dataset: Dataset, order: Tensor, sizes: list[int]) -> None:
        self.dataset, self.order, self.sizes = dataset, order, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def num_examples(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        start = 0
        for size in self.sizes:
            indices = self.order[start : start + size]
            start += size
            yield (*fetch(self.dataset, indices), indices)


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    n: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    min_batch: int = 4,
    reshuffle: int = 0,
) -> BatchIterator:
    """Minibatches of the first ``n`` examples (a seeded random ``n`` when ``shuffle``), each exactly once.

    An image folder is sampled class-balanced (:func:`balanced_sample`): a few thousand images of an
    ImageNet validation folder cover every class about equally, the same on every rank and every run.

    A last remainder smaller than ``min_batch`` is merged into the previous batch, so no batch is smaller than
    ``min_batch`` and no example is dropped; fewer than ``min_batch`` examples in all is an error.
    ``reshuffle`` > 0 gives the same examples in another seeded order (repeated minibatch CKA).
    """
    size = len(dataset)  # type: ignore[arg-type]
    total = size if n is None else n
    if isinstance(total, bool) or int(total) != total or total < 0:
        raise InvalidInputError(f"n must be a non-negative integer or None, not {n!r}")
    total = int(total)
    if total > size:
        raise InvalidInputError(f"n={total} is larger than the data set, which has {size} examples")
    sizes = _batch_sizes(total, batch_size, min_batch)
    if shuffle and isinstance(dataset, FolderImageDataset):  # the labels come from folder names: no image is read
        order = balanced_sample(dataset.labels, total, seed)
    elif shuffle:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(int(seed)))[:total]
    else:
        order = torch.arange(total)
    if reshuffle:
        order = order[torch.randperm(total, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + int(reshuffle)))]
    return BatchIterator(dataset, order, sizes)


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format, gzipped or not) into a numpy array of its declared shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in dtypes:
        raise DataNotFoundError(f"{path} is not an IDX file (bad magic number): delete it and fetch it again")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != dtype.itemsize * math.prod(dims):
        raise DataNotFoundError(f"{path} is truncated (header says shape {dims}): delete it and fetch it again")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims)


def load_image(path: str | Path, image_size: int) -> Tensor:
    """One image file as float32 ``[3, size, size]`` in [0, 1]: shorter side ``round(size / 0.875)``, centre crop.

    Every PIL mode is scaled by its own range: 8-bit modes (L, RGB, P, CMYK, 1, LA, RGBA; alpha ignored) by 255,
    16-bit ones (I;16*, and I, which is how PIL opens 16-bit PNG and PGM) by 65535, float (F) as it is; one
    channel is repeated to three. A file that cannot be decoded raises :class:`BadImageError` naming it.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            limit = Image.MAX_IMAGE_PIXELS  # None when the user has switched PIL's check off
            if limit and width * height > limit:
                raise BadImageError(path, f"{width}x{height} pixels, over PIL's decompression-bomb limit of {limit}")
            if width < 1 or height < 1:
                raise BadImageError(path, f"empty image ({width}x{height})")
            img.load()
            if img.mode in ("I", "F") or img.mode.startswith("I;16"):
                plane = _crop(Image.fromarray(_unit_range(np.asarray(img), img.mode, path)), image_size)
                array = np.repeat(np.asarray(plane, dtype=np.float32)[:, :, None], 3, axis=2)
                return torch.from_numpy(array.copy()).permute(2, 0, 1).clamp_(0.0, 1.0)
            array = np.asarray(_crop(img.convert("RGB"), image_size), dtype=np.uint8)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # corrupt, truncated, empty
        raise BadImageError(path, f"{type(error).__name__}: {str(error).strip() or 'cannot decode'}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _unit_range(array: np.ndarray, mode: str, path: str | Path) -> np.ndarray:
    """A single-channel high-depth image as float32 in [0, 1]; values outside the mode's range are refused."""
    values = array.astype(np.float32)
    if mode == "F":
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (np.isfinite(values).all() and low >= 0.0 and high <= 1.0):
            raise BadImageError(path, f"float image with values in [{low:g}, {high:g}], not [0, 1]; save it as 8 or 16 bit")
        return values
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise BadImageError(path, "32-bit integer image with values outside 0..65535; save it as 8 or 16 bit")
    return values / 65535.0


def _crop(img: Any, image_size: int) -> Any:
    """Resize the shorter side to ``round(image_size / 0.875)`` (bilinear) and crop the centre square."""
    from PIL import Image

    w, h = img.size
    short = round(image_size / CROP_FRACTION)
    scale = short / min(w, h)
    new_w, new_h = (short, max(short, round(h * scale))) if w <= h else (max(short, round(w * scale)), short)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - image_size) / 2), round((new_h - image_size) / 2)
    return img.crop((left, top, left + image_size, top + image_size))


def holdout_split(dataset: ImageDataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Disjoint train and test parts of one data set: per class, a seeded ``test_fraction`` is held out for testing.

    For image folders without ``train/`` and ``val/``: a probe must never be tested on images it was trained on.
    Both parts record the split in ``provenance["holdout"]``.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise InvalidInputError(f"holdout test fraction must lie strictly between 0 and 1, not {test_fraction!r}")
    test_positions = balanced_subset_indices(dataset.labels, test_fraction, seed, dataset.num_classes)
    in_test = torch.zeros(len(dataset), dtype=torch.bool)
    in_test[test_positions] = True
    record = {"test_fraction": float(test_fraction), "seed": int(seed), "per_class": True, "of": dataset.pool}
    train, test = dataset._select(torch.nonzero(~in_test).flatten(), "train"), dataset._select(test_positions, "test")
    for part in (train, test):
        part.provenance["holdout"] = record
    return train, test


def shared_images(train: ImageDataset, test: ImageDataset) -> int:
    """How many images two data sets share (0 unless they index the same pool of images)."""
    if train.pool != test.pool:
        return 0
    return int(np.intersect1d(train.source_indices.numpy(), test.source_indices.numpy()).size)


def check_disjoint(train: ImageDataset, test: ImageDataset) -> None:
    """Refuse a train and a test set that share images (what a model is tested on it must not have been fit on)."""
    shared = shared_images(train, test)
    if shared:
        raise InvalidInputError(
            f"the train and test images overlap ({shared} images of {train.source or train.spec} are in both), so "
            "test accuracy would be measured on training images; give an imagefolder with train/ and val/ (or test/) "
            "subfolders, or split it with `--holdout FRACTION` (seelike.data.holdout_split)"
        )


# ------------------------------------------------------------------------------------------------------ helpers


def _parse_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"data set spec must be a non-empty string; known forms: {', '.join(KNOWN_SPECS)}")
    head, sep, arg = spec.strip().partition(":")
    kind = head.lower().replace("_", "-")
    if kind in ("fashion-mnist", "fashionmnist") and not sep:
        return "fashion-mnist", ""
    if kind in ("cifar10", "cifar-10") and not sep:
        return "cifar10", ""
    if kind == "imagefolder" and arg:
        return "imagefolder", str(Path(arg).expanduser().resolve())
    if kind == "synthetic":
        return "synthetic", arg
    raise InvalidInputError(f"unknown data set spec {spec!r}; known forms: {', '.join(KNOWN_SPECS)}")


def _parse_synthetic(arg: str) -> dict[str, int]:
    params = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in SYNTHETIC_DEFAULTS or not sep:
            raise InvalidInputError(
                f"bad synthetic option {item!r}: use key=value with keys {', '.join(SYNTHETIC_DEFAULTS)}"
            )
        try:
            params[key] = int(value)
        except ValueError:
            raise InvalidInputError(f"synthetic option {key} must be an integer, not {value!r}") from None
    for key in ("n", "size", "channels", "classes"):
        if params[key] < 1:
            raise InvalidInputError(f"synthetic option {key} must be at least 1, not {params[key]}")
    if params["seed"] < 0:
        raise InvalidInputError(f"synthetic option seed must be non-negative, not {params['seed']}")
    return params


def _check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction must be a number with 0 < fraction <= 1, not {fraction!r}")


def _batch_sizes(total: int, batch_size: int, min_batch: int) -> list[int]:
    if isinstance(min_batch, bool) or int(min_batch) != min_batch or min_batch < 1:
        raise InvalidInputError(f"min_batch must be a positive integer, not {min_batch!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < min_batch:
        raise InvalidInputError(f"batch_size must be an integer >= min_batch={min_batch}, not {batch_size!r}")
    if total < min_batch:
        raise InvalidInputError(
            f"{total} examples are too few: a batch needs at least min_batch={min_batch} examples (use a larger n)"
        )
    full, remainder = divmod(total, batch_size)
    sizes = [batch_size] * full
    if remainder >= min_batch or not sizes:
        sizes.append(remainder)
    elif remainder:
        sizes[-1] += remainder
    return sizes


def fetch(dataset: Dataset, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Images [b, C, H, W] and labels [b] of ``dataset`` at ``indices``."""
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return dataset.images(indices), torch.as_tensor(dataset.labels)[indices]
    items = [dataset[i] for i in indices.tolist()]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([int(y) for _, y in items])


def _resize_batch(batch: Tensor, size: int | None) -> Tensor:
    if size is None or batch.shape[-2:] == (size, size) or len(batch) == 0:
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def _cache_root() -> Path:
    return Path(os.environ.get("SEELIKE_CACHE") or "~/.cache/seelike").expanduser()


def _user_data_dirs(subfolder: str) -> list[Path]:
    root = os.environ.get("SEELIKE_DATA")
    if not root:
        return []
    root_path = Path(root).expanduser()
    return [root_path, root_path / subfolder]


def _torchvision_download(name: str, root: Path, train: bool, download: bool = True) -> Any:
    """torchvision's data set class ``name`` under ``root`` (the one place that may touch the network)."""
    import torchvision

    return getattr(torchvision.datasets, name)(str(root), train=train, download=download)


# ------------------------------------------------------------------------------------------------ fashion-mnist


def _fashion_mnist_files(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    found = []
    for name in _fashion_mnist_files(split):
        candidates = [folder / f"{name}.gz", folder / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


@lru_cache(maxsize=4)
def _read_fashion_mnist(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataNotFoundError(f"{images_path} and {labels_path} do not hold matching Fashion-MNIST images/labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _load_fashion_mnist(split: str, image_size: int | None) -> ImageDataset:
    cache_raw = _cache_root() / "FashionMNIST" / "raw"
    folders = [*_user_data_dirs("fashion-mnist"), SYSTEM_FASHION_MNIST, cache_raw]
    found = next((f for f in map(lambda d: _find_idx_files(d, split), folders) if f), None)
    if found is None:
        try:
            _torchvision_download("FashionMNIST", _cache_root(), train=split == "train")
        except Exception as exc:  # network, disk, missing torchvision: all say the same thing to the user
            looked = ", ".join(str(f) for f in folders)
            raise DataNotFoundError(
                f"Fashion-MNIST ({split}) not found; looked in {looked}. Fix it one of three ways: "
                f"`apt-get install dataset-fashion-mnist`; or set SEELIKE_DATA=/path/with/idx/files "
                f"(the {'/'.join(_fashion_mnist_files(split))} .gz files); or allow network access for "
                f"torchvision's download into {_cache_root()}. (download failed: {exc})"
            ) from exc
        found = _find_idx_files(cache_raw, split)
        if found is None:
            raise DataNotFoundError(f"torchvision downloaded Fashion-MNIST but no IDX files are in {cache_raw}")
    images, labels = _read_fashion_mnist(*found)
    return TensorImageDataset(
        images,
        image_size=image_size,
        spec="fashion-mnist",
        split=split,
        classes=FASHION_MNIST_CLASSES,
        labels=labels,
        source=str(found[0].parent),
    )


# ------------------------------------------------------------------------------------------------------ cifar10


def _load_cifar10(split: str, image_size: int | None) -> ImageDataset:
    train = split == "train"
    folders = [*_user_data_dirs("cifar10"), _cache_root()]
    found, source = None, None
    for folder in folders:
        if (folder / "cifar-10-batches-py").is_dir():
            try:
                found, source = _torchvision_download("CIFAR10", folder, train=train, download=False), folder
                break
            except Exception as exc:  # a damaged copy: try the next folder
                log.warning("CIFAR-10 in %s unusable: %s", folder, exc)
    if found is None:
        try:
            found, source = _torchvision_download("CIFAR10", _cache_root(), train=train), _cache_root()
        except Exception as exc:
            looked = ", ".join(str(f) for f in folders)
            raise DataNotFoundError(
                f"CIFAR-10 ({split}) not found; looked for cifar-10-batches-py/ in {looked}. Fix it by setting "
                f"SEELIKE_DATA=/path/containing/cifar-10-batches-py, or allow network access for torchvision's "
                f"download into {_cache_root()} (no apt package has it). (download failed: {exc})"
            ) from exc
    images = torch.from_numpy(np.ascontiguousarray(found.data)).permute(0, 3, 1, 2).contiguous()
    return TensorImageDataset(
        images,
        image_size=image_size,
        spec="cifar10",
        split=split,
        classes=list(getattr(found, "classes", CIFAR10_CLASSES)),
        labels=torch.as_tensor(found.targets, dtype=torch.long),
        source=str(source),
    )


# -------------------------------------------------------------------------------------------------- imagefolder

_SPLIT_FOLDERS = {"test": ("test", "val"), "train": ("train",)}


def _load_imagefolder(root: Path, split: str, image_size: int) -> ImageDataset:
    layout = (
        "expected an ImageNet-style folder: PATH/<class>/<image files>, optionally under "
        "PATH/train/ and PATH/val/ (or PATH/test/)"
    )
    if not root.is_dir():
        raise DataNotFoundError(f"imagefolder: {root} is not a folder; {layout}")
    folder = next((root / s for s in _SPLIT_FOLDERS[split] if (root / s).is_dir()), None)
    if folder is None:
        others = [s for names in _SPLIT_FOLDERS.values() for s in names if (root / s).is_dir()]
        if others:
            raise DataNotFoundError(
                f"imagefolder: {root} has {', '.join(o + '/' for o in others)} but no "
                f"{' or '.join(s + '/' for s in _SPLIT_FOLDERS[split])} for split {split!r}; {layout}"
            )
        folder = root
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    # links to the folder itself, a class folder or an ancestor would list images twice or loop forever
    listed = {os.path.realpath(folder), *(os.path.realpath(folder / name) for name in classes)}
    skipped_links: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _image_files(folder / name, listed, skipped_links)
        if not files:
            log.warning("imagefolder: class folder %s holds no images", folder / name)
        paths += files
        labels += [label] * len(files)
    if skipped_links:
        log.warning("imagefolder: did not follow %d symlinked folder(s) already listed or enclosing %s: %s",
                    len(skipped_links), folder, ", ".join(skipped_links[:5]) + (", ..." if len(skipped_links) > 5 else ""))
    if not paths:
        raise DataNotFoundError(
            f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {folder}; {layout}"
        )
    dataset = FolderImageDataset(
        paths,
        image_size,
        spec=f"imagefolder:{root}",
        split=split,
        classes=classes,
        labels=torch.tensor(labels, dtype=torch.long),
        source=str(folder),
    )
    if skipped_links:
        dataset.provenance["skipped_links"] = skipped_links
    return dataset


def _image_files(folder: Path, listed: set[str], skipped: list[str]) -> list[Path]:
    """Image files under ``folder``, following each symlinked folder at most once per real path.

    ``listed`` holds real paths already walked (or to be walked); a link to one of them, or to a folder that
    encloses one (``ln -s .. cat/up``), is not followed but appended to ``skipped``. A file reached twice through
    links is listed once.
    """
    files, seen_files = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            encloses = any(other == real or other.startswith(real.rstrip(os.sep) + os.sep) for other in listed)
            if encloses:
                skipped.append(os.path.join(dirpath, name))
            else:
                listed.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                real = os.path.realpath(os.path.join(dirpath, name))
                if real not in seen_files:
                    seen_files.add(real)
                    files.append(Path(dirpath) / name)
    return files
