"""Correcting a lookup table's sum to end-to-end latency.

A sum of per-op latencies misses what happens between ops (framework overhead, memory
traffic, caches warm from the previous op). We fit

    measured ≈ offset + s_fixed · Σ fixed layers + Σ_k s_k · Σ blocks with kernel k

with non-negative least squares on a few architectures measured end to end, and store the
offset and scales with the table. It stays linear in the per-block costs, so the expected
latency of the supernet stays differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from proxyless.space import parse_token


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

    def apply(self, parts: dict[str, float]) -> float:
        """Calibrated latency from the per-type sums of table entries."""
        return self.offset + sum(self.scale(k) * v for k, v in parts.items())

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
