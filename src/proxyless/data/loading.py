"""`load_data`: resolve a data name or path (auto-detected; the system Fashion-MNIST by default,
else the built-in subset), read it, hold out validation and compute the train statistics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxyless.config import clip
from proxyless.data.formats import (
    detect_format,
    has_fashion_files,
    load_builtin,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
)
from proxyless.data.sets import DataSplits, ImageSet, check_channels
from proxyless.data.splits import split_validation
from proxyless.data.stats import channel_stats
from proxyless.errors import ProxylessError

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_NAMES = ("auto", "builtin", "fashion-mnist", "cifar10", "imagefolder")
_INSTALL_HINT = "pass --data-dir DIR, or run `apt-get install dataset-fashion-mnist`"


def load_data(data: str | None = None, data_dir: str | Path | None = None, *,
              val_size: int | float = 0.1, seed: int = 0, image_size: int | None = None,
              channels: int | None = None,
              notify: Callable[[str], None] | None = print) -> DataSplits:
    """Load a data set by name or path, hold out validation, and compute train statistics."""
    name, directory = _resolve(data, data_dir)
    train, test, label, source = _read(name, directory, image_size, channels)
    for split, images in (("training", train), ("test", test)):
        if not len(images):  # name the data, not the batch size that would fail next
            raise ProxylessError(f"data {name!r} from {clip(source)}: the {split} split holds "
                                 "no images; point --data/--data-dir at a folder with both "
                                 "training and test images")
    if channels is not None:
        check_channels(train, channels, f"data {name!r} from {source}")
    if notify is not None:
        counts = f"({len(train):,} train / {len(test):,} test)"
        notify(f"data: {label} {counts} from {source}" if name != "builtin" else
               f"data: {label} {counts}; for the full data set {_INSTALL_HINT}")
    train, val = split_validation(train, val_size, seed)
    mean, std = channel_stats(train.images)
    return DataSplits(train, val, test, "fashion-mnist-builtin" if name == "builtin" else name,
                      source, mean, std)


def _resolve(data: str | None, data_dir: str | Path | None) -> tuple[str, Path | None]:
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


def _read(name: str, directory: Path | None, image_size: int | None,
          channels: int | None) -> tuple[ImageSet, ImageSet, str, str]:
    """(train, test, label for the notice, source) of a resolved data set."""
    if name == "builtin":
        train, test = load_builtin()
        return train, test, f"the built-in {len(train):,}-image Fashion-MNIST subset", "built-in"
    if name == "fashion-mnist":
        (train, test), label = load_fashion_mnist(directory), "Fashion-MNIST"
    elif name == "cifar10":
        (train, test), label = load_cifar10(directory), "CIFAR-10"
    else:
        train, test = load_image_folder(directory, image_size or 32, channels or 3)
        label = f"image folder, {len(train.classes)} classes"
    return train, test, label, str(directory)
