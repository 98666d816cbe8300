"""From a search to a deployed network.

    model_file.py  `model.pt`: architecture, weights, input and normalisation, class names;
                   `load_model` (safe: tensors and plain data only), `save_model`
"""

from proxyless.deploy.model_file import (
    MODEL_FORMAT,
    ModelInfo,
    TrainedModel,
    load_model,
    model_path,
    read_model_file,
    save_model,
)

__all__ = ["MODEL_FORMAT", "ModelInfo", "TrainedModel", "load_model", "model_path",
           "read_model_file", "save_model"]
