"""Readers for the on-disk formats, each returning (train, test) `ImageSet`s, and the one place
that tells a folder's format: Fashion-MNIST IDX files (raw or gzipped; the built-in subset is
one), CIFAR-10 python batches (through an allowlisting unpickler) and image folders."""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from proxyless.data.decode import UnreadableImage, squash
from proxyless.data.folder_index import IMAGE_SUFFIXES, FolderIndex, index_folder
from proxyless.data.sets import Images, ImageSet, from_arrays
from proxyless.data.splits import holdout
from proxyless.errors import ProxylessError

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 1.26
    from numpy.core.multiarray import _reconstruct, scalar

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_FASHION_FILES = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
_LAYOUTS = ("the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...); "
            "CIFAR-10 python batches (data_batch_1..5, test_batch, or a cifar-10-batches-py "
            "folder); or an image folder (DIR/<class>/*.jpg|png|..., optionally split "
            "into DIR/train/<class>/ and DIR/val/<class>/ or DIR/test/<class>/)")


# ------------------------------------------------------------------------------- detection

def detect_format(directory: Path) -> str:
    """The data name ("fashion-mnist", "cifar10" or "imagefolder") of the folder's layout."""
    if not directory.is_dir():
        raise ProxylessError(f"data folder {directory} does not exist")
    if any(_find_idx(directory, s) for pair in _FASHION_FILES for s in pair):
        return "fashion-mnist"
    if (directory / "data_batch_1").is_file() or (directory / "cifar-10-batches-py").is_dir():
        return "cifar10"
    root = directory / "train" if (directory / "train").is_dir() else directory
    if _has_class_images(root):
        return "imagefolder"
    raise ProxylessError(f"cannot tell the data format of {directory}; expected {_LAYOUTS}")


def has_fashion_files(directory: Path) -> bool:
    """Whether `directory` holds all four Fashion-MNIST IDX files (each raw or .gz)."""
    return all(_find_idx(directory, s) for pair in _FASHION_FILES for s in pair)


def _has_class_images(root: Path) -> bool:
    """Whether some visible subfolder of `root` holds an image file."""
    try:
        for folder in root.iterdir():
            if folder.is_dir() and not folder.name.startswith(".") and any(
                    f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir()):
                return True
    except OSError as exc:
        raise ProxylessError(f"cannot list data folder {root}: {exc.strerror or exc}") from None
    return False


# ---------------------------------------------------------------------------- Fashion-MNIST

# The largest IDX payload read: full Fashion-MNIST's biggest file holds 47 MB, so a header
# claiming gigabytes is a damaged or hostile file, not data to allocate memory for.
MAX_IDX_BYTES = 2 * 2**30


def _idx_header(stream: BinaryIO, path: Path) -> tuple[int, ...]:
    """The dims of an IDX header (magic 00 00 08 <ndim>, then ndim big-endian uint32)."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
        raise ProxylessError(f"{path} is not a uint8 IDX file: it starts with {magic.hex(' ')}"
                             ", expected 00 00 08 <ndim>")
    raw = stream.read(4 * magic[3])
    if len(raw) < 4 * magic[3]:
        raise ProxylessError(f"{path}: IDX header truncated (expected {4 + 4 * magic[3]} "
                             f"bytes, got {4 + len(raw)}); re-download the file")
    return struct.unpack(f">{magic[3]}I", raw)


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (raw or gzipped, detected by its magic bytes) as an array. Exactly the
    bytes its header announces are read (decompressed), never more: a gzip bomb or a header
    claiming absurd sizes is refused without filling the memory."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            gzipped = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=file) if gzipped else file
            dims = _idx_header(stream, path)
            expected = math.prod(dims)
            if expected > MAX_IDX_BYTES:
                raise ProxylessError(f"{path}: the IDX header claims shape {dims} "
                                     f"({expected / 2**30:.1f} GiB), over the "
                                     f"{MAX_IDX_BYTES // 2**30} GiB limit; the file is damaged "
                                     "or not a data set: re-download it")
            data = stream.read(expected)
            extra = len(stream.read(1))  # decompresses at most one more buffer
    except (OSError, EOFError, zlib.error) as exc:
        raise ProxylessError(f"cannot read IDX file {path}: {exc}; re-download it") from exc
    if len(data) != expected or extra:
        got = f"{len(data)}" if not extra else f"more than {expected}"
        raise ProxylessError(f"{path}: truncated or corrupt IDX file of shape {dims}: expected "
                             f"{expected} data bytes, got {got}; re-download the file")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    return next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)


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
        if not len(images):  # else the first complaint would be about the batch size
            raise ProxylessError(f"{image_path} holds no images (its header gives shape "
                                 f"{images.shape}); {directory} needs the full Fashion-MNIST "
                                 "files: re-download them")
        sets.append(from_arrays(images[:, None], labels, FASHION_CLASSES, label_path))
    return sets[0], sets[1]


def load_builtin() -> tuple[ImageSet, ImageSet]:
    """The shipped Fashion-MNIST subset: 6,000 train and 1,000 test images, class-balanced."""
    # Package data of `proxyless` (src/proxyless/builtin_data/), not a path beside this file.
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
    if not len(data):
        raise ProxylessError(f"CIFAR-10 batch {path} holds no images; re-download "
                             "cifar-10-python.tar.gz")
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
    train = from_arrays(np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]), classes, directory)
    return train, from_arrays(*_cifar_batch(directory / "test_batch"), classes, directory)


# ------------------------------------------------------------------------------ image folder

def folder_layout(directory: Path) -> tuple[Path, Path | None]:
    """(training folder, test folder) of an image folder: DIR/train/ with DIR/val/ or
    DIR/test/ (ImageNet's layout once its val images are sorted into class folders), or DIR
    itself with no test folder (the test set is then held out of it)."""
    if not directory.is_dir():
        raise ProxylessError(f"image folder {directory} does not exist")
    train = directory / "train"
    tests = [directory / n for n in ("val", "test") if (directory / n).is_dir()]
    if len(tests) > 1:
        raise ProxylessError(f"{directory} has both val/ and test/; keep the one to test on "
                             "(or move the other out)")
    if train.is_dir() != bool(tests):
        raise ProxylessError(f"{directory} has only one of train/ and val/ (or test/); give "
                             "both, or put the class folders directly in it")
    return (train, tests[0]) if tests else (directory, None)


def decode_index(index: FolderIndex, size: int, channels: int) -> ImageSet:
    """Every image of `index` decoded now, resized (squashed) to size x size: the in-memory
    path, for small folders of small images."""
    images = np.empty((len(index), size, size, channels), np.uint8)
    for i in range(len(index)):
        try:
            images[i] = squash(index.path(i), size, channels)
        except UnreadableImage as err:
            raise ProxylessError(f"cannot read image {index.path(i)}: {err}; remove or "
                                 "replace the file, or stream the folder (--data-mode "
                                 "stream), which skips unreadable files") from None
    return from_arrays(images.transpose(0, 3, 1, 2), index.labels, list(index.classes),
                       index.root)


def folder_indexes(directory: Path, channels: int) -> tuple[FolderIndex, FolderIndex | None]:
    """The indexes of an image folder's training and test folders (None: the flat layout,
    whose test set is held out of the training folder), checked: 1 or 3 channels, the same
    classes in both."""
    directory = Path(directory).expanduser()
    if channels not in (1, 3):
        raise ProxylessError(f"image folders load as 1 (grayscale) or 3 (RGB) channels, "
                             f"not {channels}")
    train_dir, test_dir = folder_layout(directory)
    train = index_folder(train_dir)
    if len(train.classes) < 2:
        raise ProxylessError(f"{train_dir} has one class folder ({train.classes[0]!r}): a "
                             "classifier needs at least two; add a folder of images for each "
                             "class")
    if test_dir is None:
        return train, None
    test = index_folder(test_dir)
    if train.classes != test.classes:
        raise ProxylessError(f"{train_dir} and {test_dir} must have the same class folders: "
                             f"{list(train.classes)} vs {list(test.classes)}")
    return train, test


def folder_sets(indexes: tuple[FolderIndex, FolderIndex | None],
                make: Callable[[FolderIndex], Images]) -> tuple[Images, Images]:
    """(train, test) made from `folder_indexes` by `make` (decoded into memory, or streamed);
    the flat layout's test set is a seeded, class-balanced 10% of its images."""
    train = make(indexes[0])
    if indexes[1] is None:
        return holdout(train, 0.1, 0, "test")
    return train, make(indexes[1])


def load_image_folder(directory: Path, size: int, channels: int) -> tuple[ImageSet, ImageSet]:
    """(train, test) decoded into memory from DIR/train/<class>/ + DIR/val|test/<class>/, or
    DIR/<class>/ (seeded 10% class-balanced test hold-out); images resized to size x size,
    1 (L) or 3 (RGB) channels."""
    return folder_sets(folder_indexes(directory, channels),
                       lambda index: decode_index(index, size, channels))
