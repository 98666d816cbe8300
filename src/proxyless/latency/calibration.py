"""Correcting a lookup table's sum to end-to-end latency.

A sum of per-op latencies misses what happens between ops (framework overhead, memory
traffic, caches warm from the previous op). We fit

    measured ≈ offset + s_fixed · Σ fixed layers + Σ_k s_k · Σ blocks with kernel k

with non-negative least squares on a few architectures measured end to end (`calibrate`),
and store the offset and scales with the table. It stays linear in the per-block costs, so the
expected latency of the supernet stays differentiable; `latency.cost.latency_model` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from proxyless.arch import Architecture
from proxyless.latency.measure import Meter, spread_architectures
from proxyless.latency.table import LatencyTable
from proxyless.space import parse_token
from proxyless.walk import walk

CALIBRATION_SEED = 1000


def layer_type(token: str) -> str:
    """The calibration group of a block's op: `k3`, `k5`, ... (`zero` costs nothing)."""
    spec = parse_token(token)
    return "zero" if spec.is_zero else f"k{spec.kernel}"


@dataclass
class Calibration:
    offset: float = 0.0
    scales: dict[str, float] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)   # how well it fitted, on how many architectures

    def scale(self, kind: str) -> float:
        return self.scales.get(kind, 1.0)

    def to_dict(self) -> dict:
        return {"offset": self.offset, "scales": self.scales, "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(float(data.get("offset", 0.0)),
                   {k: float(v) for k, v in data.get("scales", {}).items()},
                   dict(data.get("fit", {})))


def fit_calibration(parts: list[dict[str, float]], measured: list[float]) -> Calibration:
    """Fit offset and per-type scales (all >= 0) to end-to-end measurements."""
    kinds = sorted({k for p in parts for k in p if k != "zero"})
    features = np.array([[1.0] + [p.get(k, 0.0) for k in kinds] for p in parts])
    target = np.asarray(measured, dtype=float)
    # scipy takes a third of a second to import: paid by the fit, not by every command
    from scipy.optimize import nnls

    coef, _ = nnls(features, target)
    calibration = Calibration(float(coef[0]), {k: float(c) for k, c in zip(kinds, coef[1:],
                                                                           strict=True)})
    predicted = features @ coef
    plain = features[:, 1:].sum(1)
    calibration.fit = {
        "architectures": len(measured),
        "mape_plain_sum": float(np.mean(np.abs(plain - target) / target) * 100),
        "mape_fitted": float(np.mean(np.abs(predicted - target) / target) * 100),
    }
    return calibration


def table_parts(arch: Architecture, table: LatencyTable) -> dict[str, float]:
    """Sums of the table's entries by calibration group (`fixed`, `k3`, `k5`, ...)."""
    parts: dict[str, float] = {}
    for layer in walk(arch):
        if not layer.key:
            continue
        kind = layer_type(layer.token) if layer.searchable else "fixed"
        parts[kind] = parts.get(kind, 0.0) + table.ms(layer.key)
    return parts


def calibrate(table: LatencyTable, count: int = 20, seed: int = CALIBRATION_SEED,
              progress: bool = True) -> Calibration:
    """Measure `count` architectures end to end and store the fitted correction in `table`."""
    archs = spread_architectures(table.space, count, seed)
    measured, speed = Meter.for_table(table).measure(archs, progress, "calibrate")
    calibration = fit_calibration([table_parts(a, table) for a in archs],
                                  [m / speed for m in measured])
    table.calibration = calibration.to_dict()
    return calibration
