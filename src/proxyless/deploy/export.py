"""The export job (`proxyless export`): write a trained network as ONNX or TorchScript, check it
against the PyTorch model on test images, quantize it to int8 where asked, and time it.

    >>> report = export_and_check("runs/x", "model.onnx", int8=True)
    >>> report["verified"], report["latency_ms"], report["int8"]["top1"]

`runtime_latencies` is the same for the model a `proxyless run` retrained: its exports beside
it, and what it costs in each runtime.

The file is written by `write.py`, read back as any deployment would read it
(`classifier.py`), compared with the PyTorch model (`verify.py`), quantized (`int8.py`) and
timed beside the latency table's prediction (`timing.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.config_io import clip
from proxyless.data import DataSplits
from proxyless.deploy.classifier import Classifier, load_exported, pytorch_classifier
from proxyless.deploy.evaluate import model_data
from proxyless.deploy.int8 import calibration_images, int8_path, quantize_and_check, quantize_int8
from proxyless.deploy.model_file import TrainedModel, load_model, model_path
from proxyless.deploy.timing import measure_latency, measure_on_table, predicted_latency
from proxyless.deploy.verify import DEFAULT_TOLERANCE, compare_logits
from proxyless.deploy.write import FORMATS, export_model
from proxyless.engine.runtime import check_out_file
from proxyless.errors import ProxylessError
from proxyless.latency.timer import MAX_MIN_TIME


def check_outputs(out: str | Path, fmt: str, int8: bool, source: Path) -> list[Path]:
    """The files an export writes (`out`, then the int8 copy beside it), refused before any
    work where they could not be written or would overwrite the model file `source`."""
    if fmt not in FORMATS:
        raise ProxylessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ProxylessError("--int8 quantizes with ONNX Runtime: use it with --format onnx")
    out = Path(out)
    if fmt == "torchscript" and out.suffix == ".onnx":
        raise ProxylessError(f"--out {clip(out)}: a TorchScript file named .onnx would mislead "
                             "every tool that opens it; name it .torchscript (or .ts), or use "
                             "--format onnx")
    outputs = [check_out_file(out, "--out")]
    if int8:
        outputs.append(check_out_file(int8_path(out), "--out (its .int8.onnx beside it)"))
    if any(path.resolve() == source.resolve() for path in outputs):
        raise ProxylessError(f"--out {clip(out)} is the model file itself; choose another "
                             "--out")
    return outputs


def export_and_check(model: str | Path, out: str | Path, fmt: str = "onnx", int8: bool = False,
                     data: str | None = None, data_dir: str | None = None,
                     verify_images: int = 1000, tolerance: float = DEFAULT_TOLERANCE,
                     threads: int = 1, latency_time: float = 2.0,
                     table: str | None = None) -> dict[str, Any]:
    """Export the model file or run folder `model` to `out` as `fmt`, verify it on the first
    `verify_images` test images of its data (or `data`/`data_dir`), quantize it (`int8`) and
    time it at `threads`; returns the report (`verified`: the export's logits are within
    `tolerance` of PyTorch's with the same top-1 everywhere). A file that fails verification
    is kept for inspection."""
    if verify_images < 1 or threads < 1 or not 0 <= latency_time <= MAX_MIN_TIME:
        raise ProxylessError(f"verify_images and threads must be >= 1 and latency_time in [0, "
                             f"{MAX_MIN_TIME:g}] s, got {verify_images}, {threads}, "
                             f"{latency_time}")
    source = model_path(model)
    outputs = check_outputs(out, fmt, int8, source)
    loaded = load_model(source)
    # both before the export: fail fast
    latency_table, prediction = predicted_latency(source, loaded.info, table)
    splits = model_data(loaded.info, data, data_dir)
    report = {"model": str(source), "architecture": loaded.info.arch.encode(),
              "format": fmt, "export": str(outputs[0]), "threads": threads,
              "data": splits.name, **prediction}
    test = splits.test.subset(range(min(verify_images, len(splits.test))))
    images, labels = test.readable(range(len(test)))
    x, labels = loaded.preprocess(images).numpy(), labels.numpy()
    export_model(loaded, outputs[0], fmt)
    report["export_bytes"] = outputs[0].stat().st_size
    reference = pytorch_classifier(loaded, source)
    # the file just written, by this process: its TorchScript code is ours
    exported = load_exported(outputs[0], threads=threads, trust_code=True)
    fp32 = exported.batched_logits(x)
    report.update(compare_logits(reference.batched_logits(x), fp32, labels, tolerance))
    runs = {"pytorch": reference, fmt: exported}
    report["int8"] = None
    if int8:
        runs["onnx int8"], report["int8"] = quantize_and_check(loaded, splits, outputs, x, fp32,
                                                               labels, threads)
    report.update(measure_latency(runs, x[:1].copy(), threads, latency_time))
    report.update(measure_on_table(latency_table, loaded.info.arch, latency_time))
    if report["int8"] is not None:
        report["int8"]["latency_ms"] = report["latency_ms"]["onnx int8"]
    return report


RUNTIME_NAMES = ("torch", "onnxruntime", "onnxruntime int8")


def runtime_latencies(model_file: str | Path, data: DataSplits, batch: int = 1,
                      threads: int = 1, min_time: float = 2.0,
                      log: Callable[[str], None] = print) -> dict[str, float | None]:
    """What the trained network of `model_file` costs in each runtime it would be deployed
    with, measured now on this CPU at `batch` and `threads`, all timed together round-robin:
    PyTorch eager ("torch"), ONNX Runtime fp32 ("onnxruntime") and int8 ("onnxruntime
    int8", calibrated on `data`'s training images). The exports are kept beside the model
    file (model.onnx, model.int8.onnx). A runtime that cannot take the network is None, with
    a line in `log`, and the others are still measured."""
    model_file = Path(model_file)
    model = load_model(model_file)
    runs: dict[str, Classifier] = {"torch": pytorch_classifier(model, model_file)}
    onnx_file = model_file.with_name("model.onnx")
    try:
        export_model(model, onnx_file, "onnx")
        runs["onnxruntime"] = load_exported(onnx_file, threads=threads)
        int8_file = quantize_int8(onnx_file, int8_path(onnx_file),
                                  calibration_images(model, data), model.info)
        runs["onnxruntime int8"] = load_exported(int8_file, threads=threads)
    except ProxylessError as err:
        log(f"runtimes: {err}; measured without it")
    sample = _batch_of(model, data, batch)
    measured = measure_latency(runs, sample, threads, min_time)["latency_ms"]
    return {name: measured.get(name) for name in RUNTIME_NAMES}


def _batch_of(model: TrainedModel, data: DataSplits, batch: int) -> np.ndarray:
    """`batch` test images as the network's input (repeated where the test split is smaller)."""
    images = data.test.readable(range(min(batch, len(data.test))))[0]
    if len(images) < batch:
        images = images[torch.arange(batch) % len(images)]
    return np.ascontiguousarray(model.preprocess(images).numpy())
