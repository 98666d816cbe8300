"""Losses that put a hardware cost into the architecture step (ProxylessNAS §3.3).

With E = the expected cost under p (differentiable in α) and T the target:

- `mul-log`    (the reference code's default): CE · a · (log E / log T)^b, a = 0.2, b = 0.3
               (for T < 10, in units of T/10 so that log T stays positive)
- `add-linear`: CE + λ (E − T) / T, λ = 0.1

Without a target the architecture step optimizes cross-entropy alone.
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
    if kind == "add-linear":
        return ce + lam * (expected - target) / target
    raise ProxylessError(f"--loss {kind!r}: expected one of {', '.join(LOSSES)}")
