"""Image data sets as in-memory uint8 tensors, and a fast batch iterator for training loops.

Loaders for Fashion-MNIST (IDX files), CIFAR-10 (python pickle batches) and image folders all
return `ImageSet`s; `load_data` picks the data set, holds out a validation split and computes
the normalization statistics; `Batches` yields normalized, augmented, DDP-sharded batches.

    >>> data = load_data("builtin", val_size=500)          # or load_data(None, "~/cifar")
    >>> len(data.train), len(data.val), len(data.test)
    (5500, 500, 1000)
    >>> batches = Batches(data.train, 128, mean=data.mean, std=data.std, shuffle=True,
    ...                   augment=True, seed=0)
    >>> batches.set_epoch(3)
    >>> x, y = next(iter(batches))                           # float32 128x1x28x28, int64 128
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from proxyless.errors import ProxylessError

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 1.26
    from numpy.core.multiarray import _reconstruct, scalar

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
DATA_NAMES = ("auto", "builtin", "fashion-mnist", "cifar10", "imagefolder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_FASHION_FILES = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
_INSTALL_HINT = "pass --data-dir DIR, or run `apt-get install dataset-fashion-mnist`"
_LAYOUTS = ("the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...); "
            "CIFAR-10 python batches (data_batch_1..5, test_batch, or a cifar-10-batches-py "
            "folder); or an image folder (DIR/<class>/*.png|jpg|jpeg|bmp, optionally split "
            "into DIR/train/<class>/ and DIR/test/<class>/)")


@dataclass
class ImageSet:
    """Images (uint8, N x C x H x W, contiguous) with int64 labels indexing `classes`."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 N x C x H x W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"need {len(self.images)} labels, got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[2]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes)


@dataclass
class DataSplits:
    """Train / optional validation / test sets with the train split's per-channel stats."""

    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    name: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _image_set(images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
               where: Path) -> ImageSet:
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ProxylessError(f"{where}: labels range {labels.min()}..{labels.max()}, expected "
                             f"0..{len(classes) - 1} for {len(classes)} classes")
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels),
                    tuple(classes))


# ---------------------------------------------------------------------------- Fashion-MNIST

def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (raw or gzipped, detected by its magic bytes) as an array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ProxylessError(f"cannot read IDX file {path}: {exc}; re-download it") from exc
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ProxylessError(f"{path} is not a uint8 IDX file: it starts with {raw[:4].hex(' ')}"
                             ", expected 00 00 08 <ndim>")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise ProxylessError(f"{path}: IDX header truncated (expected {header} bytes, got "
                             f"{len(raw)}); re-download the file")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    expected, got = math.prod(dims), len(raw) - header
    if got != expected:
        raise ProxylessError(f"{path}: truncated or corrupt IDX file of shape {dims}: expected "
                             f"{expected} data bytes, got {got}; re-download the file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    return next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)


def _has_fashion_files(directory: Path) -> bool:
    return all(_find_idx(directory, s) for pair in _FASHION_FILES for s in pair)


def load_fashion_mnist(directory: Path) -> tuple[ImageSet, ImageSet]:
    """(train, test) from a folder with the four Fashion-MNIST IDX files; images N x 1 x H x W."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ProxylessError(f"Fashion-MNIST folder {directory} does not exist")
    stems = [s for pair in _FASHION_FILES for s in pair]
    missing = [s for s in stems if _find_idx(directory, s) is None]
    if missing:
        raise ProxylessError(f"{directory} lacks {', '.join(missing)}; a Fashion-MNIST folder "
                             f"needs the four IDX files {', '.join(stems)} (each raw or .gz)")
    sets = []
    for image_stem, label_stem in _FASHION_FILES:
        image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise ProxylessError(f"{image_path} / {label_path}: expected N x H x W images and N "
                                 f"labels, got shapes {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise ProxylessError(f"{image_path} holds {len(images)} images but {label_path} "
                                 f"holds {len(labels)} labels; the counts must match")
        sets.append(_image_set(images[:, None], labels, FASHION_CLASSES, label_path))
    return sets[0], sets[1]


def load_builtin() -> tuple[ImageSet, ImageSet]:
    """The shipped Fashion-MNIST subset: 6,000 train and 1,000 test images, class-balanced."""
    with resources.as_file(resources.files("proxyless") / "builtin_data") as directory:
        return load_fashion_mnist(Path(directory))


# ---------------------------------------------------------------------------------- CIFAR-10

# Exactly what a pickled numpy array needs: an allowlist, so a hostile file cannot run code.
_SAFE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                 ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                 ("numpy.core.multiarray", "scalar"): scalar,
                 ("numpy._core.multiarray", "scalar"): scalar,
                 ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                 ("_codecs", "encode"): codecs.encode}  # how Python 3 protocol 2 writes bytes


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            obj = _ArrayUnpickler(file, encoding="bytes").load()
    # Unpickling damaged or hostile data can raise nearly any exception type.
    except Exception as exc:
        raise ProxylessError(f"cannot load CIFAR-10 batch {path}: {exc}; expected the "
                             "python version of CIFAR-10 (cifar-10-python.tar.gz)") from exc
    if not isinstance(obj, dict):
        raise ProxylessError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data, labels = batch.get("data"), np.asarray(batch.get("labels", []))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,) \
            or labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ProxylessError(f"{path}: expected 'data' (uint8 N x 3072) and N integer 'labels'")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(directory: Path) -> tuple[ImageSet, ImageSet]:
    """(train, test) from CIFAR-10 python batches: data_batch_1[..5], test_batch, batches.meta."""
    directory = Path(directory).expanduser()
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if not (directory / "data_batch_1").is_file() or not (directory / "test_batch").is_file():
        raise ProxylessError(f"{directory} is not a CIFAR-10 folder: expected data_batch_1 (to "
                             "data_batch_5) and test_batch, from cifar-10-python.tar.gz")
    classes: Sequence[str] = CIFAR10_CLASSES
    if (directory / "batches.meta").is_file():
        names = _unpickle(directory / "batches.meta").get("label_names")
        if isinstance(names, list | tuple) and names:
            classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                       for n in names]
    parts = [_cifar_batch(directory / f"data_batch_{i}") for i in range(1, 6)
             if (directory / f"data_batch_{i}").is_file()]
    train = _image_set(np.concatenate([p[0] for p in parts]),
                       np.concatenate([p[1] for p in parts]), classes, directory)
    return train, _image_set(*_cifar_batch(directory / "test_batch"), classes, directory)


# ------------------------------------------------------------------------------ image folder

def _class_dirs(directory: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every visible subfolder."""
    try:
        return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                for d in sorted(directory.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    except OSError as exc:
        raise ProxylessError(f"cannot list image folder {directory}: {exc}") from exc


def _read_images(directory: Path, size: int, channels: int) -> ImageSet:
    from PIL import Image

    classes = _class_dirs(directory)
    if not classes:
        raise ProxylessError(f"{directory} has no class subfolders; expected {directory}/<class>/"
                             f"*{'|'.join(IMAGE_SUFFIXES)}")
    images = np.empty((sum(map(len, classes.values())), size, size, channels), np.uint8)
    labels, i = [], 0
    for label, (name, files) in enumerate(classes.items()):
        if not files:
            raise ProxylessError(f"class folder {directory / name} holds no images "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as image:
                    image = image.convert("L" if channels == 1 else "RGB")
                    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise ProxylessError(f"cannot read image {file}: {exc}") from exc
            images[i] = pixels.reshape(size, size, channels)
            labels.append(label)
            i += 1
    return _image_set(images.transpose(0, 3, 1, 2), np.array(labels), list(classes), directory)


def load_image_folder(directory: Path, size: int, channels: int) -> tuple[ImageSet, ImageSet]:
    """(train, test) from DIR/train/<class>/ + DIR/test/<class>/, or DIR/<class>/ (seeded 10%
    class-balanced test hold-out); images resized to size x size, 1 (L) or 3 (RGB) channels."""
    directory = Path(directory).expanduser()
    if channels not in (1, 3):
        raise ProxylessError(f"image folders load as 1 (grayscale) or 3 (RGB) channels, "
                             f"not {channels}")
    if not directory.is_dir():
        raise ProxylessError(f"image folder {directory} does not exist")
    train_dir, test_dir = directory / "train", directory / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        raise ProxylessError(f"{directory} has only one of train/ and test/; give both, or put "
                             "the class folders directly in it")
    if not train_dir.is_dir():
        return _holdout(_read_images(directory, size, channels), 0.1, 0, "test")
    train, test = (_read_images(d, size, channels) for d in (train_dir, test_dir))
    if train.classes != test.classes:
        raise ProxylessError(f"{train_dir} and {test_dir} must have the same class folders: "
                             f"{list(train.classes)} vs {list(test.classes)}")
    return train, test


# ------------------------------------------------------------------------- splits and stats

def _holdout(data: ImageSet, size: int | float, seed: int,
             what: str) -> tuple[ImageSet, ImageSet]:
    size = size.item() if isinstance(size, np.integer | np.floating) else size
    labels = data.labels.numpy()
    present = np.unique(labels)
    counts = np.bincount(labels, minlength=len(data.classes))
    if not len(present):
        raise ProxylessError(f"cannot hold out a {what} set: the training split is empty")
    if isinstance(size, bool) or not isinstance(size, int | float) or size < 0 \
            or (isinstance(size, float) and size >= 1):
        raise ProxylessError(f"{what} size {size!r}: expected an image count (int >= 0) or a "
                             "fraction in [0, 1)")
    if isinstance(size, int):  # a total, spread evenly over classes, remainder to the first
        base, extra = divmod(size, len(present))
        take = {c: base + (i < extra) for i, c in enumerate(present)}
    else:  # a fraction of every class, at least one image each
        take = {c: max(1, round(size * counts[c])) for c in present}
    for c, k in take.items():
        if k >= counts[c]:
            raise ProxylessError(f"{what} size {size!r} takes {k} of the {counts[c]} training "
                                 f"images of class {data.classes[c]!r}, leaving none to train "
                                 f"on; use a smaller {what} size")
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k]
                           for c, k in take.items()])
    keep = np.setdiff1d(np.arange(len(data)), held)
    return data.subset(keep), data.subset(np.sort(held))


def split_validation(train: ImageSet, val_size: int | float,
                     seed: int = 0) -> tuple[ImageSet, ImageSet | None]:
    """Hold a seeded, class-balanced validation set out of `train`: an int is a total count
    (spread evenly over classes), a float in (0, 1) a per-class fraction; 0 -> no val set."""
    if not isinstance(val_size, bool) and val_size == 0:
        return train, None
    return _holdout(train, val_size, seed, "validation")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 N x C x H x W images, exact in float64."""
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255
    for c in range(images.shape[1]):
        # A histogram makes the float64 statistics exact without a float copy of the data.
        hist = np.bincount(images[:, c].numpy().ravel(), minlength=256).astype(np.float64)
        mean = float(hist @ values / hist.sum())
        std = math.sqrt(float(hist @ (values - mean) ** 2 / hist.sum()))
        means.append(mean)
        stds.append(std if std > 0 else 1.0)  # constant images: avoid dividing by zero
    return tuple(means), tuple(stds)


# ----------------------------------------------------------------------------------- load_data

def _detect(directory: Path) -> str:
    if not directory.is_dir():
        raise ProxylessError(f"data folder {directory} does not exist")
    if any(_find_idx(directory, s) for pair in _FASHION_FILES for s in pair):
        return "fashion-mnist"
    if (directory / "data_batch_1").is_file() or (directory / "cifar-10-batches-py").is_dir():
        return "cifar10"
    root = directory / "train" if (directory / "train").is_dir() else directory
    if any(files for files in _class_dirs(root).values()):
        return "imagefolder"
    raise ProxylessError(f"cannot tell the data format of {directory}; expected {_LAYOUTS}")


def load_data(data: str | None = None, data_dir: str | Path | None = None, *,
              val_size: int | float = 0.1, seed: int = 0, image_size: int | None = None,
              channels: int | None = None,
              notify: Callable[[str], None] | None = print) -> DataSplits:
    """Load a data set by name or path, hold out validation, and compute train statistics."""
    name = "auto" if data is None else data
    directory = Path(data_dir).expanduser() if data_dir is not None else None
    if name not in DATA_NAMES:
        if not Path(name).expanduser().exists():
            raise ProxylessError(f"unknown data set {name!r}: expected one of "
                                 f"{', '.join(DATA_NAMES)}, or the path of a data folder")
        if directory is not None and directory != Path(name).expanduser():
            raise ProxylessError(f"data path {name!r} and data dir {str(directory)!r} differ; "
                                 "give the folder once")
        name, directory = "auto", Path(name).expanduser()
    if name == "auto":
        if directory is not None:
            name = _detect(directory)
        elif _has_fashion_files(DEBIAN_FASHION_DIR):
            name, directory = "fashion-mnist", DEBIAN_FASHION_DIR
        else:
            name = "builtin"
    if name == "fashion-mnist" and directory is None:
        if not _has_fashion_files(DEBIAN_FASHION_DIR):
            raise ProxylessError(f"no Fashion-MNIST files in {DEBIAN_FASHION_DIR}; "
                                 f"{_INSTALL_HINT}, or use the built-in subset (data 'builtin')")
        directory = DEBIAN_FASHION_DIR
    if name in ("cifar10", "imagefolder") and directory is None:
        raise ProxylessError(f"data {name!r} needs the folder that holds it: pass --data-dir DIR")

    if name == "builtin":
        (train, test), source = load_builtin(), "built-in"
        label = f"the built-in {len(train):,}-image Fashion-MNIST subset"
    elif name == "fashion-mnist":
        (train, test), label = load_fashion_mnist(directory), "Fashion-MNIST"
    elif name == "cifar10":
        (train, test), label = load_cifar10(directory), "CIFAR-10"
    else:
        train, test = load_image_folder(directory, image_size or 32, channels or 3)
        label = f"image folder, {len(train.classes)} classes"
    if name != "builtin":
        source = str(directory)
    if channels is not None and channels != train.channels:
        c, s = train.channels, train.size
        raise ProxylessError(f"data {name!r} from {source} has {c}x{s}x{s} images (channels x "
                             f"height x width) but the search space expects {channels} "
                             f"channel(s); use a space with {c} input channel(s) or other data")
    if notify is not None:
        counts = f"({len(train):,} train / {len(test):,} test)"
        notify(f"data: {label} {counts} from {source}" if name != "builtin" else
               f"data: {label} {counts}; for the full data set {_INSTALL_HINT}")
    train, val = split_validation(train, val_size, seed)
    mean, std = channel_stats(train.images)
    return DataSplits(train, val, test, "fashion-mnist-builtin" if name == "builtin" else name,
                      source, mean, std)


# ------------------------------------------------------------------------------------ Batches

class Batches:
    """Iterate (x, y) float batches of an ImageSet: normalized, optionally augmented, shuffled
    per epoch with a seed, sharded across DDP ranks."""

    def __init__(self, data: ImageSet, batch_size: int, *, mean: Sequence[float],
                 std: Sequence[float], shuffle: bool, augment: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 image_size: int | None = None, device: torch.device | str = "cpu",
                 pad: bool = True) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size} / rank={rank} / world={world_size}")
        if len(mean) != data.channels or len(std) != data.channels:
            raise ValueError(f"mean/std need {data.channels} values, got {len(mean)}/{len(std)}")
        self.data, self.batch_size, self.shuffle, self.augment = data, batch_size, shuffle, augment
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.image_size, self.device, self.epoch = image_size, torch.device(device), 0
        inv_std = 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-subtract, done on the device.
        self._scale = (inv_std / 255).to(self.device)
        self._shift = (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * inv_std
                       ).to(self.device)
        # Training pads by wrap-around so every rank runs the same number of steps (as
        # DistributedSampler); evaluation (pad=False) splits exactly, so no image counts twice.
        self.pad = pad
        self.samples = (math.ceil(len(data) / world_size) if pad
                        else len(range(rank, len(data), world_size)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.samples // self.batch_size
        return math.ceil(self.samples / self.batch_size)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.data)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if not self.pad:
            return order[self.rank::self.world_size]
        total = self.samples * self.world_size
        if total > n:  # every rank gets the same count, as DistributedSampler does
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank:total:self.world_size]

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop from a zero-padded image plus random horizontal flip, per sample."""
        b, c, h, w = x.shape
        pad = 4 if min(h, w) >= 28 else 2
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
        flip = torch.rand(b, 1, generator=generator) < 0.5
        rows = dy + torch.arange(h)
        cols = dx + torch.where(flip, torch.arange(w - 1, -1, -1), torch.arange(w))
        # One flat gather per sample is ~3x faster than 4-D advanced indexing.
        flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w)
        return padded.view(b, c, -1).gather(2, flat.expand(b, c, h * w)).view(b, c, h, w)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        base = self.seed * 1_000_003 + self.epoch
        order = self._order(torch.Generator().manual_seed(base))
        # Ranks share the permutation but must not share crop/flip draws.
        aug_generator = torch.Generator().manual_seed(base * 1_009 + self.rank)
        size = self.data.size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            x = self.data.images[index]
            if self.augment:
                x = self._augment(x, aug_generator)
            # Ship uint8 (4x fewer bytes than float) and normalize on the device.
            x = x.to(self.device, non_blocking=True).float().mul_(self._scale).sub_(self._shift)
            if self.image_size is not None and self.image_size != size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False)
            yield x, self.data.labels[index].to(self.device, non_blocking=True)
