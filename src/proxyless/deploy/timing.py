"""The latency figures of an export: each runtime measured now on this CPU, a latency
table's prediction, and the model measured on the table's own setting and time base."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from proxyless.deploy.classifier import Classifier
from proxyless.deploy.model_file import ModelInfo
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter
from proxyless.latency.settings import table_setting
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import Timer
from proxyless.model.architecture import Architecture


def predicted_latency(model_file: Path, info: ModelInfo,
                      table: str | None) -> tuple[LatencyTable | None, dict[str, Any]]:
    """The latency table (`table`, else the run folder's own table when the model is a run's
    `retrain/model.pt`; None without one) and its prediction for the model's architecture,
    which is on the table's setting (device, backend, threads, batch) and time base."""
    run_table = model_file.parent.parent / "latency_table.json"
    if table is not None:
        path = Path(table)
    elif model_file.parent.name == "retrain" and run_table.is_file():
        path = run_table
    else:
        return None, {"table": None, "predicted_ms": None, "table_setting": None}
    loaded = LatencyTable.load(path)
    return loaded, {"table": str(path), "table_setting": table_setting(loaded.meta),
                    "predicted_ms": latency_model(loaded, info.arch.space).predict(info.arch)}


def measure_on_table(table: LatencyTable | None, arch: Architecture,
                     min_time: float) -> dict[str, Any]:
    """The model measured as the table was (its backend, batch, threads and anchor: raw ms
    divided by the machine's speed factor, so on the table's time base), which makes it
    comparable with the table's prediction. Only where the table was measured on this machine
    (`Meter.for_table` refuses others): a phone's or another CPU's figures cannot be."""
    result: dict[str, Any] = {"measured_on_table_ms": None, "speed_factor": None,
                              "table_comparable": None, "table_not_comparable_because": None}
    if table is None:
        return result
    try:
        if table.space is None:
            raise ProxylessError("the table does not say which space it covers")
        meter = Meter.for_table(table, min_time=min_time)
    except ProxylessError as err:
        return {**result, "table_comparable": False, "table_not_comparable_because": str(err)}
    ms, speed = meter.measure([arch])
    return {**result, "measured_on_table_ms": ms[0] / speed, "speed_factor": speed,
            "table_comparable": True}


def measure_latency(runs: dict[str, Classifier], sample: np.ndarray, threads: int,
                    min_time: float) -> dict[str, Any]:
    """Latency (ms, 10th percentile) and its interquartile range of each classifier on
    `sample` (normalized input), at `threads`, timed together round-robin
    (`Timer.time_runs`) so that drift in the machine's speed hits all."""
    entries = Timer("torch", "cpu", threads, warmup=10, repeats=50, min_time=min_time
                    ).time_runs([functools.partial(run.logits, sample) for run in runs.values()])
    return {"latency_ms": {name: e.ms for name, e in zip(runs, entries, strict=True)},
            "latency_iqr_ms": {name: e.spread for name, e in zip(runs, entries, strict=True)}}
