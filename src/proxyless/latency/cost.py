"""Hardware cost models: latency from a lookup table, or FLOPs / parameters, one interface.

A `CostModel` is a fixed cost plus one cost per candidate of every searchable block. It
predicts a fixed architecture's cost, and a supernet's expected cost

    E[cost] = fixed + Σ_blocks Σ_j p_j · F(o_j)        (zero costs 0)

as a differentiable function of α (dE/dp_j = F(o_j)). For latency, the per-layer costs come
from a `LatencyTable`, corrected by the table's calibration when it has one.

    >>> model = latency_model(LatencyTable.load("table.json"), space)
    >>> model.predict(arch)                    # ms
    >>> loss = ce + model.expected(supernet)   # differentiable in α
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from proxyless.errors import ProxylessError, ProxylessWarning
from proxyless.latency.calibration import Calibration
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture
from proxyless.model.layers import candidate_layers, fixed_layers
from proxyless.model.space import SearchSpace


@dataclass
class CostModel:
    name: str                      # "latency", "flops" or "params"
    unit: str                      # "ms", "MMACs", "M"
    space: SearchSpace
    fixed: float
    block_costs: list[list[float]]  # [block][candidate], gate order

    def predict(self, arch: Architecture) -> float:
        if arch.space.slots() != self.space.slots():
            raise ProxylessError(f"{self.name} model is for space {self.space.name!r}; the "
                                 f"architecture belongs to {arch.space.name!r}")
        return self.fixed + sum(costs[i] for costs, i in zip(self.block_costs, arch.indices(),
                                                             strict=True))

    def expected(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[cost] under per-block probabilities (differentiable when they are)."""
        total = torch.tensor(self.fixed, dtype=probs[0].dtype, device=probs[0].device)
        for p, costs in zip(probs, self.block_costs, strict=True):
            total = total + (p * torch.tensor(costs, dtype=p.dtype, device=p.device)).sum()
        return total

    def expected_supernet(self, supernet) -> torch.Tensor:
        return self.expected([op.probs() for op in supernet.mixed_ops])

    def most_likely_within(self, log_probs: list[list[float]], low: float, high: float,
                           bins: int = 4000) -> list[int] | None:
        """The candidate indices maximizing Σ_blocks log p (the most likely architecture) among
        those whose cost lies in [low, high]; None when no architecture does.

        The cost is additive over blocks, so this is a knapsack: dynamic programming over
        costs rounded to `bins` steps of the space's range, the best solutions then checked
        at their exact cost (rounding moves a total by at most half a step per block). The
        answer always lies in the range and is the most likely one up to that rounding
        (equal to exhaustive search on every case of the tests); where the plain argmax lies
        in the range, it is the answer.
        """
        cheapest, dearest = self.bounds()
        # a bound beyond every network bounds nothing (and 1e308 in steps overflows)
        slack = 1e-9 * max(abs(dearest), 1e-9)
        if low > dearest + slack or high < cheapest - slack:
            return None
        high = min(high, dearest + slack)
        low = max(low, cheapest - slack) if math.isfinite(low) else low
        step = max(dearest - cheapest, 1e-12) / bins
        # per block, costs above its cheapest candidate, in steps (calibrated costs may be < 0)
        units = [[round((c - min(costs)) / step) for c in costs] for costs in self.block_costs]
        limit = min(bins + len(units), math.floor((high - cheapest) / step) + len(units))
        if limit < 0:
            return None
        best = np.full(limit + 1, -np.inf)
        best[0] = 0.0
        choices = []  # per block: the candidate that reached each total
        for costs, logp in zip(units, log_probs, strict=True):
            new, pick = np.full(limit + 1, -np.inf), np.full(limit + 1, -1)
            for j, (unit, lp) in enumerate(zip(costs, logp, strict=True)):
                if unit > limit or not math.isfinite(lp):
                    continue
                shifted = np.full(limit + 1, -np.inf)
                shifted[unit:] = best[:limit + 1 - unit] + lp
                better = shifted > new
                new[better], pick[better] = shifted[better], j
            best, choices = new, [*choices, pick]
        first = (max(0, math.ceil((low - cheapest) / step) - len(units))
                 if math.isfinite(low) else 0)
        totals = [t for t in np.argsort(-best, kind="stable")
                  if t >= first and math.isfinite(best[t])]
        for total in totals:
            indices, at = [], int(total)
            for pick, costs in zip(reversed(choices), reversed(units), strict=True):
                indices.append(int(pick[at]))
                at -= costs[indices[-1]]
            indices.reverse()
            cost = self.fixed + sum(c[i] for c, i in zip(self.block_costs, indices, strict=True))
            if low <= cost <= high:
                return indices
        return None

    def bounds(self) -> tuple[float, float]:
        """The cheapest and the most expensive architecture of the space."""
        return (self.fixed + sum(min(c) for c in self.block_costs),
                self.fixed + sum(max(c) for c in self.block_costs))


def latency_model(table: LatencyTable, space: SearchSpace | None = None,
                  calibrated: bool = True) -> CostModel:
    """Latency (ms) of `space` (default: the table's own) from a lookup table.

    Every key the space needs must be in the table: a missing one is an error naming it.
    """
    space = space or table.space
    if space is None:
        raise ProxylessError("the latency table does not say which space it covers; pass one")
    calibration = (Calibration.from_dict(table.calibration)
                   if calibrated and table.calibration else None)
    fixed_ms = sum(_fixed_ms(table, layer.key) if calibration is None
                   else calibration.layer_ms(layer, _fixed_ms(table, layer.key))
                   for layer in fixed_layers(space))
    block_costs = []
    for row in candidate_layers(space):
        costs = []
        for layer in row:
            ms = 0.0 if not layer.key else table.ms(layer.key)
            if calibration is not None and layer.key:
                ms = calibration.layer_ms(layer, ms)
            costs.append(ms)
        block_costs.append(costs)
    if calibration is not None:
        fixed_ms += calibration.offset
    return CostModel("latency", "ms", space, fixed_ms, block_costs)


def _fixed_ms(table: LatencyTable, key: str) -> float:
    """A fixed layer's latency. A classifier the table priced for another class count (the
    authors' tables: 1000 ImageNet classes; a user's folder has its own) takes that entry's
    time, an upper bound that no architecture choice depends on, said in one warning."""
    head, sep, classes = key.rpartition("-output:")
    if key in table.entries or not key.startswith("Logits-") or not sep:
        return table.ms(key)
    priced = sorted(k for k in table.entries if k.startswith(head + sep))
    if not priced:
        return table.ms(key)  # the error naming the missing entry
    warnings.warn(f"the latency table prices the classifier for {priced[0].rpartition(sep)[2]} "
                  f"classes, the data has {classes}: that time is used for it, an upper bound "
                  "that shifts every network alike", ProxylessWarning, stacklevel=3)
    return table.ms(priced[0])


def flops_model(space: SearchSpace) -> CostModel:
    fixed = sum(layer.macs for layer in fixed_layers(space)) / 1e6
    return CostModel("flops", "MMACs", space, fixed,
                     [[layer.macs / 1e6 for layer in row] for row in candidate_layers(space)])


def params_model(space: SearchSpace) -> CostModel:
    fixed = sum(layer.params for layer in fixed_layers(space)) / 1e6
    return CostModel("params", "M", space, fixed,
                     [[layer.params / 1e6 for layer in row] for row in candidate_layers(space)])
