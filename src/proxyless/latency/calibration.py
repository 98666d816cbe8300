"""Correcting a lookup table's sum to end-to-end latency.

A sum of per-op latencies misses what happens between ops: framework overhead, and memory
traffic a layer timed alone never pays (timed over and over, its weights stay in cache; inside
a network the other layers' weights have pushed them out). We fit

    measured ≈ offset + s · Σ table entries
                      + c · (number of blocks that are not zero)
                      + w · (millions of weights in those blocks)

with least squares, the offset and c of either sign, s and w non-negative (`calibrate`), on a
few architectures measured end to end, and store the four numbers with the table. The per-op
term is what a table of separately timed layers gets wrong by a constant per layer (in ONNX
Runtime each layer's own session run costs a few microseconds the whole graph pays once); the
weights term is the cold-cache cost of loading a block's weights. Both stay linear in the
per-block costs (each is added to every non-zero candidate's cost), so the expected latency of
the supernet stays differentiable; `latency.cost.latency_model` applies them. On the fashion
space (ONNX Runtime b1) this form predicts unseen networks with MAPE 1.5-1.6% where scales per
input resolution gave 2.3-2.5% with twice the terms (bench/README.md, "Where the latency
model's error lives"). Tables calibrated before, with scales per kernel or per resolution, load
as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from proxyless.latency.measure import Meter, spread_architectures
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture
from proxyless.model.layers import Layer, candidate_layers, fixed_layers, walk
from proxyless.model.space import parse_token

CALIBRATION_SEED = 1000
CALIBRATION_NETWORKS = 40  # measured end to end to fit a new table's correction (20 left a
# fit with a scale per resolution unsteady, leave-one-out Spearman 0.93-0.97; the one-scale
# form with the weights term gave 0.98-0.99 on 20 and on 40: bench/latency_error.py
# --groupings-only; 40 keeps the margin on other devices)


def layer_type(token: str) -> str:
    """The kernel group of a block's op: `k3`, `k5`, ... (`zero` costs nothing): how
    calibrations made before resolution groups group the blocks."""
    spec = parse_token(token)
    return "zero" if spec.is_zero else f"k{spec.kernel}"


# How a calibration groups the layers, each group with a scale of its own. "single": one
# scale for every layer, with the weights term (the form above). Tables calibrated before hold
# "kernel" (a scale per kernel size, fixed layers apart) or "resolution" (a scale per block
# input resolution): with a scale per resolution, the scales stood in for the weights' cache
# misses (2x2 blocks, the widest, scaled x3.8) and missed the smallest networks by 11-14%.
CURRENT_GROUPING = "single"
FLOOR = 0.1  # the least share of its table entry a block costs once calibrated


def layer_group(layer: Layer, grouping: str = CURRENT_GROUPING) -> str:
    """The calibration group of a layer: `zero`, `all` (grouping "single"), or `fixed` and by
    `grouping` (`r14`: input 14x14; or `k5`: kernel 5)."""
    if layer.searchable and parse_token(layer.token).is_zero:
        return "zero"
    if grouping == "single":
        return "all"
    if not layer.searchable:
        return "fixed"
    return f"r{layer.in_size}" if grouping == "resolution" else layer_type(layer.token)


def block_mweights(layer: Layer) -> float:
    """The millions of weights the weights term counts: a non-zero block's, 0 otherwise."""
    if not layer.searchable or parse_token(layer.token).is_zero:
        return 0.0
    return layer.params / 1e6


@dataclass
class Calibration:
    offset: float = 0.0
    scales: dict[str, float] = field(default_factory=dict)
    fit: dict = field(default_factory=dict)   # how well it fitted, on how many architectures
    per_op: float = 0.0                       # ms added per block that is not zero
    per_mweight: float = 0.0                  # ms added per million weights of such a block
    refused: str | None = None                # why the fit is not used: the plain table sum
    grouping: str = "kernel"                  # how `scales` group the blocks (table.GROUPINGS);
                                              # "kernel": a table calibrated before groups

    def scale(self, kind: str) -> float:
        return self.scales.get(kind, 1.0)

    def layer_ms(self, layer: Layer, table_ms: float, floor: bool = True) -> float:
        """A block's (or fixed layer's) table entry as it costs inside a network, less the
        offset: scaled by its group, plus the per-op and weights terms for a block; at least
        `FLOOR` of the entry (a tiny layer the per-op term would take below nothing still
        costs something: a search must never see a block cheaper than skipping it)."""
        ms = table_ms * self.scale(layer_group(layer, self.grouping))
        if not layer.searchable:
            return ms
        ms += self.per_op + self.per_mweight * block_mweights(layer)
        return max(ms, FLOOR * table_ms) if floor else ms

    def to_dict(self) -> dict:
        if self.refused is not None:
            return {"refused": self.refused, "grouping": self.grouping, "fit": self.fit}
        return {"offset": self.offset, "scales": self.scales, "per_op": self.per_op,
                "per_mweight": self.per_mweight, "grouping": self.grouping, "fit": self.fit}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("refused"):  # the identity: the table's sum as it is
            return cls(fit=dict(data.get("fit", {})), refused=str(data["refused"]),
                       grouping=str(data.get("grouping", "kernel")))
        return cls(float(data.get("offset", 0.0)),
                   {k: float(v) for k, v in data.get("scales", {}).items()},
                   dict(data.get("fit", {})), float(data.get("per_op", 0.0)),
                   float(data.get("per_mweight", 0.0)),
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
                    ops: list[int] | None = None, grouping: str = CURRENT_GROUPING,
                    mweights: list[float] | None = None) -> Calibration:
    """Fit the offset and per-group scales (>= 0) to end-to-end measurements (`parts`: each
    network's table sums by group, `table_parts` with `grouping`). With `ops` (each network's
    non-zero blocks), the per-op term too, and the offset, of either sign (+x and -x are two
    columns, of which the fit keeps one); with `mweights` (the millions of weights in those
    blocks), the weights term (>= 0)."""
    kinds = sorted({k for p in parts for k in p if k != "zero"})
    rows = []
    for i, p in enumerate(parts):
        row = [1.0] + ([-1.0] if ops is not None else []) + [p.get(k, 0.0) for k in kinds]
        row += [ops[i], -ops[i]] if ops is not None else []
        rows.append(row + ([mweights[i]] if mweights is not None else []))
    features, target = np.array(rows), np.asarray(measured, dtype=float)
    # scipy takes a third of a second to import: paid by the fit, not by every command
    from scipy.optimize import nnls

    coef, _ = nnls(features, target)
    signed = ops is not None
    offset = coef[0] - coef[1] if signed else coef[0]
    scales = coef[1 + signed:1 + signed + len(kinds)]
    rest = list(coef[1 + signed + len(kinds):])
    per_op = float(rest.pop(0) - rest.pop(0)) if signed else 0.0
    calibration = Calibration(float(offset), {k: float(c) for k, c in zip(kinds, scales,
                                                                          strict=True)},
                              per_op=per_op, per_mweight=float(rest.pop(0)) if rest else 0.0,
                              grouping=grouping)
    predicted = features @ coef
    plain = features[:, 1 + signed:1 + signed + len(kinds)].sum(1)
    calibration.fit = {
        "architectures": len(measured),
        "terms": fit_terms(len(kinds), signed, mweights is not None),
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


def fit_terms(kinds: int, per_op: bool, weights: bool = False) -> int:
    """The fit's free parameters: the offset, a scale per group, the per-op and weights
    terms."""
    return 1 + kinds + int(per_op) + int(weights)


def calibration_problem(calibration: Calibration, table: LatencyTable) -> str | None:
    """Why `calibration` must not be used on `table`, or None: fitted on no more networks
    than it has terms (an exact fit through a few points, which predicts anything between
    them), worse than the plain sum on its own networks, the space's cheapest network costing
    nothing or less, or a fit so far off that the floor of `Calibration.layer_ms` holds up
    more than a quarter of the candidate layers (a few tiny layers sit on it in a good fit:
    the per-op term takes the per-call overhead off every block, and a 2x2 layer is little
    else)."""
    fit = calibration.fit
    networks, terms = fit.get("architectures", 0), fit.get("terms", 0)
    if networks <= terms:
        return (f"{networks} networks cannot fit its {terms} terms; calibrate on at least "
                f"{terms + 1}, e.g. the default {CALIBRATION_NETWORKS}")
    if fit["mape_fitted"] > fit["mape_plain_sum"]:
        return (f"it fits its own networks worse than the plain sum, MAPE "
                f"{fit['mape_fitted']:.1f}% vs {fit['mape_plain_sum']:.1f}%")
    cheapest = calibration.offset + sum(calibration.layer_ms(layer, table.ms(layer.key))
                                        for layer in fixed_layers(table.space))
    floored, blocks = [], 0
    for row in candidate_layers(table.space):
        costs = [0.0 for layer in row if not layer.key]  # zero, where the block may skip
        for layer in (x for x in row if x.key):
            blocks += 1
            entry = table.ms(layer.key)
            if calibration.layer_ms(layer, entry, floor=False) <= FLOOR * entry:
                floored.append(layer.key)
            costs.append(calibration.layer_ms(layer, entry))
        cheapest += min(costs)
    if cheapest <= 0:
        return f"it makes the space's cheapest network cost {cheapest:.4f} ms"
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


def mweight_count(arch: Architecture) -> float:
    """The millions of weights in the network's non-zero blocks: what the weights term
    counts."""
    return sum(block_mweights(layer) for layer in walk(arch))


def calibrate(table: LatencyTable, count: int = CALIBRATION_NETWORKS, seed: int = CALIBRATION_SEED,
              progress: bool = True) -> Calibration:
    """Measure `count` architectures end to end and store the fitted correction in `table`
    (or, where `calibration_problem` finds one, why the plain sum is kept)."""
    archs = spread_architectures(table.space, count, seed)
    measured, speed = Meter.for_table(table).measure(archs, progress, "calibrate")
    calibration = checked_fit(archs, [m / speed for m in measured], table)
    table.calibration = calibration.to_dict()
    return calibration


def checked_fit(archs: list[Architecture], measured: list[float],
                table: LatencyTable) -> Calibration:
    """The fit of `CURRENT_GROUPING`'s form to `archs` measured end to end; where
    `calibration_problem` refuses it, the fit without the per-op term (the offset and every
    term >= 0: no layer costs less than nothing); where that is refused too, the plain sum
    (the refusal says why)."""
    parts = [table_parts(a, table) for a in archs]
    mweights = [mweight_count(a) for a in archs]
    full = fit_calibration(parts, measured, [op_count(a) for a in archs], mweights=mweights)
    problem = calibration_problem(full, table)
    if problem is None:
        return full
    if full.fit["architectures"] > full.fit["terms"]:
        simpler = fit_calibration(parts, measured, grouping=full.grouping, mweights=mweights)
        if calibration_problem(simpler, table) is None:
            simpler.fit["note"] = f"without its per-op term: with it, {problem}"
            return simpler
    return full.refuse(problem)
