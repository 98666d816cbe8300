"""`load_data`: resolve a data name or path (auto-detected; the system Fashion-MNIST by default,
else the built-in subset), read it, hold out validation and compute the train statistics.

Which path a data set takes (`data_mode`): IDX and CIFAR files are read into memory; an image
folder streams from disk (`proxyless.data.stream`) when the network's input is photo-sized
(>= STREAM_MIN_SIZE px, where random-resized crops of the full image are the recipe) or when
holding it decoded would take more than MEMORY_LIMIT bytes, and is decoded once into memory
otherwise (small folders of small images: no decoding per epoch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxyless.config_io import clip
from proxyless.data.decode import DEFAULT_SCALE, EVAL_CROP
from proxyless.data.formats import (
    decode_index,
    detect_format,
    folder_indexes,
    folder_sets,
    has_fashion_files,
    load_builtin,
    load_cifar10,
    load_fashion_mnist,
)
from proxyless.data.sets import (
    DataSplits,
    Images,
    ImageSet,
    check_channels,
    memory_transform,
    stream_transform,
)
from proxyless.data.splits import split_validation
from proxyless.data.stats import channel_stats
from proxyless.data.stream import FolderSet
from proxyless.errors import ProxylessError

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_NAMES = ("auto", "builtin", "fashion-mnist", "cifar10", "imagefolder")
DATA_MODES = ("auto", "stream", "memory")
STREAM_MIN_SIZE = 64
MEMORY_LIMIT = 2**30
_INSTALL_HINT = "pass --data-dir DIR, or run `apt-get install dataset-fashion-mnist`"


def load_data(data: str | None = None, data_dir: str | Path | None = None, *,
              val_size: int | float = 0.1, seed: int = 0, image_size: int | None = None,
              channels: int | None = None,
              notify: Callable[[str], None] | None = print, data_mode: str = "auto",
              crop_scale: tuple[float, float] = DEFAULT_SCALE,
              workers: int | None = None) -> DataSplits:
    """Load a data set by name or path, hold out validation, and compute train statistics.
    `data_mode` (auto, stream, memory) picks how an image folder is read (module docstring);
    `crop_scale` is the area share of streamed training crops; `workers` the processes that
    decode the images sampled for a streamed folder's statistics (None: the cores)."""
    if data_mode not in DATA_MODES:
        raise ProxylessError(f"--data-mode {data_mode!r}: expected one of {', '.join(DATA_MODES)}")
    _check_scale(crop_scale)
    name, directory = resolve_data(data, data_dir)
    if data_mode == "stream" and name != "imagefolder":
        raise ProxylessError(f"--data-mode stream reads image folders; data {name!r} is read "
                             "into memory (use --data-mode auto or memory)")
    if name == "imagefolder":
        train, test = _read_folder(directory, image_size or 32, channels or 3, data_mode,
                                   tuple(crop_scale))
        label, source = f"image folder, {len(train.classes)} classes", str(directory)
    else:
        train, test, label, source = _read(name, directory)
    streams = isinstance(train, FolderSet)
    for split, images in (("training", train), ("test", test)):
        if not len(images):  # name the data, not the batch size that would fail next
            raise ProxylessError(f"data {name!r} from {clip(source)}: the {split} split holds "
                                 "no images; point --data/--data-dir at a folder with both "
                                 "training and test images")
    if channels is not None:
        check_channels(train, channels, f"data {name!r} from {source}")
    if notify is not None:
        counts = f"({len(train):,} train / {len(test):,} test)"
        if name == "builtin" and data in (None, "auto"):  # chosen for the user, not by them
            notify(f"data: {label} {counts}; for the full data set {_INSTALL_HINT}")
        elif name == "builtin":
            notify(f"data: {label} {counts}")
        elif streams:
            notify(f"data: {label} {counts}, streamed from {source} at {train.size} px")
        else:
            notify(f"data: {label} {counts} from {source}")
    all_train = train
    train, val = split_validation(train, val_size, seed)
    if streams:  # a sample of the folder, decoded by `workers` processes
        mean, std = train.channel_stats(seed, workers=workers)
        transform = stream_transform(train.size, train.scale, EVAL_CROP)
    else:
        (mean, std), transform = channel_stats(train.images), memory_transform()
    return DataSplits(train, val, test, "fashion-mnist-builtin" if name == "builtin" else name,
                      source, mean, std, transform, all_train)


def _check_scale(scale: tuple[float, float]) -> None:
    if (len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1):
        raise ProxylessError(f"--crop-scale {' '.join(map(str, scale))}: expected two area "
                             "shares 0 < MIN <= MAX <= 1 (the paper's 0.08 1)")


def _read_folder(directory: Path, size: int, channels: int, mode: str,
                 scale: tuple[float, float]) -> tuple[Images, Images]:
    """(train, test) of an image folder: streamed (FolderSets) or decoded into memory, as
    `mode` and the module docstring say."""
    indexes = folder_indexes(directory, channels)
    streams = mode == "stream" or (mode == "auto" and (
        size >= STREAM_MIN_SIZE or len(indexes[0]) * channels * size * size > MEMORY_LIMIT))
    if streams:
        return folder_sets(indexes, lambda index: FolderSet(index, range(len(index)), size,
                                                            channels, scale))
    return folder_sets(indexes, lambda index: decode_index(index, size, channels))


def resolve_data(data: str | None,
                 data_dir: str | Path | None) -> tuple[str, Path | None]:
    """(name, folder) to read: a path given as the name, or "auto", becomes a concrete name."""
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
            name = detect_format(directory)
        elif has_fashion_files(DEBIAN_FASHION_DIR):
            name, directory = "fashion-mnist", DEBIAN_FASHION_DIR
        else:
            name = "builtin"
    if name == "fashion-mnist" and directory is None:
        if not has_fashion_files(DEBIAN_FASHION_DIR):
            raise ProxylessError(f"no Fashion-MNIST files in {DEBIAN_FASHION_DIR}; "
                                 f"{_INSTALL_HINT}, or use the built-in subset (data 'builtin')")
        directory = DEBIAN_FASHION_DIR
    if name in ("cifar10", "imagefolder") and directory is None:
        raise ProxylessError(f"data {name!r} needs the folder that holds it: pass --data-dir DIR")
    return name, directory


def _read(name: str, directory: Path | None) -> tuple[ImageSet, ImageSet, str, str]:
    """(train, test, label for the notice, source) of a resolved data set other than an
    image folder."""
    if name == "builtin":
        train, test = load_builtin()
        return train, test, f"the built-in {len(train):,}-image Fashion-MNIST subset", "built-in"
    if name == "fashion-mnist":
        (train, test), label = load_fashion_mnist(directory), "Fashion-MNIST"
    else:
        (train, test), label = load_cifar10(directory), "CIFAR-10"
    return train, test, label, str(directory)
