"""Exports: a trained network as an ONNX or TorchScript file that carries its own metadata.

    >>> export_model(load_model("runs/x"), "model.onnx", "onnx")

An exported network takes normalized float input (N x C x H x W; (pixels / 255 - mean) / std
per channel, at the model's input size) and returns logits; the batch axis is free. The
metadata (`ModelInfo.to_metadata`: architecture, input size, normalisation, class names,
data, metrics) travels as JSON: in ONNX `metadata_props` (key "proxyless", with readable
copies under "architecture", "classes", "mean", "std", "input_size"), in TorchScript as the
archive's extra file `proxyless.json`. So a deployment needs the file alone (`classifier.py`
reads it back). Name TorchScript files `.torchscript` or `.ts`, apart from the `.pt` of model
files.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from proxyless.deploy.model_file import ModelInfo, TrainedModel
from proxyless.errors import ProxylessError
from proxyless.files import replace_atomically
from proxyless.latency.timer import export_onnx

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "proxyless"                 # ONNX metadata_props key of the JSON
EXTRA_FILE = "proxyless.json"              # TorchScript extra file of the JSON
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_model(model: TrainedModel, out: str | Path, fmt: str) -> Path:
    """Write `model`'s network with its metadata as `fmt` ("onnx" or "torchscript"),
    atomically: an error or a kill mid-way leaves no half-written file at `out`."""
    if fmt not in FORMATS:
        raise ProxylessError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    net = model.net.eval()
    info = model.info
    example = torch.zeros(1, info.in_channels, info.input_size, info.input_size)
    data = _onnx_bytes(net, example, info) if fmt == "onnx" else \
        _torchscript_bytes(net, example, info)
    out = Path(out)
    replace_atomically(out, lambda f: f.write(data))
    return out


def _onnx_bytes(net: torch.nn.Module, example: torch.Tensor, info: ModelInfo) -> bytes:
    """The network as the onnxruntime latency backend exports it (one exporter for both),
    with a free batch axis and our metadata."""
    import onnx  # heavy: deferred to the export (`proxyless --help` need not load it)

    proto = onnx.load_from_string(export_onnx(net, example, INPUT_NAME, OUTPUT_NAME,
                                              dynamic_batch=True))
    set_metadata(proto, info)
    return proto.SerializeToString()


def set_metadata(proto: Any, info: ModelInfo, note: str | None = None) -> None:
    """Our metadata in an ONNX model's metadata_props (replacing any earlier copy)."""
    meta = info.to_metadata()
    props = {METADATA_KEY: json.dumps(meta), "architecture": meta["architecture"],
             "classes": json.dumps(meta["classes"]), "mean": json.dumps(meta["mean"]),
             "std": json.dumps(meta["std"]), "input_size": str(meta["input_size"]),
             "in_channels": str(meta["in_channels"])}
    if note:
        props["quantization"] = note
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "proxyless"
    proto.doc_string = (f"proxyless network {meta['architecture']}: input '{INPUT_NAME}' "
                        f"N x {info.in_channels} x {info.input_size} x {info.input_size}, "
                        "(pixels / 255 - mean) / std; output 'logits'")


def _torchscript_bytes(net: torch.nn.Module, example: torch.Tensor, info: ModelInfo) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_trace re-runs the trace to compare; the export is verified end to end anyway.
        # _store_inputs=False: the example input is not the user's to ship.
        traced = torch.jit.trace(net, example, check_trace=False, _store_inputs=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer,
                       _extra_files={EXTRA_FILE: json.dumps(info.to_metadata())})
    return buffer.getvalue()
