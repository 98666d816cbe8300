"""Any model file ready to run on numpy input: a `Classifier`.

    >>> model = load_classifier("model.onnx")           # or model.pt, a run folder, TorchScript
    >>> model.info.classes, model.info.mean             # the model's ModelInfo
    >>> model.predict_images(images_uint8)              # class indices (N x C x H x W, 0..255)

A model file (`model.pt`, or a train or run folder) runs in PyTorch; an export (`write.py`)
runs in ONNX Runtime (ONNX) or PyTorch (TorchScript), with the metadata it carries, and one
without it is refused. Nothing proxyless loads may run code it holds: ONNX files are data
(external data refused), but a TorchScript file is code, so it is refused unless `trust_code`
(`--trust-code`) says its maker is trusted.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.config_io import clip
from proxyless.data.batches import normalization, to_network_input
from proxyless.deploy.model_file import (
    ModelInfo,
    TrainedModel,
    check_images,
    load_model,
    model_path,
)
from proxyless.deploy.write import EXTRA_FILE, METADATA_KEY
from proxyless.engine.runtime import first_line, resolve_device
from proxyless.errors import ProxylessError

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


def _load_onnx(path: Path, threads: int | None) -> Classifier:
    # heavy: deferred to the first ONNX file (`proxyless --help` need not load them)
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
