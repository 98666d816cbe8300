"""Trained model files: a ready network rebuilt from tensors and plain data alone.

`train` and `run` write `model.pt`, a torch file that holds nothing else:

    {"format": "proxyless-model/1", "arch": {<architecture file>}, "weights": {<state dict>},
     "architecture": "k3e6 k5e3 | ...", "input_size": 28, "in_channels": 1,
     "mean": [0.286], "std": [0.353], "classes": ["T-shirt/top", ...],
     "data": {"name": "fashion-mnist", "source": "..."}, "metrics": {"test_top1": 91.7, ...}}

    >>> model = load_model("runs/x")          # a model file, a `train` folder or a `run` folder
    >>> model.predict(images_uint8)            # class indices; model(x) takes normalized input

`load_model` reads with `torch.load(weights_only=True)`, so a crafted file cannot run code,
and checks every field before building the network. The network takes images normalized as
(pixels / 255 - mean) / std, per channel, and resized to its input size where the data's
differ, exactly as training fed it (`proxyless.data.batches.to_network_input`):
`TrainedModel.preprocess` does it, and exported files carry the same metadata
(`ModelInfo.to_metadata`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from proxyless.config_io import clip, excerpt
from proxyless.data.batches import normalization, to_network_input
from proxyless.data.decode import UnreadableImage, read_files
from proxyless.engine.runtime import load_checkpoint, save_checkpoint
from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture
from proxyless.model.network import ProxylessNet, build_network

MODEL_FORMAT = "proxyless-model/1"
MODEL_FILE = "model.pt"
_RETRAIN = "the folder of `proxyless train` or `proxyless run` that made it, or retrain it"


@dataclass(frozen=True)
class ModelInfo:
    """What a trained network needs besides its weights: architecture, input, labels."""

    arch: Architecture
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)      # name, source
    metrics: dict[str, Any] = field(default_factory=dict)   # test_top1, ...

    @property
    def input_size(self) -> int:
        return self.arch.space.input_size

    @property
    def in_channels(self) -> int:
        return self.arch.space.in_channels

    def read_files(self, paths: list[str | Path]) -> np.ndarray:
        """Image files as uint8 N x C x H x W, prepared as the model's data was: the centre
        crop of evaluation where its data streamed from disk, the whole image resized where
        it was held in memory (the transform recorded in `data`)."""
        try:
            return read_files(paths, self.input_size, self.in_channels,
                              self.data.get("transform"))
        except UnreadableImage as err:
            raise ProxylessError(f"cannot read image {err}") from None

    def to_metadata(self) -> dict[str, Any]:
        """Plain data (JSON-ready): a model file's fields without the weights, and the
        metadata of exported files."""
        return {"format": MODEL_FORMAT, "architecture": self.arch.encode(),
                "arch": self.arch.to_dict(), "input_size": self.input_size,
                "in_channels": self.in_channels, "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes), "data": dict(self.data),
                "metrics": dict(self.metrics)}

    @classmethod
    def from_metadata(cls, data: Any, where: str) -> ModelInfo:
        """Check every field of a model file's (or exported file's) metadata."""
        if not isinstance(data, dict):
            raise ProxylessError(f"{where}: expected a mapping of model fields, got "
                                 f"{excerpt(data)}")
        if data.get("format") != MODEL_FORMAT:
            if "model" in data and "arch" in data and "format" not in data:
                raise ProxylessError(f"{where} was written by an earlier proxyless, without "
                                     f"its normalisation and class names; retrain it ({_RETRAIN})")
            raise ProxylessError(f"{where}: format {excerpt(data.get('format'))} is not "
                                 f"{MODEL_FORMAT!r}; not a proxyless model file")
        missing = [k for k in ("arch", "mean", "std", "classes") if k not in data]
        if missing:
            raise ProxylessError(f"{where} lacks {', '.join(missing)}: damaged, or not a "
                                 f"proxyless model file; use {_RETRAIN}")
        arch = Architecture.from_dict(data["arch"], f"{where}: arch")
        space = arch.space
        mean = _floats(data["mean"], space.in_channels, f"{where}: mean", positive=False)
        std = _floats(data["std"], space.in_channels, f"{where}: std", positive=True)
        classes = data["classes"]
        if (not isinstance(classes, (list, tuple)) or len(classes) != space.num_classes
                or not all(isinstance(c, str) for c in classes)):
            raise ProxylessError(f"{where}: classes must be {space.num_classes} names (the "
                                 f"space's class count), got {excerpt(classes)}")
        for key in ("input_size", "in_channels"):
            if key in data and data[key] != getattr(space, key):
                raise ProxylessError(f"{where}: {key} {excerpt(data[key])} disagrees with its "
                                     f"architecture's space ({getattr(space, key)})")
        extra = {k: data.get(k, {}) for k in ("data", "metrics")}
        for key, value in extra.items():
            if not isinstance(value, dict):
                raise ProxylessError(f"{where}: {key} must be a mapping, got {excerpt(value)}")
            _check_plain(value, f"{where}: {key}")
        _check_transform(extra["data"].get("transform", {"mode": "memory"}), space.input_size,
                         f"{where}: data.transform")
        return cls(arch, mean, std, tuple(classes), extra["data"], extra["metrics"])


def _check_transform(transform: Any, size: int, where: str) -> None:
    """How the model's images were prepared (`DataSplits.transform`): memory, or stream at
    the model's input size; anything else would crop images as no run did."""
    mode = transform.get("mode") if isinstance(transform, dict) else None
    if mode not in ("memory", "stream") or (mode == "stream"
                                            and transform.get("size") != size):
        raise ProxylessError(f"{where} must be {{'mode': 'memory'}} or a 'stream' transform of "
                             f"the model's input size {size}, got {excerpt(transform)}; the "
                             f"file is damaged: use {_RETRAIN}")


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything but JSON's kinds of data (text, numbers, booleans, null, lists, mappings
    with text keys): `data` and `metrics` are written into exports' JSON metadata and reports,
    where a tensor or another object would fail later, far from the file that held it.
    Walked with a stack, so a deeply nested value cannot exhaust Python's recursion."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise ProxylessError(f"{path}: key {excerpt(key)} must be text (plain JSON "
                                         "data only); use " + _RETRAIN)
                stack.append((inner, f"{path}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{path}[{i}]") for i, inner in enumerate(item))
        elif not isinstance(item, _PLAIN):
            raise ProxylessError(f"{path} must be plain JSON data (text, numbers, booleans, "
                                 f"lists, mappings), got a {type(item).__name__}; use "
                                 + _RETRAIN)


def _floats(value: Any, count: int, where: str, positive: bool) -> tuple[float, ...]:
    ok = (isinstance(value, (list, tuple)) and len(value) == count
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in value))
    if not ok:
        kind = "positive finite numbers" if positive else "finite numbers"
        raise ProxylessError(f"{where}: expected {count} {kind} (one per input channel), got "
                             f"{excerpt(value)}")
    return tuple(float(v) for v in value)


class TrainedModel(nn.Module):
    """A trained network with what it needs to be used: `model(x)` takes normalized input;
    `preprocess` and `predict` take uint8 images (N x C x H x W, 0..255)."""

    def __init__(self, net: ProxylessNet, info: ModelInfo) -> None:
        super().__init__()
        self.net, self.info = net, info
        scale, shift = normalization(info.mean, info.std)
        # buffers, so that they follow the model to its device; not saved: info holds them
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    @property
    def arch(self) -> Architecture:
        return self.info.arch

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) N x C x H x W -> network input, as training made it:
        normalized, then resized to the model's input size where the images differ."""
        check_images(images, self.info)
        return to_network_input(images.to(self.scale.device), self.scale, self.shift,
                                self.info.input_size)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices of uint8 images (eval mode)."""
        return self(self.preprocess(images)).argmax(1)

    def read_files(self, paths: list[str | Path]) -> torch.Tensor:
        """Image files as uint8 N x C x H x W, cropped as the model's test images were
        (`ModelInfo.read_files`): `model.predict(model.read_files(paths))`."""
        return torch.from_numpy(self.info.read_files(paths))


def check_images(images: Any, info: ModelInfo) -> None:
    """Images must be N x C x H x W with the model's channel count; any size H x W is resized
    to its input size, as training resized data of another size."""
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[1] != info.in_channels:
        size = info.input_size
        raise ProxylessError(f"the model takes N x {info.in_channels} x H x W images (resized "
                             f"to {size} x {size}), got {shape or type(images).__name__}")


def save_model(path: str | Path, net: nn.Module, info: ModelInfo) -> Path:
    """Write a model file atomically: `info`'s plain data and `net`'s weights on the CPU."""
    weights = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    path = Path(path)
    save_checkpoint(path, {**info.to_metadata(), "weights": weights})
    return path


def model_path(path: str | Path) -> Path:
    """The model file of `path`: the file itself, or `model.pt` in a `train` folder, or
    `retrain/model.pt` in a `run` folder."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / MODEL_FILE, path / "retrain" / MODEL_FILE):
            if candidate.is_file():
                return candidate
        raise ProxylessError(f"{clip(path)} holds no {MODEL_FILE} (nor retrain/{MODEL_FILE}): "
                             "give a model file, or the folder of a finished `proxyless train` "
                             "or `proxyless run`")
    if not path.exists():
        raise ProxylessError(f"{clip(path)}: no such model file or run folder")
    return path


def read_model_file(path: str | Path) -> tuple[ModelInfo, dict[str, torch.Tensor], Path]:
    """(info, weights, file) of a model file, a train folder or a run folder, checked."""
    file = model_path(path)
    state = load_checkpoint(file, "model file", f"use {_RETRAIN}")
    info = ModelInfo.from_metadata(state, f"model file {file}")
    weights = state.get("weights")
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise ProxylessError(f"model file {file}: 'weights' is not a mapping of tensors; "
                             f"use {_RETRAIN}")
    return info, weights, file


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """A ready network (eval mode, on `device`) from a model file or a run folder."""
    info, weights, file = read_model_file(path)
    net = build_network(info.arch)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        problem = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise ProxylessError(f"model file {file}: its weights do not fit its architecture "
                             f"({clip(problem, 160)}); use {_RETRAIN}") from None
    return TrainedModel(net, info).to(device).eval()
