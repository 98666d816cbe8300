"""Shared fixtures. Tests run on the CPU with few threads so the suite stays fast on 2 cores."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

from proxyless.data import DataSplits, load_data, split_validation

torch.set_num_threads(2)

REFERENCE = Path(str(resources.files("proxyless") / "reference"))


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def builtin_subset():
    """`builtin_subset(train, val=0, test=200)`: a seeded subset of the built-in data set, with
    `val` images held out of `train + val` drawn ones, and the first `test` test images."""
    data = load_data("builtin", notify=None)

    def make(train: int, val: int = 0, test: int = 200) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        drawn = data.train.subset(torch.randperm(len(data.train), generator=g)[:train + val])
        drawn, held = split_validation(drawn, val, seed=0)
        return DataSplits(train=drawn, val=held, test=data.test.subset(torch.arange(test)),
                          name=data.name, source=data.source, mean=data.mean, std=data.std)
    return make
