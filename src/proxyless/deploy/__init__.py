"""From a search to a deployed network.

    model_file.py  `model.pt`: architecture, weights, input and normalisation, class names;
                   `load_model` (safe: tensors and plain data only), `save_model`
    write.py       ONNX / TorchScript files that carry the same metadata (`export_model`)
    classifier.py  any of these ready to run on numpy input (`Classifier`, `load_classifier`,
                   `load_exported`: TorchScript only with trust_code, as it holds code)
    verify.py      an export's logits and top-1 against the PyTorch model's
    int8.py        int8 ONNX by ONNX Runtime static quantization, calibrated on training images
    timing.py      an export's latency: measured now, predicted by a table, on its setting
    export.py      the export job: write, verify, quantize, time (`export_and_check`)
    evaluate.py    test top-1 of a model file or an exported file on its data (or other data)
"""

from proxyless.deploy.classifier import Classifier, load_classifier, load_exported
from proxyless.deploy.evaluate import evaluate_file
from proxyless.deploy.export import export_and_check
from proxyless.deploy.model_file import (
    MODEL_FORMAT,
    ModelInfo,
    TrainedModel,
    load_model,
    model_path,
    read_model_file,
    save_model,
)
from proxyless.deploy.write import export_model

__all__ = ["MODEL_FORMAT", "Classifier", "ModelInfo", "TrainedModel", "evaluate_file",
           "export_and_check", "export_model", "load_classifier", "load_exported",
           "load_model", "model_path", "read_model_file", "save_model"]
