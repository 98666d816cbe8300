"""Profiling a space: every distinct layer timed on this device, saved as a lookup table.

    >>> table = profile_job(load_space("fashion"), ProfileSetting(), "table.json")
    >>> table = profile_space(load_space("fashion"), "table.json", Timer("torch", threads=1))

`ProfileSetting` is how a device is profiled (runtime, device, batch, threads, timing, the
calibration's networks): what `profile` measures, and what `search` and `run` profile (or
take from the cache) when no table is given. `profile_job` profiles, calibrates and saves.

The layers are timed together, round-robin, in groups of up to `GROUP` (every preset's 70
layers in one group: one time base, nothing to correct), each group beside the anchor
network (see `latency.measure`). A larger space's later groups are put on the first's time
base by the anchor's ratio, which is a whole network's: measured here, it moved the layers of
a group by up to 11% against the others, where one group keeps a layer's entry within ~1%
from one profile to the next (bench/README.md, "Where the latency model's error lives"). The
table is saved after every group, so an interrupted profile resumes where it stopped.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from proxyless.config_io import declared_problem, setting
from proxyless.errors import ProxylessError
from proxyless.latency.calibration import CALIBRATION_NETWORKS, calibrate
from proxyless.latency.measure import Meter
from proxyless.latency.table import Entry, LatencyTable
from proxyless.latency.timer import (
    BACKENDS,
    DEFAULT_THREADS,
    GPU_PROFILE_BATCH,
    MAX_MIN_TIME,
    Timer,
    default_setting,
    fingerprint,
)
from proxyless.model.layers import candidate_layers, fixed_layers
from proxyless.model.space import SearchSpace

GROUP = 128  # layers timed together: one time base (see the module's docstring)


@dataclass(frozen=True)
class ProfileSetting:
    """How a device's latency is profiled. `backend` and `batch` None: the device's default
    (`resolved`): on a GPU its own latency in PyTorch at the paper's GPU batch, on the CPU
    ONNX Runtime at batch 1."""

    backend: str | None = setting(
        None, "the runtime timed: onnxruntime (the default on the CPU: what an exported "
              "network is deployed with) or torch (PyTorch eager; the default on a GPU, timed "
              "with CUDA events)", choices=BACKENDS)
    device: str = setting("cpu", "the device timed: cpu, cuda or cuda:N (search and run: "
                                 "their --device)")
    batch: int | None = setting(None, f"batch size timed (default 1 on the CPU, "
                                      f"{GPU_PROFILE_BATCH} on a GPU as the paper's GPU "
                                      "latency; e.g. 64 with 2 threads times CPU throughput)",
                                at_least=1)
    threads: int = setting(DEFAULT_THREADS, "threads timed, fixed (1: one core, as a "
                                            "deployment at batch 1 uses; docs/latency.md)",
                           at_least=1)
    min_time: float = setting(10.0, "seconds of round-robin timing per group of layers, so "
                                    "that drift in the machine's speed hits them alike",
                              at_least=0, at_most=MAX_MIN_TIME)
    warmup: int = setting(10, "untimed runs of each layer first", at_least=0)
    repeats: int = setting(50, "timed rounds at least", at_least=1)
    calibration_networks: int = setting(
        CALIBRATION_NETWORKS, "networks measured end to end to fit the table's correction "
                              "(0: none)", at_least=0)

    def resolved(self) -> ProfileSetting:
        """This setting with the device's default runtime and batch where none is given."""
        backend, batch = default_setting(self.device)
        return replace(self, backend=self.backend or backend, batch=self.batch or batch)

    def validate(self) -> None:
        problem = declared_problem(self)  # backend, threads, batch, min_time (inf: forever)
        if problem is not None:
            raise ProxylessError(f"profile: {problem}")
        if self.calibration_networks == 1 or self.calibration_networks < 0:
            raise ProxylessError(f"profile: calibration_networks must be 0 (none) or >= 2, "
                                 f"got {self.calibration_networks}")

    def timer(self) -> Timer:
        setting = self.resolved()
        return Timer(setting.backend, self.device, self.threads, self.warmup, self.repeats,
                     self.min_time)


def profile_job(space: SearchSpace, setting: ProfileSetting, out: str | Path,
                progress: bool = True, log: Callable[[str], None] = print) -> LatencyTable:
    """Profile `space` as `setting` says into the table file `out` (resuming a partial one),
    calibrate it, save it; `log` gets the calibration's one-line summary."""
    setting = setting.resolved()
    table = profile_space(space, out, setting.timer(), setting.batch, progress=progress,
                          log=log)
    if setting.calibration_networks > 0:
        calibration = calibrate(table, setting.calibration_networks, progress=progress)
        table.save(out)  # atomic, and calibrated
        log(calibration.summary())
    return table


def layer_workloads(space: SearchSpace, batch: int) -> dict[str, tuple[Callable[[], nn.Module],
                                                                       tuple[int, ...]]]:
    """Every distinct layer of the space: key -> (module factory, input shape)."""
    layers = [*fixed_layers(space), *(layer for row in candidate_layers(space) for layer in row)]
    work: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {}
    for layer in layers:
        if layer.key:
            work.setdefault(layer.key, (layer.build, layer.input_shape(batch)))
    return work


def profile_meta(space: SearchSpace, timer: Timer, batch: int = 1) -> dict:
    """What a table records about how it was measured (a partial one resumes only if equal)."""
    return {**fingerprint(timer.backend, str(timer.device), timer.threads, batch),
            "space": space.to_dict(), "warmup": timer.warmup, "repeats": timer.repeats,
            "min_time": timer.min_time, "statistic": "p10"}


def other_settings(table: LatencyTable, meta: dict) -> list[str]:
    """The settings of `meta` that `table` was measured with otherwise (the date aside)."""
    return [k for k in meta if k != "date" and table.meta.get(k) != meta[k]]


def profile_space(space: SearchSpace, out: str | Path, timer: Timer, batch: int = 1,
                  progress: bool = True, log: Callable[[str], None] = print,
                  chunk: int | None = None) -> LatencyTable:
    """Measure every distinct layer of `space`; resumes a partial table at `out`."""
    out = Path(out)
    meta = profile_meta(space, timer, batch)
    table = LatencyTable(meta=meta)
    if out.exists():
        table = LatencyTable.load(out)
        table.meta.pop("path", None)
        diff = other_settings(table, meta)
        if diff:
            raise ProxylessError(f"{out} holds a table measured with other settings "
                                 f"({', '.join(diff)}); use another --out, or delete it")
        if table.entries:
            log(f"resuming {out}: {len(table.entries)} entries already measured")
    workloads = layer_workloads(space, batch)
    meter = Meter(timer, space, batch, reference=table.meta)
    todo = [k for k in workloads if k not in table.entries]
    torch.manual_seed(0)
    chunk = chunk or GROUP
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    bar = tqdm(total=len(todo), desc="profile", unit="op", disable=not progress)
    for keys in chunks:  # saved after every chunk: an interruption loses at most one chunk
        entries, speed = meter.time([(workloads[k][0](), workloads[k][1]) for k in keys])
        table.entries.update((k, Entry(e.ms / speed, e.spread / speed, e.count))
                             for k, e in zip(keys, entries, strict=True))
        table.meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        table.save(out)
        bar.update(len(keys))
    bar.close()
    if not todo:
        table.save(out)
    return table
