"""What a finished `proxyless run` found (`results.json`), as a dataclass written and read
through one `from_dict`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxyless.config_io import result_from_dict, to_dict
from proxyless.files import read_mapping

RESULTS_FILE = "results.json"


@dataclass
class RunResult:
    """The derived network, its test top-1 after retraining, its latency (target, predicted,
    measured) and where that latency is of. Read back with `read`."""

    arch: str
    test_top1: float = 0.0
    target_ms: float | None = None
    predicted_ms: float | None = None       # by the run's latency model
    measured_ms: float | None = None        # end to end when the search finished
    speed_factor: float | None = None       # the machine's speed then, against the table's
    params: int = 0
    macs: int = 0
    search_val_top1: float = 0.0
    search_time_s: float = 0.0
    retrain_time_s: float = 0.0
    data: str = ""
    train_images: int = 0                   # the retraining's: training split + hold-out
    test_images: int = 0
    search_train_images: int = 0            # the search's weights trained on these ...
    search_val_images: int = 0              # ... and α on this hold-out
    retrain_init: str = "scratch"           # scratch, or the supernet's weights
    retrain_dropout: float | None = None
    retargeted_from: str | None = None      # run --from-search: that search's folder
    device: str | None = None               # the table's CPU model or device
    threads: int | None = None
    backend: str | None = None
    batch: int = 1
    table: str = ""                         # the latency table's file
    budget: str = "custom"
    priced: dict[str, Any] | None = None    # the setting the latency is of
    latency_model: dict[str, Any] | None = None  # how good the latency model is
    runtimes_ms: dict[str, Any] | None = None    # measured now in every runtime
    runtimes_setting: dict[str, Any] | None = None  # ... on this machine, batch, threads

    @property
    def measured_on_table_ms(self) -> float | None:
        """The measured latency with the machine's drift since profiling taken out: the
        figure comparable with the target and the prediction (None without both)."""
        if self.measured_ms is None or not self.speed_factor:
            return None
        return self.measured_ms / self.speed_factor

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def read(cls, path: str | Path) -> RunResult:
        """results.json (`config_io.result_from_dict`)."""
        return result_from_dict(cls, read_mapping(path, "run results"), path, ("arch",))
