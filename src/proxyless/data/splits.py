"""Seeded, class-balanced hold-outs: the validation split, and an image folder's test split."""

from __future__ import annotations

import numpy as np

from proxyless.data.sets import Images
from proxyless.errors import ProxylessError


def holdout(data: Images, size: int | float, seed: int,
            what: str) -> tuple[Images, Images]:
    """(rest, held) with `size` images (int total) or a per-class fraction (float) held out."""
    size = size.item() if isinstance(size, np.integer | np.floating) else size
    if isinstance(size, float) and size >= 1 and size.is_integer():
        size = int(size)  # a count written as a number (a config file, --val-size 500)
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


def split_validation(train: Images, val_size: int | float,
                     seed: int = 0) -> tuple[Images, Images | None]:
    """Hold a seeded, class-balanced validation set out of `train`: a whole number is a total
    count (spread evenly over classes), a number in (0, 1) a per-class fraction; 0 -> none."""
    if not isinstance(val_size, bool) and val_size == 0:
        return train, None
    return holdout(train, val_size, seed, "validation")
