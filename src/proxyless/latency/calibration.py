"""Correcting a lookup table's sum to end-to-end latency.

A sum of per-op latencies misses what happens between ops (framework overhead, memory
traffic, caches warm from the previous op). We fit

    measured ≈ offset + s_fixed · Σ fixed layers + Σ_r s_r · Σ blocks with input r x r
               + c · (number of blocks that are not zero)

with non-negative least squares (c of either sign) on a few architectures measured end to end
(`calibrate`), and store the offset, scales and per-op term with the table. The per-op term is
what a table of separately timed layers gets wrong by a constant per layer: in ONNX Runtime
each layer's own session run costs a few microseconds that the whole graph pays once, which
makes a table sum 40% too high on small networks and misranks networks with different numbers
of zero blocks. It stays linear in the per-block costs (c is added to every non-zero
candidate's cost), so the expected latency of the supernet stays differentiable;
`latency.cost.latency_model` applies it. Blocks are grouped by input resolution (tables
calibrated before, by kernel, still load as they were): the overhead's share of a layer is
what its resolution decides (bench/README.md, "Where the latency model's error lives").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from proxyless.arch import Architecture
from proxyless.latency.measure import Meter, spread_architectures
from proxyless.latency.table import LatencyTable
from proxyless.space import parse_token
from proxyless.walk import Layer, walk

CALIBRATION_SEED = 1000
CALIBRATION_NETWORKS = 40  # measured end to end to fit a new table's correction (20 left the
# resolution-grouped fit unsteady: leave-one-out Spearman 0.93-0.97, with 40: 0.98-0.99;
# bench/latency_error.py --groupings-only)


def layer_type(token: str) -> str:
    """The kernel group of a block's op: `k3`, `k5`, ... (`zero` costs nothing): how
    calibrations made before resolution groups group the blocks."""
    spec = parse_token(token)
    return "zero" if spec.is_zero else f"k{spec.kernel}"


# How a calibration groups the searchable blocks, each group with a scale of its own. By the
# block's input resolution: a layer timed alone differs from the same layer inside a network
# by how much of it is per-call overhead, which the resolution decides (a 2x2 block is mostly
# overhead, a 56x56 one compute); grouped by kernel, fashion networks were predicted with MAPE
# 4.8-5.1% and 88-95% within 10%, by resolution 2.3-2.7% and 100% (leave-one-out; bench/
# README.md, "Where the latency model's error lives"). Tables calibrated before hold the
# kernel grouping.
CURRENT_GROUPING = "resolution"
FLOOR = 0.1  # the least share of its table entry a block costs once calibrated


def layer_group(layer: Layer, grouping: str = CURRENT_GROUPING) -> str:
    """The calibration group of a layer: `fixed`, `zero`, or by `grouping` (`r14`: input
    14x14; or `k5`: kernel 5)."""
    if not layer.searchable:
        return "fixed"
    if parse_token(layer.token).is_zero:
        return "zero"
    return f"r{layer.in_size}" if grouping == "resolution" else layer_type(layer.token)


@dataclass
class Calibration:
    offset: float = 0.0
    scales: dict[str, float] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)   # how well it fitted, on how many architectures
    per_op: float = 0.0                       # ms added per block that is not zero
    refused: str | None = None                # why the fit is not used: the plain table sum
    grouping: str = "kernel"                  # how `scales` group the blocks (table.GROUPINGS);
                                              # "kernel": a table calibrated before groups

    def scale(self, kind: str) -> float:
        return self.scales.get(kind, 1.0)

    def layer_ms(self, layer: Layer, table_ms: float, floor: bool = True) -> float:
        """A block's (or fixed layer's) table entry as it costs inside a network, less the
        offset: scaled by its group, plus the per-op term for a block; at least `FLOOR` of
        the entry (a tiny layer the per-op term would take below nothing still costs
        something: a search must never see a block cheaper than skipping it)."""
        ms = table_ms * self.scale(layer_group(layer, self.grouping))
        if not layer.searchable:
            return ms
        return max(ms + self.per_op, FLOOR * table_ms) if floor else ms + self.per_op

    def to_dict(self) -> dict:
        if self.refused is not None:
            return {"refused": self.refused, "grouping": self.grouping, "fit": self.fit}
        return {"offset": self.offset, "scales": self.scales, "per_op": self.per_op,
                "grouping": self.grouping, "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("refused"):  # the identity: the table's sum as it is
            return cls(fit=dict(data.get("fit", {})), refused=str(data["refused"]),
                       grouping=str(data.get("grouping", "kernel")))
        return cls(float(data.get("offset", 0.0)),
                   {k: float(v) for k, v in data.get("scales", {}).items()},
                   dict(data.get("fit", {})), float(data.get("per_op", 0.0)),
                   grouping=str(data.get("grouping", "kernel")))

    def refuse(self, reason: str) -> Calibration:
        """This fit, not to be used (`reason`): the table keeps its plain sum."""
        return Calibration(fit=self.fit, refused=reason, grouping=self.grouping)

    def summary(self) -> str:
        """One line: how well it fitted, or why the plain table sum is kept."""
        fit = self.fit
        if self.refused is not None:
            return f"calibration not used ({self.refused}): the table's plain sum is kept"
        note = f" ({fit['note']})" if fit.get("note") else ""
        left = fit.get("cross_validated")
        unseen = (f"; a network left out of the fit: MAPE {left['mape']:.1f}%, "
                  f"{left['within_10pct']:.0f}% within ±10%" if left else "")
        return (f"calibration on {fit['architectures']} networks: MAPE "
                f"{fit['mape_plain_sum']:.1f}% (table sum) -> {fit['mape_fitted']:.1f}% "
                f"(fitted){note}{unseen}")


def fit_calibration(parts: list[dict[str, float]], measured: list[float],
                    ops: list[int] | None = None,
                    grouping: str = CURRENT_GROUPING) -> Calibration:
    """Fit offset and per-group scales (all >= 0) to end-to-end measurements (`parts`: each
    network's table sums by group, `table_parts` with `grouping`); with `ops` (each network's
    non-zero blocks), the per-op term too (of either sign: +ops and -ops are two columns, of
    which the fit keeps one)."""
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
                              per_op=per_op, grouping=grouping)
    predicted = features @ coef
    plain = features[:, 1:1 + len(kinds)].sum(1)
    calibration.fit = {
        "architectures": len(measured),
        "terms": fit_terms(len(kinds), ops is not None),
        "mape_plain_sum": float(np.mean(np.abs(plain - target) / target) * 100),
        "mape_fitted": float(np.mean(np.abs(predicted - target) / target) * 100),
    }
    if len(measured) > calibration.fit["terms"] + 1:
        calibration.fit["cross_validated"] = _left_out(features, target, nnls)
    return calibration


def _left_out(features: np.ndarray, target: np.ndarray, nnls) -> dict[str, float]:
    """How well the fit predicts a network it has not seen: each calibration network
    predicted by the fit on the others (leave-one-out), without a measurement more. What a
    report quotes as the table's quality."""
    predicted = np.empty_like(target)
    for i in range(len(target)):
        keep = np.arange(len(target)) != i
        coef, _ = nnls(features[keep], target[keep])
        predicted[i] = features[i] @ coef
    from scipy.stats import spearmanr  # imported with nnls's scipy already

    error = np.abs(predicted - target) / target
    return {"networks": len(target), "mape": float(error.mean() * 100),
            "within_10pct": float((error <= 0.10).mean() * 100),
            "spearman": float(spearmanr(predicted, target).statistic)}


def fit_terms(kinds: int, per_op: bool) -> int:
    """The fit's free parameters: the offset, a scale per group, the per-op term."""
    return 1 + kinds + int(per_op)


def calibration_problem(calibration: Calibration, table: LatencyTable) -> str | None:
    """Why `calibration` must not be used on `table`, or None: fitted on no more networks
    than it has terms (an exact fit through a few points, which predicts anything between
    them), worse than the plain sum on its own networks, a network costing nothing or less,
    or a fit so far off that the floor of `Calibration.layer_ms` holds up more than a quarter
    of the layers (a few tiny layers sit on it in a good fit: the per-op term takes the
    per-call overhead off every block, and a 2x2 layer is little else)."""
    fit = calibration.fit
    networks, terms = fit.get("architectures", 0), fit.get("terms", 0)
    if networks <= terms:
        return (f"{networks} networks cannot fit its {terms} terms; calibrate on at least "
                f"{terms + 1}, e.g. the default {CALIBRATION_NETWORKS}")
    if fit["mape_fitted"] > fit["mape_plain_sum"]:
        return (f"it fits its own networks worse than the plain sum, MAPE "
                f"{fit['mape_fitted']:.1f}% vs {fit['mape_plain_sum']:.1f}%")
    space, floored, blocks = table.space, [], 0
    for token in space.candidates:  # uniform networks: every candidate at every position
        if parse_token(token).is_zero:
            continue
        layers = [layer for layer in walk(Architecture.uniform(space, token)) if layer.key]
        for layer in layers:
            if layer.searchable:
                blocks += 1
                if calibration.layer_ms(layer, table.ms(layer.key), floor=False) <= \
                        FLOOR * table.ms(layer.key):
                    floored.append(layer.key)
        cost = calibration.offset + sum(calibration.layer_ms(layer, table.ms(layer.key))
                                        for layer in layers)
        if cost <= 0:
            return f"it makes the network of {token} blocks cost {cost:.4f} ms"
    if len(floored) * 4 > blocks:
        return (f"it would make {len(floored)} of {blocks} layers cost nothing or less "
                f"(e.g. {floored[0]})")
    return None


def table_parts(arch: Architecture, table: LatencyTable,
                grouping: str = CURRENT_GROUPING) -> dict[str, float]:
    """Sums of the table's entries by calibration group (`fixed`, `r14`, `r7`, ...)."""
    parts: dict[str, float] = {}
    for layer in walk(arch):
        if not layer.key:
            continue
        kind = layer_group(layer, grouping)
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
        simpler = fit_calibration(parts, measured, grouping=full.grouping)
        if calibration_problem(simpler, table) is None:
            simpler.fit["note"] = f"without its per-op term: with it, {problem}"
            return simpler
    return full.refuse(problem)
