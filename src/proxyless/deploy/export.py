"""Exported networks: ONNX and TorchScript files that carry their own metadata, checked
against the PyTorch model they came from, and timed on this CPU.

    proxyless export runs/x --format onnx --out model.onnx [--int8]

    >>> exported = load_exported("model.onnx")          # or a TorchScript file
    >>> exported.info.classes, exported.info.mean       # the model's ModelInfo
    >>> exported.predict_images(images_uint8)           # class indices (N x C x H x W, 0..255)

An exported network takes normalized float input (N x C x H x W; (pixels / 255 - mean) / std
per channel) and returns logits; the batch axis is free. The metadata (`ModelInfo.to_metadata`:
architecture, input size, normalisation, class names, data, metrics) travels as JSON: in ONNX
`metadata_props` (key "proxyless", with readable copies under "architecture", "classes",
"mean", "std", "input_size"), in TorchScript as the archive's extra file `proxyless.json`.
So a deployment needs the file alone, and `load_exported` refuses a file without it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.config import clip, replace_atomically
from proxyless.deploy.model_file import ModelInfo, TrainedModel
from proxyless.errors import ProxylessError
from proxyless.runtime import first_line

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "proxyless"                 # ONNX metadata_props key of the JSON
EXTRA_FILE = "proxyless.json"              # TorchScript extra file of the JSON
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_TOLERANCE = 1e-4                   # max |logit difference| a faithful export shows
CALIBRATION_IMAGES = 256                   # training images that set the int8 ranges
_KNOWN = "a proxyless model file (model.pt), a TorchScript export or an ONNX file (.onnx)"


Logits = Callable[[np.ndarray], np.ndarray]


@dataclass
class ExportedModel:
    """A classifier file ready to run on numpy input: an ONNX or TorchScript export (or, for
    `evaluate`, a PyTorch model file: format "pytorch"), with the model's `ModelInfo`."""

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

    def normalize(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 (or 0..255) images N x C x H x W -> the network's float32 input."""
        pixels = np.asarray(images, dtype=np.float32)
        shape = (1, len(self.info.mean), 1, 1)
        mean = np.asarray(self.info.mean, np.float32).reshape(shape)
        std = np.asarray(self.info.std, np.float32).reshape(shape)
        return (pixels / 255 - mean) / std

    def predict_images(self, images: torch.Tensor | np.ndarray,
                       batch_size: int = 500) -> np.ndarray:
        """Class indices of uint8 images, `batch_size` at a time (bounded memory)."""
        x = self.normalize(images)
        return batched_logits(self, x, batch_size).argmax(1)


def batched_logits(model: ExportedModel, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model.logits(x[i:i + batch_size])
                           for i in range(0, len(x), batch_size)])


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
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=17, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
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


def quantize_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray) -> Path:
    """An int8 copy of the ONNX file `fp32` at `out` (atomically): ONNX Runtime static
    quantization, QDQ format, per-channel int8 weights and uint8 activations (the pairing
    ONNX Runtime's x86 kernels run fastest), activation ranges from `calibration` (normalized
    training images: test images would leak into the figures reported on them)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info = load_exported(fp32).info
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


def load_exported(path: str | Path, threads: int | None = None,
                  device: str = "cpu") -> ExportedModel:
    """An exported ONNX or TorchScript file, ready to run, with the metadata it carries.

    ONNX runs in ONNX Runtime on the CPU (`threads` intra-op threads; None: its default);
    the file is read without external data, so it cannot make ONNX Runtime read other files.
    TorchScript loads with `torch.jit.load`, whose restricted unpickler rebuilds tensors and
    TorchScript classes only, never arbitrary Python classes; the archive's TorchScript code
    runs when the model is called, so run files you trust, as with any model. A missing file,
    another format, a damaged file or one without our metadata is a ProxylessError."""
    path = Path(path)
    fmt = file_format(path)
    if fmt == "pytorch":
        raise ProxylessError(f"{clip(path)} is a proxyless model (model.pt), not an export: "
                             "load it with load_model, or export it with `proxyless export`")
    if fmt == "onnx":
        return _load_onnx(path, threads)
    return _load_torchscript(path, device)


def _load_onnx(path: Path, threads: int | None) -> ExportedModel:
    import onnx
    import onnxruntime as ort

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's errors name no file
        what = "a damaged ONNX file" if path.suffix == ".onnx" else "not a model file"
        raise ProxylessError(f"{clip(path)} cannot be read ({what}: {first_line(err)}); "
                             f"expected {_KNOWN}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    info = _info_from_json(props.get(METADATA_KEY), path, "ONNX metadata_props")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise ProxylessError(f"{clip(path)} keeps weights in external files, which proxyless "
                             "exports never do; export the model again")
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
    return ExportedModel(path, "onnx", info, lambda x: session.run(None, {name: x})[0])


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


def _load_torchscript(path: Path, device: str) -> ExportedModel:
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
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(target)).cpu().numpy()
    return ExportedModel(path, "torchscript", info, run)


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


def pytorch_logits(model: TrainedModel, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)]).numpy()


def predicted_latency(model_file: Path, info: ModelInfo, table: str | None) -> dict[str, Any]:
    """The latency table's prediction for the model's architecture: from `table`, else the
    run folder's own table when the model is a run's `retrain/model.pt`; none without one."""
    from proxyless.latency.cost import latency_model
    from proxyless.latency.table import LatencyTable

    run_table = model_file.parent.parent / "latency_table.json"
    if table is not None:
        path = Path(table)
    elif model_file.parent.name == "retrain" and run_table.is_file():
        path = run_table
    else:
        return {"predicted_ms": None, "table": None}
    loaded = LatencyTable.load(path)
    meta = loaded.meta
    return {"predicted_ms": latency_model(loaded, info.arch.space).predict(info.arch),
            "table": str(path), "table_backend": meta.get("backend"),
            "table_threads": meta.get("threads"), "table_batch": meta.get("batch")}


def measure_latency(runs: dict[str, Callable[[], object]], threads: int,
                    min_time: float) -> dict[str, Any]:
    """Batch-1 latency (ms, 10th percentile) and its interquartile range of each run, timed
    together round-robin (`Timer.time_runs`) so that drift in the machine's speed hits all."""
    from proxyless.latency.timer import Timer

    entries = Timer("torch", "cpu", threads, warmup=10, repeats=50,
                    min_time=min_time).time_runs(list(runs.values()))
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
    p.add_argument("--out", required=True, help="file to write (e.g. model.onnx)")
    p.add_argument("--int8", action="store_true",
                   help="also write <out stem>.int8.onnx: ONNX Runtime static int8 "
                        f"quantization calibrated on {CALIBRATION_IMAGES} training images")
    add_model_data_args(p)
    p.add_argument("--verify-images", type=positive_int, default=1000,
                   help="test images the export must agree with PyTorch on (default 1000)")
    p.add_argument("--tolerance", type=positive_float, default=DEFAULT_TOLERANCE,
                   help=f"largest |logit difference| accepted (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads for the latency figures (default 1)")
    p.add_argument("--latency-time", type=min_time, default=2.0,
                   help="seconds of round-robin latency timing (default 2; 0: 50 rounds)")
    p.add_argument("--table", default=None,
                   help="latency table for the predicted latency (default: a run folder's "
                        "own latency_table.json)")
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
                             "every tool that opens it; name it .pt or use --format onnx")
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
    report = {"model": str(source), "architecture": model.info.arch.encode(),
              "format": args.format, "export": str(outputs[0]), "threads": args.threads,
              **predicted_latency(source, model.info, args.table)}
    data = model_data(model.info, args.data, args.data_dir)  # both before the export
    report["data"] = data.name
    test = data.test.subset(range(min(args.verify_images, len(data.test))))
    x = model.preprocess(test.images)
    export_model(model, outputs[0], args.format)
    report["export_bytes"] = outputs[0].stat().st_size
    exported = load_exported(outputs[0], threads=args.threads)
    fp32 = batched_logits(exported, x.numpy(), 500)
    report.update(compare_logits(pytorch_logits(model, x), fp32, test.labels.numpy(),
                                 args.tolerance))
    sample = x[:1].clone()
    runs = {"pytorch": lambda: pytorch_logits(model, sample),
            args.format: lambda: exported.logits(sample.numpy())}
    report["int8"] = None
    if args.int8:
        quantized, report["int8"] = _int8(model, data, outputs[1], outputs[0], x, fp32,
                                          test.labels.numpy(), args.threads)
        runs["onnx int8"] = lambda: quantized.logits(sample.numpy())
    report.update(measure_latency(runs, args.threads, args.latency_time))
    if report["int8"] is not None:
        report["int8"]["latency_ms"] = report["latency_ms"]["onnx int8"]
    print(json.dumps(report, indent=2) if args.json else _describe(report))
    if not report["verified"]:
        print(f"proxyless: error: {_failure(report)}; the file was kept at {outputs[0]} for "
              "inspection", file=sys.stderr)
        return 1
    return 0


def _int8(model: TrainedModel, data: Any, out: Path, fp32_file: Path, x: torch.Tensor,
          fp32: np.ndarray, labels: np.ndarray,
          threads: int) -> tuple[ExportedModel, dict[str, Any]]:
    """Quantize the fp32 export with training images; its figures on the test images."""
    drawn = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    calibration = model.preprocess(data.train.images[drawn[:CALIBRATION_IMAGES]]).numpy()
    quantize_int8(fp32_file, out, calibration)
    quantized = load_exported(out, threads=threads)
    logits = batched_logits(quantized, x.numpy(), 500)
    return quantized, {"file": str(out), "bytes": out.stat().st_size,
                       "calibration_images": len(calibration), "top1": top1(logits, labels),
                       "top1_fp32": top1(fp32, labels),
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
    """The text report: export, verification, accuracy, latency table."""
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
                     f"{int8['top1']:.2f}% (fp32 {int8['top1_fp32']:.2f}%), same top-1 as "
                     f"fp32 on {int8['same_top1_as_fp32']:,}/{n:,}")
    from proxyless.latency.timer import cpu_model

    lines.append(f"batch-1 latency, {report['threads']} thread(s), {cpu_model()}:")
    for name, ms in report["latency_ms"].items():
        lines.append(f"  {name + ' (measured)':<22}{ms:>9.3f} ms   IQR "
                     f"{report['latency_iqr_ms'][name]:.3f}")
    lines.append(f"  {'predicted (table)':<22}" + (
        "      n/a (give --table)" if report["predicted_ms"] is None else
        f"{report['predicted_ms']:>9.3f} ms   {report['table']}: {report['table_backend']}, "
        f"{report['table_threads']} thread(s), batch {report['table_batch']}"))
    return "\n".join(lines)
