"""Hardware latency: device profiling, lookup tables, cost models, calibration and checks.

    proxyless profile --space fashion --out table.json --threads 1     # measure this device
    proxyless latency-check --table table.json --samples 50 --json     # is the model right?

- `timer.py`        timing modules on one backend, device and thread count; device fingerprint
- `measure.py`      the one way to measure whole networks: beside an anchor, on a time base
- `profile.py`      every distinct layer of a space timed into a lookup table
- `table.py`        lookup tables (ours and the reference code's format)
- `cache.py`        tables cached per device fingerprint (`proxyless run`)
- `cost.py`         cost models: E[latency] differentiable in α; FLOPs and params alike
- `calibration.py`  the fitted correction from table sums to end-to-end latency
- `check.py`        the cost model's predictions against fresh networks measured end to end
- `settings.py`     settings of this machine (backend, batch, threads); networks timed on one
- `matrix.py`       the cross-latency matrix's columns, and which network is fastest where
- `cross.py`        cross-latency: networks timed on several settings; matrix.md/.json/.png
- `kit.py`          profiling kits: a device without PyTorch times the layers, the table is
                    made here from its timings
- `profile_kit.py`  the kit's own script, run on that device (numpy and ONNX Runtime only)
"""

from proxyless.latency.cost import CostModel, flops_model, latency_model, params_model
from proxyless.latency.table import LatencyTable

__all__ = ["CostModel", "LatencyTable", "flops_model", "latency_model", "params_model"]
