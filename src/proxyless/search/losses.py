"""Losses that put a hardware cost into the architecture step (ProxylessNAS §3.3).

With E = the expected cost under p (differentiable in α) and T the target:

- `mul-log`    (the reference code's default): CE · a · (log E / log T)^b, a = 0.2, b = 0.3
               (for T < 10, in units of T/10 so that log T stays positive)
- `add-linear`: CE + λ (E − T) / T, λ = 0.1

Both are soft: at a few ms, mul-log raises the loss by ~5% for a network 50% over the target,
and a short search ends wherever cross-entropy pulls it. So by default (`constraint="dual"`)
the target is also a constraint, relaxed with a Lagrange multiplier ν ≥ 0:

    loss = hardware_loss(CE, E, T) + ν (E − T) / T,    ν ← max(0, ν + η (C/T − 1))

after each architecture step, where C is the cost of the current argmax architecture (the
network the search will hand over). ν stays 0 while that network meets the target (the
paper's loss, unchanged), grows while it does not, and shrinks again once it does. With
`target_floor` f (0.95 by default) the target binds from below too: a second multiplier
pulls C up while C < f·T (`TargetMultipliers`), so the result uses its budget.

Without a target the architecture step optimizes cross-entropy alone.

`decide` (weight β, 0.03 by default; 0 is the paper's loss) adds β·t · mean entropy of p
over blocks to the architecture loss, t rising from 0 to 1 over the search
(`SearchEpoch.search_progress`).
The gate gradients are noisy and a short search takes a few hundred α steps, so p ends nearly
flat and the argmax is picked among near ties; the entropy's gradient is exact and always
points to the nearest decision, so it settles the blocks the data does not. The ramp lets
the data steer α first: at full weight from the start p collapses within ~80 steps.
0.03 ends a 156-step search under half the uniform entropy, and its networks retrained as
well as the paper's loss's (bench/README.md, "A search that decides").
"""

from __future__ import annotations

import math

import torch

from proxyless.errors import ProxylessError

LOSSES = ("mul-log", "add-linear")


def hardware_loss(ce: torch.Tensor, expected: torch.Tensor | None, target: float | None,
                  kind: str = "mul-log", a: float = 0.2, b: float = 0.3,
                  lam: float = 0.1) -> torch.Tensor:
    if target is None or expected is None:
        return ce
    if kind == "mul-log":
        # log E / log T as in the reference code (ms, T >= 10 there). For small targets
        # (a few ms on a CPU) log T nears 0 or turns negative, so both are measured in units
        # of T/10 below 10: the same ratio where the reference uses it, continuous at 10.
        base = max(target, 10.0)
        ratio = torch.log(expected * (base / target)) / math.log(base)
        return ce * a * ratio.clamp_min(1e-6) ** b
    if kind == "add-linear":  # E / T − 1: a target beyond float32's range (1e308) is 0, not nan
        return ce + lam * (expected / target - 1.0)
    raise ProxylessError(f"--loss {kind!r}: expected one of {', '.join(LOSSES)}")


def constraint_term(expected: torch.Tensor | None, target: float | None,
                    multiplier: float) -> torch.Tensor | float:
    """ν (E − T) / T: the Lagrangian term of the constraint E ≤ T (0 while ν = 0)."""
    if target is None or expected is None or multiplier == 0:
        return 0.0
    return multiplier * (expected / target - 1.0)  # (E − T) / T, finite for any finite T


def dual_update(multiplier: float, cost: float, target: float, rate: float) -> float:
    """Dual ascent on ν from the argmax network's cost: up while over T, down while under."""
    return max(0.0, multiplier + rate * (cost / target - 1.0))


class TargetMultipliers:
    """The two sides of a binding target: ν_over ≥ 0 of C ≤ T and, with a `floor` f > 0,
    ν_under ≥ 0 of C ≥ f·T, each raised by dual ascent while its side is violated and
    lowered while it holds. The loss's term is (ν_over − ν_under)(E − T)/T (`multiplier`):
    a negative ν rewards a slower network.

    Why the floor: the mul-log loss keeps rewarding lower latency, and where candidates differ
    tenfold (throughput tables at batch 64) a search that only bounds C from above ended at
    44% of its target (bench/README.md). With f = 0.95 the result lands in [0.95 T, T] of
    the table's prediction."""

    def __init__(self, floor: float = 0.0) -> None:
        self.floor, self.over, self.under = floor, 0.0, 0.0

    @property
    def multiplier(self) -> float:
        return self.over - self.under

    def update(self, cost: float, target: float, rate: float) -> None:
        self.over = dual_update(self.over, cost, target, rate)
        if self.floor > 0:
            self.under = max(0.0, self.under + rate * (self.floor - cost / target))

    def state_dict(self) -> dict:
        return {"multiplier": self.over, "under_multiplier": self.under}

    def load_state_dict(self, state: dict) -> None:
        self.over = float(state.get("multiplier", 0.0))
        self.under = float(state.get("under_multiplier", 0.0))


def entropy_term(alphas: list[torch.Tensor], weight: float) -> torch.Tensor | float:
    """β · mean over blocks of H(softmax(α)), differentiable in α; 0 when β is 0."""
    if weight == 0:
        return 0.0
    entropies = [-(torch.softmax(a, 0) * torch.log_softmax(a, 0)).sum() for a in alphas]
    return weight * torch.stack(entropies).mean()
