"""Test accuracy of any model file: a `model.pt`, a train or run folder, or an ONNX or
TorchScript export, on the data the model was trained on (or other data given).

    proxyless evaluate runs/x/model.onnx [--data NAME --data-dir DIR] [--images N] [--json]
    proxyless evaluate model.torchscript --trust-code      # TorchScript holds code: see below

    >>> evaluate_file("model.onnx")["test_top1"]

The same figure from a model and from its exports says the exports are the model; and a
deployed file can be checked again on the machine that runs it. Images are fed as training
fed them (`Classifier.normalize`), resized where the data's size is not the model's. A
TorchScript file runs its own code, so it is evaluated only with --trust-code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.config_io import clip
from proxyless.data import DataSplits, ImageSet, load_data, read_images
from proxyless.data.loading import resolve_data
from proxyless.deploy.classifier import load_classifier
from proxyless.deploy.model_file import ModelInfo
from proxyless.deploy.verify import top1
from proxyless.errors import ProxylessError

# The data names `load_data` reads from a folder: a model records (name, folder) of its data.
_FOLDER_DATA = ("fashion-mnist", "cifar10", "imagefolder")


def recorded_data(info: ModelInfo) -> tuple[str, str | None]:
    """(data name, folder) for `load_data` from what the model recorded of its training data;
    ("auto", None) when it recorded nothing usable."""
    name, source = info.data.get("name"), info.data.get("source")
    if name == "fashion-mnist-builtin":
        return "builtin", None
    if name in _FOLDER_DATA and isinstance(source, str):
        return name, source
    return "auto", None


def model_data(info: ModelInfo, data: str | None = None,
               data_dir: str | None = None) -> DataSplits:
    """The data to test a model on: `data`/`data_dir` when either is given, else the data it
    was trained on, read as training read it (image folders at the model's input size). The
    images must have the model's channel count and the classes be its classes."""
    size, channels = info.input_size, info.in_channels
    # an image folder is cropped as training cropped it: streamed (centre crop) or squashed
    mode = info.data.get("transform", {}).get("mode", "memory")
    if data is not None or data_dir is not None:
        name, folder = resolve_data(data, data_dir)
        splits = load_data(name, folder, val_size=0, image_size=size, channels=channels,
                           notify=None, data_mode=mode if name == "imagefolder" else "auto")
    else:
        name, folder = recorded_data(info)
        try:
            splits = load_data(name, folder, val_size=0, image_size=size, channels=channels,
                               notify=None,
                               data_mode=mode if name == "imagefolder" else "auto")
        except ProxylessError as err:
            raise ProxylessError(f"the model's data ({name} from {clip(folder)}) cannot be read "
                                 f"on this machine ({err}); pass --data/--data-dir to test it "
                                 "on data you have") from None
    check_data_fits(splits.test, info, f"data {splits.name!r} from {clip(splits.source)}")
    return splits


def check_data_fits(images: ImageSet, info: ModelInfo, what: str) -> None:
    """Refuse data whose images the model cannot take or whose labels mean other classes.
    Another image size is fine: images are resized to the model's input as training did."""
    if images.channels != info.in_channels:
        raise ProxylessError(f"{what} has {images.channels}-channel images but the model takes "
                             f"{info.in_channels}; pass --data/--data-dir of its data")
    if tuple(images.classes) != tuple(info.classes):
        raise ProxylessError(f"{what} has classes {clip(list(images.classes), 100)}, the "
                             f"model {clip(list(info.classes), 100)}: its labels would mean "
                             "other classes; pass --data/--data-dir of the model's data")


def evaluate_file(path: str | Path, data: str | None = None, data_dir: str | None = None,
                  images: int | None = None, batch_size: int = 500, device: str = "cpu",
                  trust_code: bool = False) -> dict[str, Any]:
    """Test top-1 (%) and mean cross-entropy of a model file or export on the first `images`
    test images (None: all) of its data (or `data`/`data_dir`); a TorchScript file only with
    `trust_code`."""
    if batch_size < 1 or (images is not None and images < 1):
        raise ProxylessError("--batch-size and --images must be >= 1")
    model = load_classifier(path, device, trust_code=trust_code)
    splits = model_data(model.info, data, data_dir)
    test = splits.test if images is None else splits.test.subset(
        range(min(images, len(splits.test))))
    # a chunk at a time: a streamed test set need not fit in memory
    chunks = [(model.batched_logits(model.normalize(images), batch_size), labels)
              for images, labels in read_images(test, batch_size)]
    if not chunks:
        raise ProxylessError(f"none of the {len(test)} test images of {clip(splits.source)} "
                             "could be read; check the folder")
    logits = np.concatenate([c[0] for c in chunks])
    labels = torch.cat([c[1] for c in chunks])
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(), labels).item()
    return {"model": str(model.path), "format": model.format,
            "architecture": model.info.arch.encode(),
            "test_top1": top1(logits, labels.numpy()),
            "test_loss": loss, "test_images": len(labels), "data": splits.name,
            "data_source": splits.source}


def predict_files(path: str | Path, images: list[str | Path], top: int = 1,
                  device: str = "cpu", trust_code: bool = False) -> list[dict[str, Any]]:
    """The `top` classes, with probabilities, of each image file, by a model file or export;
    files are cropped as the model's test images were (`ModelInfo.read_files`)."""
    if top < 1:
        raise ProxylessError("--top must be >= 1")
    model = load_classifier(path, device, trust_code=trust_code)
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise ProxylessError(f"no image file at {clip(missing[0])}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    results = []
    for start in range(0, len(images), 64):  # bounded memory for many files
        chunk = images[start:start + 64]
        logits = model.logits(model.normalize(model.info.read_files(chunk)))
        probs = torch.from_numpy(logits).double().softmax(1)
        best = probs.topk(min(top, probs.shape[1]), dim=1)
        for file, p, k in zip(chunk, best.values.tolist(), best.indices.tolist(), strict=True):
            result = {"image": str(file), "top": [
                {"class": model.info.classes[c], "index": c, "probability": v}
                for v, c in zip(p, k, strict=True)]}
            note = _too_small(file, model.info.input_size)
            if note:
                result["note"] = note
            results.append(result)
    return results


def _too_small(path: str | Path, input_size: int) -> str | None:
    """A note where an image is far smaller than the network's input (a quarter of its side
    or less): blown up that much, its prediction says little."""
    from PIL import Image  # Pillow's EXIF tables cost ~17 ms at import: only predict needs it

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - it decoded above; the note is a courtesy
        return None
    if min(width, height) * 4 > input_size:
        return None
    return (f"{width}x{height} px, far smaller than the network's {input_size} px input: "
            "its prediction says little")
