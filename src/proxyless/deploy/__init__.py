"""From a search to a deployed network.

    model_file.py  `model.pt`: architecture, weights, input and normalisation, class names;
                   `load_model` (safe: tensors and plain data only), `save_model`
    export.py      ONNX / TorchScript (and int8 ONNX) files with the same metadata, verified
                   against the PyTorch model; `load_exported` (TorchScript only with
                   trust_code: it holds code); `Classifier`, any of these run on numpy input
    evaluate.py    test top-1 of a model file or an exported file on its data (or other data)
"""

from proxyless.deploy.evaluate import evaluate_file
from proxyless.deploy.export import Classifier, export_model, load_exported
from proxyless.deploy.model_file import (
    MODEL_FORMAT,
    ModelInfo,
    TrainedModel,
    load_model,
    model_path,
    read_model_file,
    save_model,
)

__all__ = ["MODEL_FORMAT", "Classifier", "ModelInfo", "TrainedModel", "evaluate_file",
           "export_model", "load_exported", "load_model", "model_path", "read_model_file",
           "save_model"]
