"""Exported networks: ONNX and TorchScript files that carry their own metadata, checked
against the PyTorch model they came from, and timed on this CPU.

    proxyless export runs/x --format onnx --out model.onnx [--int8]

    >>> model = load_exported("model.onnx")             # a `Classifier`
    >>> model.info.classes, model.info.mean             # the model's ModelInfo
    >>> model.predict_images(images_uint8)              # class indices (N x C x H x W, 0..255)

An exported network takes normalized float input (N x C x H x W; (pixels / 255 - mean) / std
per channel, at the model's input size) and returns logits; the batch axis is free.
`Classifier.normalize` makes that input from images as training did (resizing images of
another size). The metadata (`ModelInfo.to_metadata`: architecture, input size,
normalisation, class names, data, metrics) travels as JSON: in ONNX `metadata_props` (key
"proxyless", with readable copies under "architecture", "classes", "mean", "std",
"input_size"), in TorchScript as the archive's extra file `proxyless.json`. So a deployment
needs the file alone, and `load_exported` refuses a file without it.

Nothing proxyless loads may run code it holds: ONNX files are data (external data refused), but
a TorchScript file is code, so `load_exported` refuses one unless `trust_code` (`--trust-code`)
says its maker is trusted. Name TorchScript files `.torchscript` or `.ts`, apart from the
`.pt` of model files.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from proxyless.arch import Architecture
from proxyless.config import clip, replace_atomically
from proxyless.data.batches import normalization, to_network_input
from proxyless.deploy.model_file import ModelInfo, TrainedModel, check_images
from proxyless.errors import ProxylessError
from proxyless.runtime import first_line

if TYPE_CHECKING:  # imported where used: `load_model` users need no latency code
    from proxyless.latency.table import LatencyTable

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "proxyless"                 # ONNX metadata_props key of the JSON
EXTRA_FILE = "proxyless.json"              # TorchScript extra file of the JSON
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_TOLERANCE = 1e-4                   # max |logit difference| a faithful export shows
CALIBRATION_IMAGES = 256                   # training images that set the int8 ranges
_KNOWN = ("a proxyless model file (model.pt), a TorchScript export (.torchscript) or an ONNX "
          "file (.onnx)")


Logits = Callable[[np.ndarray], np.ndarray]


@dataclass
class Classifier:
    """A classifier file ready to run on numpy input: an ONNX or TorchScript export, or a
    PyTorch model file (format "pytorch": the reference exports are checked against, and what
    `evaluate` runs for model files), with the model's `ModelInfo`."""

    path: Path
    format: str
    info: ModelInfo
    run: Logits

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N x classes) of normalized float32 input N x C x H x W."""
        size, channels = self.info.input_size, self.info.in_channels
        if (not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4
                or x.shape[1:] != (channels, size, size)):
            shape = getattr(x, "shape", type(x).__name__)
            raise ProxylessError(f"{clip(self.path)} takes float32 N x {channels} x {size} x "
                                 f"{size} input, got {getattr(x, 'dtype', '')} {shape}")
        return self.run(np.ascontiguousarray(x))

    def batched_logits(self, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """`logits`, `batch_size` images at a time (bounded memory)."""
        return np.concatenate([self.logits(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])

    def normalize(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 (or 0..255) images N x C x H x W -> the network's float32 input, made as
        training made it (`to_network_input`: normalized, resized where the size differs)."""
        check_images(images, self.info)
        scale, shift = normalization(self.info.mean, self.info.std)
        return to_network_input(torch.as_tensor(images), scale, shift,
                                self.info.input_size).numpy()

    def predict_images(self, images: torch.Tensor | np.ndarray,
                       batch_size: int = 500) -> np.ndarray:
        """Class indices of uint8 images."""
        return self.batched_logits(self.normalize(images), batch_size).argmax(1)


def torch_runner(module: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device) -> Logits:
    """numpy in, numpy out, through a torch module (a network or TorchScript) on `device`."""
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).cpu().numpy()
    return run


def pytorch_classifier(model: TrainedModel, path: Path) -> Classifier:
    """A loaded model file (from `path`) as a Classifier, on the model's device."""
    return Classifier(path, "pytorch", model.info, torch_runner(model, model.scale.device))


# ------------------------------------------------------------------------------- writing

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
    import onnx

    from proxyless.latency.timer import export_onnx

    proto = onnx.load_from_string(export_onnx(net, example, INPUT_NAME, OUTPUT_NAME,
                                              dynamic_batch=True))
    _set_metadata(proto, info)
    return proto.SerializeToString()


def _set_metadata(proto: Any, info: ModelInfo, note: str | None = None) -> None:
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


def quantize_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray,
                  info: ModelInfo) -> Path:
    """An int8 copy of the ONNX file `fp32` at `out` (atomically): ONNX Runtime static
    quantization, QDQ format, per-channel int8 weights and uint8 activations (the pairing
    ONNX Runtime's x86 kernels run fastest), activation ranges from `calibration` (normalized
    training images: test images would leak into the figures reported on them). `info`, the
    model's, becomes the int8 file's metadata."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="proxyless-int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        try:
            # shapes everywhere and folded constants: what the quantizer needs to cover all
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(prepared, quantized, _CalibrationImages(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as err:  # noqa: BLE001 - a failed quantization is one clear line
            raise ProxylessError(f"int8 quantization of {clip(fp32)} failed "
                                 f"({first_line(err)}); export without --int8") from None
        proto = onnx.load(str(quantized))
    _set_metadata(proto, info, note=f"int8 static (QDQ, per-channel), calibrated on "
                                    f"{len(calibration)} training images")
    data = proto.SerializeToString()
    out = Path(out)
    replace_atomically(out, lambda f: f.write(data))
    return out


class _CalibrationImages:
    """Feeds normalized images to the quantizer's calibration, 32 at a time: a
    `CalibrationDataReader` by its `get_next` (onnxruntime checks the method, not the base)."""

    def __init__(self, images: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{INPUT_NAME: np.ascontiguousarray(images[i:i + batch])}
                              for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


# ------------------------------------------------------------------------------- reading

def file_format(path: str | Path) -> str:
    """"pytorch" (a model file, or a train/run folder), "torchscript" or "onnx", told by
    content: TorchScript archives and torch model files are both zip files, and only
    TorchScript holds code; anything else is taken for ONNX (protobuf has no signature)."""
    path = Path(path)
    if path.is_dir():
        return "pytorch"
    if not path.is_file():
        raise ProxylessError(f"{clip(path)}: no such file; expected {_KNOWN}")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ProxylessError(f"{clip(path)} cannot be read ({err.strerror}); check the path "
                             "and its permissions") from None
    if head != b"PK\x03\x04":  # torch writes zip files, which start so
        return "onnx"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ProxylessError(f"{clip(path)} is a damaged zip archive (a truncated TorchScript "
                             f"export or model file? {first_line(err)}); write it "
                             "again") from None
    code = any("/code/" in name or name.endswith("/constants.pkl") for name in names)
    return "torchscript" if code else "pytorch"


def load_exported(path: str | Path, threads: int | None = None, device: str = "cpu",
                  trust_code: bool = False) -> Classifier:
    """An exported ONNX or TorchScript file, ready to run, with the metadata it carries.

    ONNX runs in ONNX Runtime on the CPU (`threads` intra-op threads; None: its default), from
    bytes, after every tensor is checked to hold its data inline: the file cannot make ONNX
    Runtime read other files. A TorchScript archive holds code, which runs when it is loaded
    and called, so it is refused unless `trust_code` (you made it, e.g. with `proxyless
    export`). A missing file, another format, a damaged file or one without our metadata is a
    ProxylessError."""
    path = Path(path)
    fmt = file_format(path)
    if fmt == "pytorch":
        raise ProxylessError(f"{clip(path)} is a proxyless model (model.pt), not an export: "
                             "load it with load_model, or export it with `proxyless export`")
    if fmt == "onnx":
        return _load_onnx(path, threads)
    if not trust_code:
        raise ProxylessError(f"{clip(path)} is a TorchScript file, whose code runs when loaded "
                             "and called; pass --trust-code (trust_code=True) if you made it "
                             "(e.g. with `proxyless export`)")
    return _load_torchscript(path, device)


def _load_onnx(path: Path, threads: int | None) -> Classifier:
    import onnx
    import onnxruntime as ort

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's errors name no file
        what = "a damaged ONNX file" if path.suffix == ".onnx" else "not a model file"
        raise ProxylessError(f"{clip(path)} cannot be read ({what}: {first_line(err)}); "
                             f"expected {_KNOWN}") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto)):
        raise ProxylessError(f"{clip(path)} refers to tensor data in other files (ONNX "
                             "external data), which proxyless exports never do and which could "
                             "read any file; export the model again")
    props = {p.key: p.value for p in proto.metadata_props}
    info = _info_from_json(props.get(METADATA_KEY), path, "ONNX metadata_props")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        raise ProxylessError(f"{clip(path)}: ONNX Runtime cannot run it ({first_line(err)}); "
                             "export the model again") from None
    _check_onnx_input(session, info, path)
    name = session.get_inputs()[0].name
    return Classifier(path, "onnx", info, lambda x: session.run(None, {name: x})[0])


def _all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX model, wherever ONNX Runtime may read one: initializers
    (dense and sparse), tensors in node attributes (Constant's value, ...), and those of the
    graphs in attributes (If, Loop and Scan bodies), of functions and of training graphs, at
    any depth. A stack, not recursion: a crafted file may nest graphs deeply."""
    graphs = [model.graph, *(graph for training in model.training_info
                             for graph in (training.initialization, training.algorithm))]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        tensors, sparse = [], []
        if graphs:
            graph = graphs.pop()
            nodes.extend(graph.node)
            tensors, sparse = list(graph.initializer), list(graph.sparse_initializer)
        else:
            for attr in nodes.pop().attribute:
                graphs.extend([attr.g, *attr.graphs])
                tensors.extend([attr.t, *attr.tensors])
                sparse.extend([attr.sparse_tensor, *attr.sparse_tensors])
        yield from tensors
        yield from (part for tensor in sparse for part in (tensor.values, tensor.indices))


def _check_onnx_input(session: Any, info: ModelInfo, path: Path) -> None:
    """The graph must take what its metadata says: one N x C x H x W input."""
    inputs = session.get_inputs()
    expected = (info.in_channels, info.input_size, info.input_size)
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else ()
    if len(inputs) != 1 or len(shape) != 3 or any(
            isinstance(dim, int) and dim != want for dim, want in zip(shape, expected,
                                                                      strict=True)):
        raise ProxylessError(f"{clip(path)}: its graph's input {[i.shape for i in inputs]} "
                             f"disagrees with its metadata (N x {' x '.join(map(str, expected))})"
                             "; export the model again")


def _load_torchscript(path: Path, device: str) -> Classifier:
    from proxyless.runtime import resolve_device

    target = resolve_device(device)
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=target, _extra_files=extra)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError and more for bad files
        raise ProxylessError(f"{clip(path)} cannot be loaded as TorchScript (damaged, or "
                             f"another kind of file: {first_line(err)}); expected "
                             f"{_KNOWN}") from None
    raw = extra[EXTRA_FILE]
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    info = _info_from_json(text or None, path, f"TorchScript extra file {EXTRA_FILE}")
    return Classifier(path, "torchscript", info, torch_runner(module.eval(), target))


def _info_from_json(text: str | None, path: Path, where: str) -> ModelInfo:
    if text is None:
        raise ProxylessError(f"{clip(path)} carries no proxyless metadata ({where}): not "
                             "exported by `proxyless export`, so its input normalisation and "
                             "classes are unknown; export the model with `proxyless export`")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ProxylessError(f"{clip(path)}: its proxyless metadata ({where}) is not valid "
                             f"JSON ({first_line(err)}); export the model again") from None
    return ModelInfo.from_metadata(data, f"{clip(path)} metadata")


# ------------------------------------------------------------------------------- checking

def compare_logits(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray,
                   tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """How far an export's logits are from the PyTorch model's on the same input: the largest
    absolute difference (None when either holds a NaN or inf), the images whose top-1 agrees,
    and both test top-1s. `verified`: within `tolerance` and the same top-1 on every image."""
    difference = float(np.max(np.abs(reference - exported), initial=0.0))
    finite = bool(np.isfinite(difference))
    same = int(np.sum(reference.argmax(1) == exported.argmax(1)))
    return {"verify_images": len(labels), "max_abs_diff": difference if finite else None,
            "tolerance": tolerance, "same_top1": same,
            "verified": finite and difference <= tolerance and same == len(labels),
            "top1_pytorch": top1(reference, labels), "top1_export": top1(exported, labels)}


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Test top-1 in percent."""
    return 100.0 * float(np.mean(logits.argmax(1) == labels)) if len(labels) else 0.0


def predicted_latency(model_file: Path, info: ModelInfo,
                      table: str | None) -> tuple[LatencyTable | None, dict[str, Any]]:
    """The latency table (`table`, else the run folder's own table when the model is a run's
    `retrain/model.pt`; None without one) and its prediction for the model's architecture,
    which is on the table's setting (device, backend, threads, batch) and time base."""
    from proxyless.latency.cost import latency_model
    from proxyless.latency.table import LatencyTable

    run_table = model_file.parent.parent / "latency_table.json"
    if table is not None:
        path = Path(table)
    elif model_file.parent.name == "retrain" and run_table.is_file():
        path = run_table
    else:
        return None, {"table": None, "predicted_ms": None, "table_setting": None}
    loaded = LatencyTable.load(path)
    return loaded, {"table": str(path), "table_setting": table_setting(loaded.meta),
                    "predicted_ms": latency_model(loaded, info.arch.space).predict(info.arch)}


def table_setting(meta: dict[str, Any]) -> dict[str, Any]:
    """Where and how a table was measured, from its meta: the fields it records, no more."""
    where = meta.get("gpu") or meta.get("cpu") or meta.get("device")
    setting = {"device": where, "backend": meta.get("backend"), "threads": meta.get("threads"),
               "batch": meta.get("batch", 1)}
    return {key: value for key, value in setting.items() if value is not None}


def measure_on_table(table: LatencyTable | None, arch: Architecture,
                     min_time: float) -> dict[str, Any]:
    """The model measured as the table was (its backend, batch, threads and anchor: raw ms
    divided by the machine's speed factor, so on the table's time base), which makes it
    comparable with the table's prediction. Only where the table was measured on this machine
    (`Meter.for_table` refuses others): a phone's or another CPU's figures cannot be."""
    from proxyless.latency.measure import Meter

    result: dict[str, Any] = {"measured_on_table_ms": None, "speed_factor": None,
                              "table_comparable": None, "table_not_comparable_because": None}
    if table is None:
        return result
    try:
        if table.space is None:
            raise ProxylessError("the table does not say which space it covers")
        meter = Meter.for_table(table, min_time=min_time)
    except ProxylessError as err:
        return {**result, "table_comparable": False, "table_not_comparable_because": str(err)}
    ms, speed = meter.measure([arch])
    return {**result, "measured_on_table_ms": ms[0] / speed, "speed_factor": speed,
            "table_comparable": True}


def measure_latency(runs: dict[str, Classifier], sample: np.ndarray, threads: int,
                    min_time: float) -> dict[str, Any]:
    """Latency (ms, 10th percentile) and its interquartile range of each classifier on
    `sample` (normalized input), at `threads`, timed together round-robin
    (`Timer.time_runs`) so that drift in the machine's speed hits all."""
    from proxyless.latency.timer import Timer

    entries = Timer("torch", "cpu", threads, warmup=10, repeats=50, min_time=min_time
                    ).time_runs([functools.partial(run.logits, sample) for run in runs.values()])
    return {"latency_ms": {name: e.ms for name, e in zip(runs, entries, strict=True)},
            "latency_iqr_ms": {name: e.spread for name, e in zip(runs, entries, strict=True)}}


# ------------------------------------------------------------------------------- command line

def add_export_parser(sub: Any) -> None:
    """`proxyless export` on the CLI's subparsers."""
    from proxyless.cli import min_time, positive_float, positive_int
    from proxyless.deploy.evaluate import add_model_data_args

    p = sub.add_parser("export", help="write a trained network as ONNX or TorchScript, "
                                      "verified against PyTorch and timed on this CPU")
    p.add_argument("model", help="model.pt, or the folder of a `train` or `run`")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="default onnx")
    p.add_argument("--out", required=True,
                   help="file to write (e.g. model.onnx, or model.torchscript)")
    p.add_argument("--int8", action="store_true",
                   help="also write <out stem>.int8.onnx: ONNX Runtime static int8 "
                        f"quantization calibrated on {CALIBRATION_IMAGES} training images")
    add_model_data_args(p)
    p.add_argument("--verify-images", type=positive_int, default=1000,
                   help="test images the export must agree with PyTorch on (default 1000)")
    p.add_argument("--tolerance", type=positive_float, default=DEFAULT_TOLERANCE,
                   help=f"largest |logit difference| accepted (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads for the measured latencies (default 1)")
    p.add_argument("--latency-time", type=min_time, default=2.0,
                   help="seconds of round-robin latency timing (default 2; 0: 50 rounds)")
    p.add_argument("--table", default=None,
                   help="latency table for the predicted latency (default: a run folder's "
                        "own latency_table.json); one measured here also gets the model "
                        "measured on its setting and time base")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def int8_path(out: str | Path) -> Path:
    """Where `--int8` writes: beside --out, `<stem>.int8.onnx`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.int8.onnx")


def _check_outputs(args: argparse.Namespace, source: Path) -> list[Path]:
    """Refuse before any work what could not be written or would overwrite the model file
    `source`."""
    from proxyless.runtime import check_out_file

    if args.int8 and args.format != "onnx":
        raise ProxylessError("--int8 quantizes with ONNX Runtime: use it with --format onnx")
    out = Path(args.out)
    if args.format == "torchscript" and out.suffix == ".onnx":
        raise ProxylessError(f"--out {clip(out)}: a TorchScript file named .onnx would mislead "
                             "every tool that opens it; name it .torchscript (or .ts), or use "
                             "--format onnx")
    outputs = [check_out_file(out, "--out")]
    if args.int8:
        outputs.append(check_out_file(int8_path(out), "--out (its .int8.onnx beside it)"))
    if any(path.resolve() == source.resolve() for path in outputs):
        raise ProxylessError(f"--out {clip(out)} is the model file itself; choose another "
                             "--out")
    return outputs


def cmd_export(args: argparse.Namespace) -> int:
    """Export, verify, quantize (--int8) and time; exit code 1 when verification fails
    (the file is kept for inspection)."""
    from proxyless.deploy.evaluate import model_data
    from proxyless.deploy.model_file import load_model, model_path

    source = model_path(args.model)
    outputs = _check_outputs(args, source)
    model = load_model(source)
    table, prediction = predicted_latency(source, model.info, args.table)  # both before the
    data = model_data(model.info, args.data, args.data_dir)                # export: fail fast
    report = {"model": str(source), "architecture": model.info.arch.encode(),
              "format": args.format, "export": str(outputs[0]), "threads": args.threads,
              "data": data.name, **prediction}
    test = data.test.subset(range(min(args.verify_images, len(data.test))))
    x, labels = model.preprocess(test.images).numpy(), test.labels.numpy()
    export_model(model, outputs[0], args.format)
    report["export_bytes"] = outputs[0].stat().st_size
    reference = pytorch_classifier(model, source)
    # the file just written, by this process: its TorchScript code is ours
    exported = load_exported(outputs[0], threads=args.threads, trust_code=True)
    fp32 = exported.batched_logits(x)
    report.update(compare_logits(reference.batched_logits(x), fp32, labels, args.tolerance))
    runs = {"pytorch": reference, args.format: exported}
    report["int8"] = None
    if args.int8:
        runs["onnx int8"], report["int8"] = _int8(model, data, outputs, x, fp32, labels,
                                                  args.threads)
    report.update(measure_latency(runs, x[:1].copy(), args.threads, args.latency_time))
    report.update(measure_on_table(table, model.info.arch, args.latency_time))
    if report["int8"] is not None:
        report["int8"]["latency_ms"] = report["latency_ms"]["onnx int8"]
    print(json.dumps(report, indent=2) if args.json else _describe(report))
    if not report["verified"]:
        print(f"proxyless: error: {_failure(report)}; the file was kept at {outputs[0]} for "
              "inspection", file=sys.stderr)
        return 1
    return 0


def _int8(model: TrainedModel, data: Any, outputs: list[Path], x: np.ndarray, fp32: np.ndarray,
          labels: np.ndarray, threads: int) -> tuple[Classifier, dict[str, Any]]:
    """Quantize the fp32 export (outputs[0]) to outputs[1], calibrated on training images;
    its figures on the test images (its fp32 top-1 is the report's `top1_export`)."""
    drawn = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    calibration = model.preprocess(data.train.images[drawn[:CALIBRATION_IMAGES]]).numpy()
    fp32_file, out = outputs
    quantize_int8(fp32_file, out, calibration, model.info)
    quantized = load_exported(out, threads=threads)
    logits = quantized.batched_logits(x)
    return quantized, {"file": str(out), "bytes": out.stat().st_size,
                       "calibration_images": len(calibration), "top1": top1(logits, labels),
                       "same_top1_as_fp32": int(np.sum(logits.argmax(1) == fp32.argmax(1)))}


def _failure(report: dict[str, Any]) -> str:
    """What verification found wrong, in one line."""
    problems = []
    diff = report["max_abs_diff"]
    if diff is None or diff > report["tolerance"]:
        shown = "not finite" if diff is None else f"{diff:.2e}"
        problems.append(f"max |logit difference| {shown} exceeds {report['tolerance']:g}")
    if report["same_top1"] != report["verify_images"]:
        problems.append(f"top-1 differs on {report['verify_images'] - report['same_top1']} "
                        f"of {report['verify_images']} images")
    return f"the {report['format']} export does not match the PyTorch model: " + \
        "; ".join(problems)


def _describe(report: dict[str, Any]) -> str:
    """The text report: export, verification, accuracy, latency."""
    n, fmt = report["verify_images"], report["format"]
    diff = report["max_abs_diff"]
    lines = [f"exported {report['architecture']} -> {report['export']} ({fmt}, "
             f"{report['export_bytes'] / 1024:.0f} KiB)",
             f"{'verified' if report['verified'] else 'verification FAILED'} on {n:,} test "
             f"images of {report['data']}: max |logit difference| "
             f"{'n/a (not finite)' if diff is None else f'{diff:.2e}'} (limit "
             f"{report['tolerance']:g}), same top-1 on {report['same_top1']:,}/{n:,}",
             f"test top-1: PyTorch {report['top1_pytorch']:.2f}%, {fmt} "
             f"{report['top1_export']:.2f}%"]
    int8 = report["int8"]
    if int8 is not None:
        lines.append(f"int8 -> {int8['file']} ({int8['bytes'] / 1024:.0f} KiB): test top-1 "
                     f"{int8['top1']:.2f}% (fp32 {report['top1_export']:.2f}%), same top-1 as "
                     f"fp32 on {int8['same_top1_as_fp32']:,}/{n:,}")
    from proxyless.latency.timer import cpu_model

    lines.append(f"batch-1 latency, {report['threads']} thread(s), {cpu_model()}, as measured "
                 "now:")
    for name, ms in report["latency_ms"].items():
        lines.append(f"  {name + ' (measured)':<28}{ms:>9.3f} ms   IQR "
                     f"{report['latency_iqr_ms'][name]:.3f}")
    return "\n".join(lines + _describe_table(report))


def _describe_table(report: dict[str, Any]) -> list[str]:
    """The latency table's lines: its prediction, labelled with the table's setting, beside
    the model measured on that setting where the table is this machine's; a table of another
    device is said not to be comparable with the figures above."""
    if report["table"] is None:
        return [f"  {'predicted (table)':<28}      n/a (give --table)"]
    setting = report["table_setting"]
    batch = setting.get("batch", 1)
    unit = "ms" if batch == 1 else f"ms per batch of {batch}"
    comparable = report["table_comparable"]
    note = "on the table's time base" if comparable else "not comparable with this CPU's figures"
    lines = [f"latency table {report['table']} ({_setting_text(setting)}), {note}:",
             f"  {'predicted (table)':<28}{report['predicted_ms']:>9.3f} {unit}"]
    if comparable:
        lines.append(f"  {'measured (table setting)':<28}{report['measured_on_table_ms']:>9.3f}"
                     f" {unit}   the PyTorch model timed as the table was (raw ms / "
                     f"machine speed x{report['speed_factor']:.3f})")
    else:
        lines.append(f"  not measured here: {report['table_not_comparable_because']}")
    return lines


def _setting_text(setting: dict[str, Any]) -> str:
    """"device: backend, N thread(s), batch B", of the fields the table records."""
    parts = [setting.get("backend"),
             f"{setting['threads']} thread(s)" if "threads" in setting else None,
             f"batch {setting.get('batch', 1)}"]
    text = ", ".join(part for part in parts if part)
    return f"{setting['device']}: {text}" if "device" in setting else text
