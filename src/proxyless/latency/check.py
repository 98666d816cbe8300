"""Does the latency model predict real latency? Calibrate it, then check it on fresh networks.

`calibrate` measures a few architectures end to end and fits the table's correction;
`latency_check` measures K other architectures and reports, for the plain sum and after
calibration: mean absolute percentage error, Spearman rank correlation and the share within
±10%, plus a predicted-vs-measured scatter plot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from proxyless.arch import Architecture
from proxyless.errors import ProxylessError
from proxyless.latency.calibration import Calibration, fit_calibration, layer_type
from proxyless.latency.profile import (
    Timer,
    cpu_model,
    measure_anchored,
    spread_architectures,
)
from proxyless.latency.table import LatencyTable
from proxyless.net import build_network
from proxyless.walk import walk

CALIBRATION_SEED = 1000
CHECK_SEED = 2000


def table_parts(arch: Architecture, table: LatencyTable) -> dict[str, float]:
    """Sums of the table's entries by calibration group (`fixed`, `k3`, `k5`, ...)."""
    parts: dict[str, float] = {}
    for layer in walk(arch):
        if not layer.key:
            continue
        kind = "fixed" if not layer.name.startswith("block") else layer_type(layer.token)
        parts[kind] = parts.get(kind, 0.0) + table.ms(layer.key)
    return parts


def timer_for(table: LatencyTable, repeats: int | None = None) -> Timer:
    """A timer with the table's own settings, on this machine (which must be the table's)."""
    meta = table.meta
    if meta.get("source") == "reference" or "backend" not in meta or "threads" not in meta:
        raise ProxylessError("this table was not measured here (it has no backend/threads "
                             "settings, e.g. the reference Pixel 1 table), so networks cannot "
                             "be measured against it on this machine")
    if meta.get("cpu") and meta["cpu"] != cpu_model():
        raise ProxylessError(f"the table was measured on {meta['cpu']!r} but this machine is "
                             f"{cpu_model()!r}; profile this machine with `proxyless profile`")
    return Timer(meta["backend"], meta.get("device", "cpu"), int(meta["threads"]),
                 int(meta.get("warmup", 10)), repeats or int(meta.get("repeats", 50)),
                 float(meta.get("min_time", 20.0)))


def measure_many(archs: list[Architecture], table: LatencyTable, progress: bool,
                 desc: str) -> tuple[list[float], float]:
    """End-to-end ms of each network, and the machine's speed factor (see measure_anchored)."""
    timer, batch = timer_for(table), int(table.meta.get("batch", 1))
    space = table.space
    shape = (batch, space.in_channels, space.input_size, space.input_size)
    entries, speed = measure_anchored(timer, [(build_network(a), shape) for a in archs], table,
                                      batch, progress, desc)
    return [e.ms for e in entries], speed


def calibrate(table: LatencyTable, count: int = 20, seed: int = CALIBRATION_SEED,
              progress: bool = True) -> Calibration:
    """Measure `count` architectures end to end and store the fitted correction in `table`."""
    archs = spread_architectures(table.space, count, seed)
    measured, speed = measure_many(archs, table, progress, "calibrate")
    calibration = fit_calibration([table_parts(a, table) for a in archs],
                                  [m / speed for m in measured])
    table.calibration = calibration.to_dict()
    return calibration


def _metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    error = np.abs(predicted - measured) / measured
    return {"mape": float(error.mean() * 100),
            "spearman": float(spearmanr(predicted, measured).statistic),
            "within_10pct": float((error <= 0.10).mean() * 100)}


def latency_check(table: LatencyTable, samples: int = 50, seed: int = CHECK_SEED,
                  plot: str | Path | None = None, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Measure `samples` fresh architectures and compare them with the table's predictions."""
    if samples < 3:
        raise ProxylessError("--samples must be at least 3 for a rank correlation")
    space = table.space
    timer = timer_for(table)
    calibration = (Calibration.from_dict(table.calibration) if table.calibration else None)
    if calibration is None:
        log("the table has no calibration: fitting one on 20 extra architectures")
        calibration = calibrate(LatencyTable(table.entries, table.meta), progress=progress)
    archs = spread_architectures(space, samples, seed)
    measured_list, speed = measure_many(archs, table, progress, "check")
    measured = np.array(measured_list)
    parts = [table_parts(a, table) for a in archs]
    # Predictions on the table's time base, brought to the machine's speed of the moment.
    plain = np.array([sum(p.values()) for p in parts]) * speed
    calibrated = np.array([calibration.apply(p) for p in parts]) * speed
    after, before = _metrics(calibrated, measured), _metrics(plain, measured)
    raw = _metrics(calibrated / speed, measured)
    result = {**after, "mape_uncalibrated": before["mape"],
              "spearman_uncalibrated": before["spearman"],
              "within_10pct_uncalibrated": before["within_10pct"],
              "speed_factor": speed, "mape_without_drift_correction": raw["mape"],
              "within_10pct_without_drift_correction": raw["within_10pct"],
              "samples": samples, "space": space.name,
              "device": table.meta.get("cpu") or table.meta.get("device"),
              "backend": timer.backend, "threads": timer.threads,
              "batch": int(table.meta.get("batch", 1)),
              "calibration_fit": calibration.fit,
              "measured_ms": measured.tolist(), "predicted_ms": calibrated.tolist(),
              "predicted_uncalibrated_ms": plain.tolist(),
              "architectures": [a.encode() for a in archs]}
    if plot:
        from proxyless.report import latency_scatter

        result["plot"] = str(latency_scatter(measured, plain, calibrated, plot,
                                             f"{space.name}: {result['device']}, "
                                             f"{timer.backend}, {timer.threads} thread(s)"))
    return result
