"""Shared fixtures. Tests run on the CPU with few threads so the suite stays fast on 2 cores."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REFERENCE = Path(str(resources.files("proxyless") / "reference"))


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE
