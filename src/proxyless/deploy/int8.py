"""int8 exports: an ONNX file quantized by ONNX Runtime, calibrated on training images.

    >>> quantize_int8("model.onnx", "model.int8.onnx", calibration_images, model.info)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.config_io import clip
from proxyless.data import DataSplits
from proxyless.deploy.classifier import Classifier, load_exported
from proxyless.deploy.model_file import ModelInfo, TrainedModel
from proxyless.deploy.verify import top1
from proxyless.deploy.write import INPUT_NAME, set_metadata
from proxyless.engine.runtime import first_line
from proxyless.errors import ProxylessError
from proxyless.files import replace_atomically

CALIBRATION_IMAGES = 256                   # training images that set the int8 ranges


def int8_path(out: str | Path) -> Path:
    """Where `--int8` writes: beside --out, `<stem>.int8.onnx`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.int8.onnx")


def quantize_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray,
                  info: ModelInfo) -> Path:
    """An int8 copy of the ONNX file `fp32` at `out` (atomically): ONNX Runtime static
    quantization, QDQ format, per-channel int8 weights and uint8 activations (the pairing
    ONNX Runtime's x86 kernels run fastest), activation ranges from `calibration` (normalized
    training images: test images would leak into the figures reported on them). `info`, the
    model's, becomes the int8 file's metadata."""
    # heavy: deferred to the quantization (`proxyless --help` need not load them)
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
    set_metadata(proto, info, note=f"int8 static (QDQ, per-channel), calibrated on "
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


def calibration_images(model: TrainedModel, data: DataSplits) -> np.ndarray:
    """`CALIBRATION_IMAGES` training images drawn with a fixed seed, as the network's input:
    training images, since test images would leak into the figures reported on them."""
    drawn = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    return model.preprocess(data.train.readable(drawn[:CALIBRATION_IMAGES])[0]).numpy()


def quantize_and_check(model: TrainedModel, data: DataSplits, outputs: list[Path], x: np.ndarray,
                       fp32: np.ndarray, labels: np.ndarray,
                       threads: int) -> tuple[Classifier, dict[str, Any]]:
    """Quantize the fp32 export (outputs[0]) to outputs[1], calibrated on training images;
    its figures on the test images (its fp32 top-1 is the report's `top1_export`)."""
    calibration = calibration_images(model, data)
    fp32_file, out = outputs
    quantize_int8(fp32_file, out, calibration, model.info)
    quantized = load_exported(out, threads=threads)
    logits = quantized.batched_logits(x)
    return quantized, {"file": str(out), "bytes": out.stat().st_size,
                       "calibration_images": len(calibration), "top1": top1(logits, labels),
                       "same_top1_as_fp32": int(np.sum(logits.argmax(1) == fp32.argmax(1)))}
