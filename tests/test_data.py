"""Tests of seelike.data: real Fashion-MNIST, image folders, synthetic data, subsets, batches and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seelike import data
from seelike.data import (
    FASHION_MNIST_CLASSES,
    dataset_spec_string,
    iterate_batches,
    load_dataset,
    num_batches,
    read_idx,
)
from seelike.errors import DataNotFoundError, InvalidInputError

needs_fashion_mnist = pytest.mark.skipif(
    not (data.SYSTEM_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs the Debian package dataset-fashion-mnist",
)


def _refuse_download(*args: object, **kwargs: object) -> None:
    raise RuntimeError("network disabled in tests")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never download, and never see the user's SEELIKE_DATA or cache."""
    monkeypatch.setattr(data, "_torchvision_download", _refuse_download)
    monkeypatch.delenv("SEELIKE_DATA", raising=False)
    monkeypatch.setenv("SEELIKE_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ Fashion-MNIST


@needs_fashion_mnist
def test_fashion_mnist_test_split() -> None:
    ds = load_dataset("fashion-mnist")
    assert len(ds) == 10_000 and ds.split == "test" and ds.spec == "fashion-mnist"
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10 and ds.classes == FASHION_MNIST_CLASSES
    assert ds.labels.dtype == torch.long and ds.labels.bincount().tolist() == [1000] * 10
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and isinstance(label, int)
    batch = ds.images(torch.arange(500))
    assert batch.shape == (500, 1, 28, 28) and batch.min() >= 0 and batch.max() <= 1 and batch.max() > 0.9
    assert torch.equal(batch[0], image) and label == int(ds.labels[0])


@needs_fashion_mnist
def test_fashion_mnist_train_fraction_balanced_deterministic() -> None:
    full = load_dataset("fashion-mnist", split="train")
    assert len(full) == 60_000
    a = load_dataset("fashion-mnist", split="train", fraction=0.1, seed=0)
    b = load_dataset("fashion-mnist", split="train", fraction=0.1, seed=0)
    c = load_dataset("fashion-mnist", split="train", fraction=0.1, seed=1)
    assert a.labels.bincount().tolist() == [600] * 10
    assert a.fraction == 0.1 and a.seed == 0 and c.seed == 1
    assert torch.equal(a.source_indices, b.source_indices)
    assert not torch.equal(a.source_indices, c.source_indices)
    assert torch.all(a.source_indices[1:] > a.source_indices[:-1])  # sorted, no repeats
    assert torch.equal(a.labels, full.labels[a.source_indices])
    assert torch.equal(a.images([5]), full.images([int(a.source_indices[5])]))
    small = load_dataset("fashion-mnist", split="train", fraction=0.03, seed=0)
    assert small.labels.bincount().tolist() == [180] * 10
    assert set(small.source_indices.tolist()) <= set(a.source_indices.tolist())  # nested


@needs_fashion_mnist
def test_fashion_mnist_from_seelike_data_and_resize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(data.SYSTEM_FASHION_MNIST / name)
    monkeypatch.setenv("SEELIKE_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", image_size=32)
    assert ds.source == str(folder)
    assert ds.image_shape == (1, 32, 32) and ds[0][0].shape == (1, 32, 32)
    assert 0 <= ds[0][0].min() and ds[0][0].max() <= 1


def test_read_idx_roundtrip_and_bad_file(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\0\0\x08\x03" + np.array([2, 3, 4], ">i4").tobytes() + array.tobytes())
    assert np.array_equal(read_idx(path), array)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataNotFoundError, match="not an IDX file"):
        read_idx(bad)


def test_fashion_mnist_missing_error_names_all_remedies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("SEELIKE_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    for words in ("apt-get install dataset-fashion-mnist", "SEELIKE_DATA=", "network", "nowhere", "empty", "cache"):
        assert words in message


def test_cifar10_missing_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEELIKE_DATA", str(tmp_path / "mine"))
    with pytest.raises(DataNotFoundError, match=r"SEELIKE_DATA=.*network") as info:
        load_dataset("cifar10", split="train")
    assert "mine" in str(info.value) and "apt-get" not in str(info.value)


# -------------------------------------------------------------------------------------------------- imagefolder


def _write_png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_val_split_resize_crop(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_png(root / "val" / "cat" / "a.png", (40, 20), (255, 0, 0))
    _write_png(root / "val" / "cat" / "b.png", (20, 30), (255, 0, 0))
    _write_png(root / "val" / "dog" / "c.png", (16, 16), (0, 0, 255))
    Image.new("L", (24, 24), 128).save(root / "val" / "dog" / "gray.png")
    (root / "val" / "dog" / "notes.txt").write_text("not an image")
    _write_png(root / "train" / "cat" / "t.png", (16, 16), (0, 255, 0))
    _write_png(root / "train" / "dog" / "u.png", (16, 16), (0, 255, 0))

    ds = load_dataset(f"imagefolder:{root}", image_size=12)
    assert ds.spec == f"imagefolder:{root.resolve()}" and ds.source == str(root.resolve() / "val")
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1] and len(ds) == 4
    assert ds.image_shape == (3, 12, 12)
    batch = ds.images([0, 1, 2, 3])
    assert batch.shape == (4, 3, 12, 12) and batch.dtype == torch.float32
    assert torch.allclose(batch[0], torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 12, 12))
    assert torch.allclose(batch[2, 2], torch.ones(12, 12)) and torch.allclose(batch[3], torch.full((3, 12, 12), 128 / 255))
    train = load_dataset(f"imagefolder:{root}", split="train", image_size=8)
    assert len(train) == 2 and train[0][0].shape == (3, 8, 8) and torch.allclose(train[0][0][1], torch.ones(8, 8))
    assert load_dataset(f"imagefolder:{root}").image_shape == (3, 224, 224)  # the default eval size


def test_load_image_resize_then_centre_crop(tmp_path: Path) -> None:
    path = tmp_path / "stripes.png"
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, 16:48] = 255  # white centre half, black sides
    Image.fromarray(array).save(path)
    image = data.load_image(path, 14)  # shorter side 16 -> 16 x 32, crop the middle 14 x 14: all white
    assert image.shape == (3, 14, 14) and image[:, :, 3:11].min() > 0.99


def test_imagefolder_flat_and_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_png(tmp_path / "flat" / "a" / "x.jpg", (8, 8), (1, 2, 3))
    _write_png(tmp_path / "flat" / "b" / "sub" / "y.png", (8, 8), (1, 2, 3))
    ds = load_dataset("imagefolder:~/flat", image_size=8)
    assert ds.spec == f"imagefolder:{(tmp_path / 'flat').resolve()}" and ds.labels.tolist() == [0, 1]


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="not a folder.*PATH/<class>/<image files>"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no images.*PATH/<class>"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    _write_png(tmp_path / "onlyval" / "val" / "a" / "x.png", (8, 8), (0, 0, 0))
    with pytest.raises(DataNotFoundError, match="has val/ but no train/"):
        load_dataset(f"imagefolder:{tmp_path / 'onlyval'}", split="train")


# ---------------------------------------------------------------------------------------------------- synthetic


def test_synthetic_defaults_and_determinism() -> None:
    ds = load_dataset("synthetic")
    assert ds.spec == "synthetic:n=256,size=28,channels=1,classes=10,seed=0" == dataset_spec_string("synthetic")
    assert len(ds) == 256 and ds.image_shape == (1, 28, 28) and ds.labels.bincount().tolist() == [26] * 6 + [25] * 4
    again = load_dataset("synthetic:seed=0")
    images = ds.images(range(256))
    assert torch.equal(images, again.images(range(256)))
    assert images.min() >= 0 and images.max() <= 1 and images.dtype == torch.float32
    assert not torch.equal(images, load_dataset("synthetic", split="train").images(range(256)))
    assert not torch.equal(images, load_dataset("synthetic:seed=1").images(range(256)))
    # classes differ more between than within: class means are far apart relative to the noise
    means = torch.stack([images[ds.labels == k].mean(0) for k in range(10)]).flatten(1)
    assert torch.cdist(means, means).fill_diagonal_(1e9).min() > 1.0


def test_synthetic_same_in_another_process() -> None:
    spec = "synthetic:n=6,size=9,channels=3,classes=3,seed=7"
    code = f"from seelike.data import load_dataset; print(load_dataset({spec!r}).images(range(6)).sum().item())"
    src = str(Path(data.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src})
    assert out.returncode == 0, out.stderr
    ds = load_dataset(spec)
    assert ds.image_shape == (3, 9, 9) and ds.num_classes == 3
    assert float(out.stdout) == pytest.approx(ds.images(range(6)).sum().item(), rel=1e-6)


def test_synthetic_options_and_resize() -> None:
    ds = load_dataset("synthetic:classes=4, n=8,size=16", image_size=20)
    assert ds.spec == "synthetic:n=8,size=16,channels=1,classes=4,seed=0" and ds.image_shape == (1, 20, 20)
    assert ds[0][0].shape == (1, 20, 20) and ds.classes == ["class_0", "class_1", "class_2", "class_3"]
    with pytest.raises(InvalidInputError, match="n, size, channels, classes, seed"):
        load_dataset("synthetic:width=3")
    with pytest.raises(InvalidInputError, match="integer"):
        load_dataset("synthetic:n=many")
    with pytest.raises(InvalidInputError, match="at least 1"):
        load_dataset("synthetic:classes=0")


# ------------------------------------------------------------------------------------------- specs and subsets


def test_spec_and_split_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"known forms: fashion-mnist, cifar10, imagefolder:PATH, synthetic"):
        load_dataset("imagenet")
    with pytest.raises(InvalidInputError, match="known forms"):
        load_dataset("imagefolder:")
    with pytest.raises(InvalidInputError, match="'train', 'test'"):
        load_dataset("synthetic", split="validation")
    assert dataset_spec_string("Fashion-MNIST") == "fashion-mnist" and dataset_spec_string("CIFAR-10") == "cifar10"


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), "0.5"])
def test_fraction_out_of_range(fraction: object) -> None:
    with pytest.raises(InvalidInputError, match="0 < fraction <= 1"):
        load_dataset("synthetic", fraction=fraction)  # type: ignore[arg-type]


def test_fraction_keeps_at_least_one_per_class() -> None:
    ds = load_dataset("synthetic:n=40,classes=4", fraction=0.01, seed=3)
    assert sorted(ds.labels.tolist()) == [0, 1, 2, 3] and ds.fraction == 0.01 and ds.seed == 3
    full = load_dataset("synthetic:n=40,classes=4")
    assert torch.equal(ds.images(range(4)), full.images(ds.source_indices))


# ------------------------------------------------------------------------------------------------------ batches


def _sizes(total: int, batch_size: int, **kwargs: object) -> list[int]:
    ds = load_dataset(f"synthetic:n={total},size=4")
    return [len(labels) for _, labels, _ in iterate_batches(ds, batch_size, **kwargs)]  # type: ignore[arg-type]


def test_batch_remainders_merged() -> None:
    assert _sizes(10, 4) == [4, 6]
    assert _sizes(9, 4) == [4, 5]
    assert _sizes(12, 4) == [4, 4, 4]
    assert _sizes(13, 5) == [5, 8]
    assert _sizes(14, 5) == [5, 5, 4]
    assert _sizes(5, 8) == [5]
    assert _sizes(10, 4, min_batch=2) == [4, 4, 2]
    assert num_batches(10, 4) == 1 + 1 and num_batches(14, 5) == 3 and num_batches(4, 4) == 1
    with pytest.raises(InvalidInputError, match="at least min_batch=4"):
        _sizes(3, 4)
    with pytest.raises(InvalidInputError, match="batch_size must be an integer >= min_batch=4"):
        _sizes(10, 2)


def test_batches_cover_each_index_once() -> None:
    ds = load_dataset("synthetic:n=50,size=6,channels=3")
    batches = iterate_batches(ds, 8, n=30, shuffle=True, seed=5)
    assert len(batches) == 4 and batches.num_examples == 30
    seen = []
    for images, labels, indices in batches:
        assert images.shape == (len(indices), 3, 6, 6) and len(labels) == len(indices) >= 4
        assert torch.equal(labels, ds.labels[indices]) and torch.equal(images[0], ds[int(indices[0])][0])
        seen += indices.tolist()
    assert len(seen) == len(set(seen)) == 30 and seen != sorted(seen) and max(seen) < 50
    again = [i for _, _, idx in iterate_batches(ds, 8, n=30, shuffle=True, seed=5) for i in idx.tolist()]
    assert again == seen
    first = [i for _, _, idx in iterate_batches(ds, 8, n=30) for i in idx.tolist()]
    assert first == list(range(30))
    everything = [i for _, _, idx in iterate_batches(ds, 16) for i in idx.tolist()]
    assert everything == list(range(50))


def test_batches_n_too_large_and_plain_dataset() -> None:
    ds = load_dataset("synthetic:n=20,size=4")
    with pytest.raises(InvalidInputError, match="n=21 .* has 20 examples"):
        iterate_batches(ds, 4, n=21)
    plain = torch.utils.data.TensorDataset(torch.rand(9, 1, 2, 2), torch.arange(9))
    sizes = [(len(x), y.tolist()) for x, y, _ in iterate_batches(plain, 4)]
    assert sizes == [(4, [0, 1, 2, 3]), (5, [4, 5, 6, 7, 8])]


def test_an_image_folder_is_sampled_class_balanced_reading_only_the_images_it_uses(tmp_path, monkeypatch):
    from PIL import Image

    from seelike import data as data_module

    for k, count in enumerate((30, 12, 5)):  # unequal classes, as real folders are
        (tmp_path / f"class{k}").mkdir()
        for i in range(count):
            Image.new("RGB", (8, 8), (10 * k, i, 0)).save(tmp_path / f"class{k}" / f"{i}.png")
    dataset = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    order = iterate_batches(dataset, 4, n=12, shuffle=True, seed=3).order
    assert torch.bincount(dataset.labels[order], minlength=3).tolist() == [4, 4, 4]
    assert torch.equal(order, iterate_batches(dataset, 4, n=12, shuffle=True, seed=3).order)  # every rank, every run
    big = iterate_batches(dataset, 4, n=30, shuffle=True, seed=3).order  # class 2 runs out: the others fill in
    assert torch.bincount(dataset.labels[big], minlength=3).tolist() == [13, 12, 5] and len(set(big.tolist())) == 30
    read = []
    monkeypatch.setattr(data_module, "load_image", lambda path, size: read.append(path) or torch.zeros(3, size, size))
    for _ in iterate_batches(dataset, 4, n=12, shuffle=True, seed=3):
        pass
    assert len(read) == 12  # not one image more than the sample
