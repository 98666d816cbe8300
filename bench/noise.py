"""Whether a difference between two sets of seeds is more than the seeds' own spread: the
one verdict the benches print (`python bench/X.py` puts this folder on the path)."""

from __future__ import annotations

import statistics


def seed_difference(values: list[float], base: list[float]) -> tuple[float, float, str]:
    """mean(values) - mean(base), its standard error, and "inside the noise" where the
    difference is within two standard errors ("outside the noise" otherwise)."""
    diff = statistics.fmean(values) - statistics.fmean(base)
    se = (statistics.variance(values) / len(values)
          + statistics.variance(base) / len(base)) ** 0.5
    return diff, se, "inside the noise" if abs(diff) <= 2 * se else "outside the noise"
