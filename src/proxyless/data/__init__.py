"""Image data sets -- in-memory uint8 tensors, or image folders streamed from disk -- and the
batch iterators of the training loops.

    sets.py     `ImageSet` (uint8 N x C x H x W + labels) and `DataSplits` (train/val/test + stats)
    formats.py  readers per on-disk format -- Fashion-MNIST IDX (raw or .gz; the built-in subset
                in proxyless/builtin_data/), CIFAR-10 python batches, image folders -- and
                `detect_format`, the one place a folder's format is told
    splits.py   the seeded, class-balanced hold-out (validation split, image-folder test split)
    stats.py    per-channel normalization statistics
    loading.py  `load_data`: name/path resolution, auto default (system Fashion-MNIST at
                `DEBIAN_FASHION_DIR`, else the built-in subset), split and stats
    batches.py  `Batches`: normalized, augmented, shuffled, DDP-sharded batches
    folder_index.py  an image folder's files and labels, compact, cached between runs
    decode.py   one image file -> the input size: random-resized crop + flip, or centre crop
    stream.py   `FolderSet` (an index, no pixels), `StreamBatches` (DataLoader workers decode),
                `make_batches` (the right iterator for either kind of set)

    >>> data = load_data("builtin", val_size=500)          # or load_data(None, "~/cifar")
    >>> len(data.train), len(data.val), len(data.test)
    (5500, 500, 1000)
    >>> batches = Batches(data.train, 128, mean=data.mean, std=data.std, shuffle=True,
    ...                   augment=True, seed=0)
    >>> batches.set_epoch(3)
    >>> x, y = next(iter(batches))                           # float32 128x1x28x28, int64 128

Module-level settings such as `DEBIAN_FASHION_DIR` are read where they live
(`proxyless.data.loading`): patch them there, not on this package.
"""

from proxyless.data.batches import Batches
from proxyless.data.formats import (
    FASHION_CLASSES,
    load_builtin,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)
from proxyless.data.loading import load_data
from proxyless.data.sets import DataSplits, Images, ImageSet, check_channels, check_class_count
from proxyless.data.splits import split_validation
from proxyless.data.stats import channel_stats
from proxyless.data.stream import (
    FolderSet,
    StreamBatches,
    make_batches,
    read_images,
    shutdown_workers,
    skipped_images,
    skipped_note,
)

__all__ = ["FASHION_CLASSES", "Batches", "DataSplits", "FolderSet", "ImageSet", "Images",
           "StreamBatches", "channel_stats", "check_channels", "check_class_count",
           "load_builtin", "load_cifar10", "load_data", "load_fashion_mnist",
           "load_image_folder", "make_batches", "read_idx", "read_images", "shutdown_workers",
           "skipped_images", "skipped_note", "split_validation"]
