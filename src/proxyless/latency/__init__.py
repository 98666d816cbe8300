"""Hardware latency: device profiling, lookup tables, cost models, calibration and checks.

    proxyless profile --space fashion --out table.json --threads 1     # measure this device
    proxyless latency-check --table table.json --samples 50 --json     # is the model right?

- `table.py`        lookup tables (ours and the reference code's format)
- `profile.py`      timing layers and whole networks (torch or ONNX Runtime; CPU or CUDA)
- `model.py`        cost models: E[latency] differentiable in α; FLOPs and params alike
- `calibration.py`  the correction from table sums to end-to-end latency
- `check.py`        calibrate a table, and check it on fresh architectures
"""

from proxyless.latency.model import CostModel, flops_model, latency_model, params_model
from proxyless.latency.table import LatencyTable

__all__ = ["CostModel", "LatencyTable", "flops_model", "latency_model", "params_model"]
