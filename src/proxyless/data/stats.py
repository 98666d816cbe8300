"""Per-channel normalization statistics of uint8 images."""

from __future__ import annotations

import math

import numpy as np
import torch


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
