"""Does the latency model predict real latency? Check it on fresh networks.

`latency_check` measures K architectures it has not seen (spread over the latency range) and
compares them with the cost model's predictions, from the plain table sum and calibrated:
mean absolute percentage error, Spearman rank correlation and the share within ±10%, plus a
predicted-vs-measured scatter plot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from proxyless.errors import ProxylessError
from proxyless.latency.calibration import Calibration, calibrate
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter, spread_architectures
from proxyless.latency.table import LatencyTable
from proxyless.pipeline.plots import latency_scatter

CHECK_SEED = 2000


def prediction_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    # scipy takes a third of a second to import: paid by the check, not by every command
    from scipy.stats import spearmanr

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
    meter = Meter.for_table(table)
    calibrated_table = table
    if not table.calibration:
        log("the table has no calibration: fitting one on 20 extra architectures")
        calibrated_table = LatencyTable(table.entries, table.meta)
        calibrate(calibrated_table, progress=progress)
    calibration = Calibration.from_dict(calibrated_table.calibration)
    plain_model = latency_model(table, space, calibrated=False)
    calibrated_model = latency_model(calibrated_table, space)
    archs = spread_architectures(space, samples, seed)
    measured_list, speed = meter.measure(archs, progress, "check")
    measured = np.array(measured_list)
    # Predictions on the table's time base, brought to the machine's speed of the moment.
    plain = np.array([plain_model.predict(a) for a in archs]) * speed
    calibrated = np.array([calibrated_model.predict(a) for a in archs]) * speed
    after, before = prediction_metrics(calibrated, measured), prediction_metrics(plain, measured)
    raw = prediction_metrics(calibrated / speed, measured)
    timer = meter.timer
    result = {**after, "mape_uncalibrated": before["mape"],
              "spearman_uncalibrated": before["spearman"],
              "within_10pct_uncalibrated": before["within_10pct"],
              "speed_factor": speed, "mape_without_drift_correction": raw["mape"],
              "within_10pct_without_drift_correction": raw["within_10pct"],
              "samples": samples, "space": space.name,
              "device": table.meta.get("cpu") or table.meta.get("device"),
              "backend": timer.backend, "threads": timer.threads, "batch": meter.batch,
              "calibration_fit": calibration.fit,
              "measured_ms": measured.tolist(), "predicted_ms": calibrated.tolist(),
              "predicted_uncalibrated_ms": plain.tolist(),
              "architectures": [a.encode() for a in archs]}
    if plot:
        result["plot"] = str(latency_scatter(measured, plain, calibrated, plot,
                                             f"{space.name}: {result['device']}, "
                                             f"{timer.backend}, {timer.threads} thread(s)"))
    return result
