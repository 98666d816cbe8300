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

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from proxyless.config import clip
from proxyless.data import DataSplits, ImageSet, load_data
from proxyless.deploy.export import (
    Classifier,
    file_format,
    load_exported,
    pytorch_classifier,
    top1,
)
from proxyless.deploy.model_file import ModelInfo, load_model, model_path
from proxyless.errors import ProxylessError
from proxyless.runtime import resolve_device

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
    if data is not None or data_dir is not None:
        splits = load_data(data, data_dir, val_size=0, image_size=size, channels=channels,
                           notify=None)
    else:
        name, folder = recorded_data(info)
        try:
            splits = load_data(name, folder, val_size=0, image_size=size, channels=channels,
                               notify=None)
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


def load_classifier(path: str | Path, device: str = "cpu", threads: int | None = None,
                    trust_code: bool = False) -> Classifier:
    """Any model file ready to run on numpy input: a model file or train/run folder (format
    "pytorch", on `device`), or an ONNX (CPU only) or TorchScript export (only with
    `trust_code`: its code runs, see `load_exported`)."""
    fmt = file_format(path)
    if fmt == "onnx" and device != "cpu":
        raise ProxylessError(f"--device {device}: ONNX files run in ONNX Runtime on the CPU "
                             "here; use --device cpu")
    if fmt != "pytorch":
        return load_exported(path, threads=threads, device=device, trust_code=trust_code)
    target = resolve_device(device)  # a clear error where CUDA is missing, before loading
    return pytorch_classifier(load_model(path, target), model_path(path))


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
    logits = model.batched_logits(model.normalize(test.images), batch_size)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits).double(),
                                             test.labels).item()
    return {"model": str(model.path), "format": model.format,
            "architecture": model.info.arch.encode(),
            "test_top1": top1(logits, test.labels.numpy()),
            "test_loss": loss, "test_images": len(test), "data": splits.name,
            "data_source": splits.source}


# ------------------------------------------------------------------------------- command line

def add_evaluate_parser(sub: Any) -> None:
    """`proxyless evaluate` on the CLI's subparsers."""
    from proxyless.cli import positive_int

    p = sub.add_parser("evaluate", help="test accuracy of a model file, run folder or export")
    p.add_argument("model", help="model.pt, a train or run folder, or an exported .onnx or "
                                 "TorchScript (.torchscript) file")
    add_model_data_args(p)
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--images", type=positive_int, default=None,
                   help="evaluate the first N test images (default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu; ONNX "
                                                   "files run on the CPU)")
    p.add_argument("--trust-code", action="store_true",
                   help="run a TorchScript file, whose code runs when loaded and called: only "
                        "one you made (e.g. with `proxyless export`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_model_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="dataset name (builtin, fashion-mnist, cifar10, imagefolder) or "
                             "a path; default: the data the model was trained on")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_file(args.model, args.data, args.data_dir, args.images, args.batch_size,
                           args.device, args.trust_code)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"test top-1 {result['test_top1']:.2f}%  loss {result['test_loss']:.4f}  on "
          f"{result['test_images']:,} test images of {result['data']} "
          f"({clip(result['data_source'])})")
    print(f"model: {result['model']} ({result['format']}, {result['architecture']})")
    return 0
