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
    refused: str | None = None                # why the fit is not used: the plain table sum

    def scale(self, kind: str) -> float:
        return self.scales.get(kind, 1.0)

    def to_dict(self) -> dict:
        if self.refused is not None:
            return {"refused": self.refused, "fit": self.fit}
        return {"offset": self.offset, "scales": self.scales, "per_op": self.per_op,
                "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("refused"):  # the identity: the table's sum as it is
            return cls(fit=dict(data.get("fit", {})), refused=str(data["refused"]))
        return cls(float(data.get("offset", 0.0)),
                   {k: float(v) for k, v in data.get("scales", {}).items()},
                   dict(data.get("fit", {})), float(data.get("per_op", 0.0)))

    def refuse(self, reason: str) -> Calibration:
        """This fit, not to be used (`reason`): the table keeps its plain sum."""
        return Calibration(fit=self.fit, refused=reason)

    def summary(self) -> str:
        """One line: how well it fitted, or why the plain table sum is kept."""
        fit = self.fit
        if self.refused is not None:
            return f"calibration not used ({self.refused}): the table's plain sum is kept"
        note = f" ({fit['note']})" if fit.get("note") else ""
        return (f"calibration on {fit['architectures']} networks: MAPE "
                f"{fit['mape_plain_sum']:.1f}% (table sum) -> {fit['mape_fitted']:.1f}% "
                f"(fitted){note}")


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
        "terms": fit_terms(len(kinds), ops is not None),
        "mape_plain_sum": float(np.mean(np.abs(plain - target) / target) * 100),
        "mape_fitted": float(np.mean(np.abs(predicted - target) / target) * 100),
    }
    return calibration


def fit_terms(kinds: int, per_op: bool) -> int:
    """The fit's free parameters: the offset, a scale per group, the per-op term."""
    return 1 + kinds + int(per_op)


def calibration_problem(calibration: Calibration, table: LatencyTable) -> str | None:
    """Why `calibration` must not be used on `table`, or None: fitted on no more networks
    than it has terms (an exact fit through a few points, which predicts anything between
    them), worse than the plain sum on its own networks, or making any layer or network cost
    nothing or less."""
    fit = calibration.fit
    networks, terms = fit.get("architectures", 0), fit.get("terms", 0)
    if networks <= terms:
        return (f"{networks} networks cannot fit its {terms} terms; calibrate on at least "
                f"{terms + 1}, e.g. the default {CALIBRATION_NETWORKS}")
    if fit["mape_fitted"] > fit["mape_plain_sum"]:
        return (f"it fits its own networks worse than the plain sum, MAPE "
                f"{fit['mape_fitted']:.1f}% vs {fit['mape_plain_sum']:.1f}%")
    space = table.space
    for token in space.candidates:  # uniform networks: every candidate at every position
        if parse_token(token).is_zero:
            continue
        layers = [layer for layer in walk(Architecture.uniform(space, token)) if layer.key]
        for layer in layers:
            if layer.searchable:
                ms = (table.ms(layer.key) * calibration.scale(layer_type(token))
                      + calibration.per_op)
                if ms <= 0:
                    return (f"it makes layer {layer.key} cost {ms:.4f} ms: every layer's "
                            "latency must be positive")
        fixed_ms = calibration.offset + calibration.scale("fixed") * sum(
            table.ms(layer.key) for layer in layers if not layer.searchable)
        if fixed_ms <= 0:
            return f"it makes the fixed layers cost {fixed_ms:.4f} ms"
    return None


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
    """Measure `count` architectures end to end and store the fitted correction in `table`
    (or, where `calibration_problem` finds one, why the plain sum is kept)."""
    archs = spread_architectures(table.space, count, seed)
    measured, speed = Meter.for_table(table).measure(archs, progress, "calibrate")
    calibration = checked_fit([table_parts(a, table) for a in archs],
                              [m / speed for m in measured], [op_count(a) for a in archs], table)
    table.calibration = calibration.to_dict()
    return calibration


def checked_fit(parts: list[dict[str, float]], measured: list[float], ops: list[int],
                table: LatencyTable) -> Calibration:
    """The fit with the per-op term; where `calibration_problem` refuses it, the fit without
    that term (all scales and the offset >= 0: no layer costs less than nothing); where that
    is refused too, the plain sum (the refusal says why)."""
    full = fit_calibration(parts, measured, ops)
    problem = calibration_problem(full, table)
    if problem is None:
        return full
    if full.fit["architectures"] > full.fit["terms"]:
        simpler = fit_calibration(parts, measured)
        if calibration_problem(simpler, table) is None:
            simpler.fit["note"] = f"without its per-op term, which {problem[3:]}"
            return simpler
    return full.refuse(problem)
