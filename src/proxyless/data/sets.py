"""The data containers: `ImageSet` (uint8 images + labels in memory), the `Images` a loop needs
(an ImageSet or a streamed `FolderSet`), and `DataSplits`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from proxyless.errors import ProxylessError


class Images(Protocol):
    """What the loops, splits and checks need of a set of images: an `ImageSet` in memory or
    a `FolderSet` (proxyless.data.stream) read from disk."""

    labels: torch.Tensor
    classes: tuple[str, ...]

    @property
    def channels(self) -> int: ...

    @property
    def size(self) -> int: ...

    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> Images: ...

    def readable(self, indices: Sequence[int] | np.ndarray | torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...


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

    def readable(self, indices: Sequence[int] | np.ndarray | torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of `indices`: in memory, every image is readable."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return self.images[index], self.labels[index]


@dataclass
class DataSplits:
    """Train / optional validation / test sets with the train split's per-channel stats.
    The sets are `ImageSet`s in memory, or `FolderSet`s (proxyless.data.stream) read from
    disk as needed; `transform` says how images become network input (`memory_transform`,
    `stream_transform`), recorded in model files so a model is fed as it was trained."""

    train: Images
    val: Images | None
    test: Images
    name: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: dict = field(default_factory=lambda: memory_transform())
    all_train: Images | None = None  # the training set before the validation hold-out

    @property
    def streams(self) -> bool:
        return self.transform.get("mode") == "stream"

    def for_retraining(self) -> DataSplits:
        """The splits a fixed architecture trains on: the validation hold-out exists for α,
        so once the architecture is chosen it trains the network too (as the reference
        code's retraining, imagenet_run_exp.py, on the full training set)."""
        if self.all_train is None or self.val is None:
            return self
        return dataclasses.replace(self, train=self.all_train, val=None)


def training_transform(transform: dict, color_jitter: str) -> dict:
    """`transform` with the colour jitter that training gave streamed images, recorded in
    checkpoints and model files as the crop is (images in memory take none)."""
    if transform.get("mode") != "stream" or color_jitter == "none":
        return transform
    return {**transform, "color_jitter": color_jitter}


def memory_transform() -> dict:
    """Images held in memory, resized whole to the network's input (training: padded random
    crop and flip)."""
    return {"mode": "memory"}


def stream_transform(size: int, scale: Sequence[float], eval_crop: float) -> dict:
    """Images decoded from disk: training takes random-resized crops (area share `scale`)
    and flips, evaluation resizes the short side to size / eval_crop and takes the centre."""
    return {"mode": "stream", "size": size, "train": "random-resized-crop+flip",
            "crop_scale": [float(v) for v in scale], "eval": "resize+centre-crop",
            "eval_crop": eval_crop}


def check_channels(images: Images, expected: int, what: str,
                   space: str = "the search space") -> None:
    """Refuse images with another channel count than the space's input, naming both."""
    if images.channels != expected:
        c, s = images.channels, images.size
        raise ProxylessError(f"{what} has {c}x{s}x{s} images (channels x height x width) but "
                             f"{space} expects {expected} channel(s); use a space with {c} "
                             "input channel(s) or other data")


def check_class_count(images: Images, expected: int, what: str,
                      space: str = "the search space") -> None:
    """Refuse data whose class count is not the network's output count: a model file's
    classes must name every output."""
    if len(images.classes) != expected:
        raise ProxylessError(f"{what} has {len(images.classes)} classes but {space} has "
                             f"{expected} outputs; size the space to the data "
                             "(dataclasses.replace(space, num_classes=...); the command line "
                             "does it) or use other data")


def from_arrays(images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                where: Path) -> ImageSet:
    """An ImageSet from numpy arrays read from `where`, checking labels index `classes`."""
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ProxylessError(f"{where}: labels range {labels.min()}..{labels.max()}, expected "
                             f"0..{len(classes) - 1} for {len(classes)} classes")
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels),
                    tuple(classes))
