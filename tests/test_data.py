"""Tests for proxyless.data: loaders, validation split, statistics and the batch iterator."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from proxyless import data as D
from proxyless.data import (
    Batches,
    ImageSet,
    load_builtin,
    load_cifar10,
    load_data,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    split_validation,
)
from proxyless.errors import ProxylessError

FASHION = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    """Write a uint8 IDX file; gzipped when `gz` (default: when the name ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    if gz if gz is not None else path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def make_fashion(directory: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (images, labels), n in zip(FASHION, (n_train, n_test), strict=True):
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{images}{suffix}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{labels}{suffix}", np.arange(n) % 10)
    return directory


def tiny(n: int = 40, classes: int = 4, channels: int = 1, size: int = 8) -> ImageSet:
    images = torch.arange(n * channels * size * size).remainder(251).to(torch.uint8)
    images = images.view(n, channels, size, size)
    images[:, :, 0, 0] = torch.arange(n, dtype=torch.uint8)[:, None]  # a per-sample fingerprint
    return ImageSet(images, torch.arange(n) % classes, tuple(f"c{i}" for i in range(classes)))


# ------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte", "x-gz-without-suffix"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(1).integers(0, 256, (5, 3, 4))
    path = write_idx(tmp_path / name, array, gz=not name.endswith("ubyte"))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    path = tmp_path / "t.idx"
    raw = write_idx(path, np.zeros((4, 5, 5)), gz=False).read_bytes()[:-7]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ProxylessError, match="expected 100 data bytes, got 93") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    path.write_bytes(gzip.compress(raw)[:-10])  # a cut-off gzip stream
    with pytest.raises(ProxylessError, match=str(path)):
        read_idx(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 12)
    with pytest.raises(ProxylessError, match="not a uint8 IDX file"):
        read_idx(path)
    with pytest.raises(ProxylessError, match="cannot read"):
        read_idx(tmp_path / "missing")


# --------------------------------------------------------------------------- Fashion-MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist(tmp_path, gz):
    train, test = load_fashion_mnist(make_fashion(tmp_path, gz=gz))
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.classes == D.FASHION_CLASSES and train.channels == 1 and train.size == 28


def test_fashion_missing_file(tmp_path):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ProxylessError) as err:
        load_fashion_mnist(tmp_path)
    message = str(err.value)
    assert "lacks t10k-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" in message


def test_fashion_count_mismatch_and_label_range(tmp_path):
    make_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39))
    with pytest.raises(ProxylessError, match="40 images but .* 39 labels"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(40, 10))
    with pytest.raises(ProxylessError, match="labels range 10..10"):
        load_fashion_mnist(tmp_path)


def test_builtin_is_balanced():
    train, test = load_builtin()
    assert train.images.shape == (6000, 1, 28, 28) and len(test) == 1000
    assert torch.bincount(train.labels).tolist() == [600] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10


# -------------------------------------------------------------------------------- CIFAR-10

def write_cifar(directory: Path, batches: int = 2, n: int = 12) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [*(f"data_batch_{i}" for i in range(1, batches + 1)), "test_batch"]
    for name in names:
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


def test_cifar10(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    for directory in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, test = load_cifar10(directory)
        assert train.images.shape == (24, 3, 32, 32) and test.images.shape == (12, 3, 32, 32)
        assert train.classes[3] == "class3" and train.labels.tolist()[:3] == [0, 1, 2]
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_2").read_bytes())
    assert torch.equal(train.images[12:].reshape(12, -1), torch.from_numpy(raw[b"data"]))


def test_cifar10_numpy1_style_pickle(tmp_path):
    """The real files name numpy.core.multiarray (numpy 1), not numpy._core."""
    write_cifar(tmp_path, batches=1)
    path = tmp_path / "data_batch_1"
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_cifar10(tmp_path)[0].images.shape == (12, 3, 32, 32)


def test_cifar10_str_keys_and_missing(tmp_path):
    write_cifar(tmp_path, batches=1)
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 9]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    assert len(load_cifar10(tmp_path)[1]) == 2
    (tmp_path / "test_batch").unlink()
    with pytest.raises(ProxylessError, match="test_batch"):
        load_cifar10(tmp_path)


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


def test_cifar10_rejects_malicious_pickle(tmp_path):
    write_cifar(tmp_path, batches=1)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(ProxylessError, match="data_batch_1.*refusing to load global"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(ProxylessError, match="data_batch_1"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------------------- image folder

def write_pngs(directory: Path, per_class: int = 10, classes=("cat", "dog")) -> Path:
    for c, name in enumerate(classes):
        (directory / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((6, 9, 3), 40 * c + i, np.uint8)
            Image.fromarray(pixels).save(directory / name / f"{i}.png")
    return directory


def test_image_folder_flat_layout(tmp_path):
    train, test = load_image_folder(write_pngs(tmp_path), size=12, channels=3)
    assert train.images.shape == (18, 3, 12, 12) and test.images.shape == (2, 3, 12, 12)
    assert train.classes == ("cat", "dog") and test.labels.tolist() == [0, 1]
    gray, _ = load_image_folder(tmp_path, size=5, channels=1)
    assert gray.images.shape == (18, 1, 5, 5)


def test_image_folder_split_layout(tmp_path):
    write_pngs(tmp_path / "train", per_class=3)
    write_pngs(tmp_path / "test", per_class=2)
    train, test = load_image_folder(tmp_path, size=8, channels=3)
    assert len(train) == 6 and len(test) == 4 and test.classes == ("cat", "dog")
    (tmp_path / "test" / "cow").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "test" / "cow" / "0.jpg")
    with pytest.raises(ProxylessError, match="same class folders"):
        load_image_folder(tmp_path, size=8, channels=3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ProxylessError, match="no class subfolders"):
        load_image_folder(tmp_path, size=8, channels=3)
    write_pngs(tmp_path)
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ProxylessError, match=f"cannot read image {bad}"):
        load_image_folder(tmp_path, size=8, channels=3)


# ------------------------------------------------------------------ load_data and splitting

def test_load_data_builtin_val_split():
    lines = []
    splits = load_data("builtin", val_size=500, notify=lines.append)
    # chosen on purpose: no hint to install the full data set
    assert len(lines) == 1 and "built-in" in lines[0] and "apt-get" not in lines[0]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5500, 500, 1000)
    assert torch.bincount(splits.val.labels).tolist() == [50] * 10
    assert splits.name == "fashion-mnist-builtin" and splits.source == "built-in"
    full, _ = load_builtin()
    seen = {bytes(x) for x in full.images.numpy()}
    train_seen = {bytes(x) for x in splits.train.images.numpy()}
    val_seen = {bytes(x) for x in splits.val.images.numpy()}
    assert not train_seen & val_seen and train_seen | val_seen == seen
    pixels = splits.train.images.double() / 255
    assert splits.mean[0] == pytest.approx(pixels.mean().item())
    assert splits.std[0] == pytest.approx(pixels.std(unbiased=False).item())


def test_split_validation_seeded_and_sized():
    data = tiny(40)
    _, a = split_validation(data, 6, seed=0)
    _, b = split_validation(data, 6, seed=0)
    _, c = split_validation(data, 6, seed=1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels).tolist() == [2, 2, 1, 1]
    rest, frac = split_validation(data, 0.2, seed=0)
    assert torch.bincount(frac.labels).tolist() == [2] * 4 and len(rest) == 32
    assert split_validation(data, 0, seed=0) == (data, None)
    assert split_validation(data, 0.0, seed=0)[1] is None
    assert len(split_validation(data, np.int64(4), seed=0)[1]) == 4
    assert torch.equal(split_validation(data, 6.0, seed=0)[1].images, a.images)  # a count
    for bad in (40, 1.5, -1):
        with pytest.raises(ProxylessError, match="validation size"):
            split_validation(data, bad, seed=0)


def test_load_data_auto_branches(tmp_path, monkeypatch):
    # load_data reads DEBIAN_FASHION_DIR from proxyless.data.loading, so patch it there.
    monkeypatch.setattr("proxyless.data.loading.DEBIAN_FASHION_DIR", tmp_path / "debian")
    lines = []
    assert load_data(val_size=0, notify=lines.append).name == "fashion-mnist-builtin"
    assert "apt-get install dataset-fashion-mnist" in lines[-1]  # chosen for the user: hint
    with pytest.raises(ProxylessError, match=str(tmp_path / "debian")):
        load_data("fashion-mnist")
    make_fashion(tmp_path / "debian")
    splits = load_data("auto", val_size=0, notify=lines.append)
    assert splits.name == "fashion-mnist" and splits.source == str(tmp_path / "debian")
    assert lines[-1] == f"data: Fashion-MNIST (40 train / 20 test) from {tmp_path / 'debian'}"
    assert load_data("fashion-mnist", val_size=10, notify=None).val is not None


def test_load_data_detects_path_formats(tmp_path):
    make_fashion(tmp_path / "f")
    write_cifar(tmp_path / "c" / "cifar-10-batches-py")
    write_pngs(tmp_path / "i")
    assert load_data(str(tmp_path / "f"), val_size=0, notify=None).name == "fashion-mnist"
    cifar = load_data(None, tmp_path / "c", val_size=0.1, channels=3, notify=None)
    assert cifar.name == "cifar10" and len(cifar.val) == 10 and len(cifar.mean) == 3
    folder = load_data(None, tmp_path / "i", val_size=2, image_size=16, channels=1, notify=None)
    assert folder.name == "imagefolder" and folder.train.images.shape[1:] == (1, 16, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProxylessError, match="cannot tell the data format.*CIFAR-10"):
        load_data(str(tmp_path / "empty"))
    with pytest.raises(ProxylessError, match="needs the folder"):
        load_data("cifar10")


def test_load_data_errors(tmp_path):
    with pytest.raises(ProxylessError, match="unknown data set 'mnist'.*builtin"):
        load_data("mnist")
    with pytest.raises(ProxylessError, match="has 1x28x28 images.*expects 3 channel"):
        load_data("builtin", channels=3, notify=None)
    # A size-only mismatch is fine: the batches resize.
    assert load_data("builtin", image_size=32, channels=1, notify=None).train.size == 28


# ---------------------------------------------------------------------------------- Batches

def test_batches_shapes_and_normalization():
    train, _ = load_builtin()
    mean, std = D.channel_stats(train.images)
    batches = Batches(train, 512, mean=mean, std=std, shuffle=False, augment=False)
    xs, ys = zip(*batches, strict=True)
    assert len(batches) == len(xs) == 12 and xs[0].shape == (512, 1, 28, 28)
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and torch.equal(torch.cat(ys), train.labels)
    assert abs(x.mean().item()) < 1e-4 and x.std().item() == pytest.approx(1, abs=1e-3)
    resized = Batches(train, 64, mean=mean, std=std, shuffle=True, augment=True, image_size=32,
                      drop_last=True)
    assert len(resized) == 93 and next(iter(resized))[0].shape == (64, 1, 32, 32)


def test_batches_deterministic_per_epoch():
    data = tiny(50, channels=3, size=16)
    def run(epoch, augment=True):
        batches = Batches(data, 8, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                          augment=augment, seed=3)
        batches.set_epoch(epoch)
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    (x1, y1), (x2, y2), (x3, _) = run(1), run(1), run(2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (50, 3, 16, 16)
    plain, _ = run(1, augment=False)
    assert not torch.equal(x1, plain)  # augmented, same order and labels
    assert torch.equal(torch.sort(run(1, augment=False)[1]).values, torch.sort(y1).values)


def test_augment_is_a_shifted_or_flipped_crop():
    image = torch.arange(1, 65, dtype=torch.uint8).view(1, 1, 8, 8).repeat(64, 1, 1, 1)
    data = ImageSet(image, torch.zeros(64, dtype=torch.long), ("a",))
    batches = Batches(data, 64, mean=(0.0,), std=(1 / 255,), shuffle=False, augment=True)
    x = next(iter(batches))[0].round().to(torch.uint8)
    padded = torch.nn.functional.pad(image[0, 0], (2, 2, 2, 2))
    crops = {padded[i:i + 8, j:j + 8].flip(f).numpy().tobytes()
             for i in range(5) for j in range(5) for f in ((), (1,))}
    assert all(sample[0].numpy().tobytes() in crops for sample in x)
    assert len({sample.numpy().tobytes() for sample in x}) > 10


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_ddp_sharding(shuffle):
    data = tiny(45)
    ranks = [Batches(data, 4, mean=(0.0,), std=(1 / 255,), shuffle=shuffle, augment=False,
                     rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 23 samples per rank after padding
    seen = [torch.cat([x[:, 0, 0, 0] for x, _ in r]).round().long().tolist() for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 23
    assert set(seen[0]) | set(seen[1]) == set(range(45))
    assert len(set(seen[0]) & set(seen[1])) == 1  # only the one wrapped-around sample repeats


def test_evaluation_batches_split_exactly_across_ranks():
    data = tiny(45)
    ranks = [Batches(data, 4, mean=(0.0,), std=(1 / 255,), shuffle=False, augment=False,
                     rank=r, world_size=2, pad=False) for r in range(2)]
    seen = [torch.cat([x[:, 0, 0, 0] for x, _ in r]).round().long().tolist() for r in ranks]
    assert (len(seen[0]), len(seen[1])) == (23, 22)
    assert sorted(seen[0] + seen[1]) == list(range(45))  # every image once, none twice
