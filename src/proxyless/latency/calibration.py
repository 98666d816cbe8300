"""Correcting a lookup table's sum to end-to-end latency.

A sum of per-op latencies misses what happens between ops (framework overhead, memory
traffic, caches warm from the previous op). We fit

    measured ≈ offset + s_fixed · Σ fixed layers + Σ_k s_k · Σ blocks with kernel k
               + c · (number of blocks that are not zero)

with non-negative least squares (c of either sign) on a few architectures measured end to end
(`calibrate`), and store the offset, scales and per-op term with the table. The per-op term is
what a table of separately timed layers gets wrong by a constant per layer: in ONNX Runtime
each layer's own session run costs a few microseconds that the whole graph pays once, which
makes a table sum 40% too high on small networks and misranks networks with different numbers
of zero blocks. It stays linear in the per-block costs (c is added to every non-zero
candidate's cost), so the expected latency of the supernet stays differentiable;
`latency.cost.latency_model` applies it.
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
CALIBRATION_NETWORKS = 20  # measured end to end to fit a new table's correction


def layer_type(token: str) -> str:
    """The calibration group of a block's op: `k3`, `k5`, ... (`zero` costs nothing)."""
    spec = parse_token(token)
    return "zero" if spec.is_zero else f"k{spec.kernel}"


@dataclass
class Calibration:
    offset: float = 0.0
    scales: dict[str, float] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)   # how well it fitted, on how many architectures
    per_op: float = 0.0                       # ms added per block that is not zero

    def scale(self, kind: str) -> float:
        return self.scales.get(kind, 1.0)

    def to_dict(self) -> dict:
        return {"offset": self.offset, "scales": self.scales, "per_op": self.per_op,
                "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(float(data.get("offset", 0.0)),
                   {k: float(v) for k, v in data.get("scales", {}).items()},
                   dict(data.get("fit", {})), float(data.get("per_op", 0.0)))


def fit_calibration(parts: list[dict[str, float]], measured: list[float],
                    ops: list[int] | None = None) -> Calibration:
    """Fit offset and per-type scales (all >= 0) to end-to-end measurements; with `ops` (each
    network's non-zero blocks), the per-op term too (of either sign: +ops and -ops are two
    columns, of which the fit keeps one)."""
    kinds = sorted({k for p in parts for k in p if k != "zero"})
    counts = [[n, -n] for n in ops] if ops is not None else [[] for _ in parts]
    features = np.array([[1.0] + [p.get(k, 0.0) for k in kinds] + c
                         for p, c in zip(parts, counts, strict=True)])
    target = np.asarray(measured, dtype=float)
    # scipy takes a third of a second to import: paid by the fit, not by every command
    from scipy.optimize import nnls

    coef, _ = nnls(features, target)
    scales = coef[1:1 + len(kinds)]
    per_op = float(coef[-2] - coef[-1]) if ops is not None else 0.0
    calibration = Calibration(float(coef[0]), {k: float(c) for k, c in zip(kinds, scales,
                                                                           strict=True)},
                              per_op=per_op)
    predicted = features @ coef
    plain = features[:, 1:1 + len(kinds)].sum(1)
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


def op_count(arch: Architecture) -> int:
    """The network's searchable blocks that are not zero: the layers the per-op term counts."""
    return sum(1 for token in arch.blocks if not parse_token(token).is_zero)


def calibrate(table: LatencyTable, count: int = CALIBRATION_NETWORKS, seed: int = CALIBRATION_SEED,
              progress: bool = True) -> Calibration:
    """Measure `count` architectures end to end and store the fitted correction in `table`."""
    archs = spread_architectures(table.space, count, seed)
    measured, speed = Meter.for_table(table).measure(archs, progress, "calibrate")
    calibration = fit_calibration([table_parts(a, table) for a in archs],
                                  [m / speed for m in measured], [op_count(a) for a in archs])
    table.calibration = calibration.to_dict()
    return calibration
