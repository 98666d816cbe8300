"""Settings of this machine to time networks on (`BACKEND:bBATCH:tTHREADS`), and timing a set
of networks on one of them together, so that the machine's drift hits them alike.

    >>> setting = parse_setting("onnxruntime:b1:t1")
    >>> [e.ms for e in measure_setting([arch_a, arch_b], setting, Timing(rounds=1))]

A latency table records the setting it was measured with (`Setting.of_table`); `table_text`
says it in short, and `found_here` whether a table is of this very CPU and setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from proxyless.config_io import clip, shorten
from proxyless.errors import ProxylessError
from proxyless.latency.table import Entry
from proxyless.latency.timer import BACKEND_NAMES, BACKENDS, Timer, cpu_model
from proxyless.model.architecture import Architecture
from proxyless.model.network import build_network

SETTING_FORMAT = "BACKEND:bBATCH:tTHREADS"
NO_SETTINGS = "none"  # `--settings none`: predicted columns only (no measuring at all)
DEFAULT_SETTINGS = ("torch:b1:t1", "onnxruntime:b1:t1", "torch:b64:t2")
MAX_BATCH, MAX_THREADS = 10**6, 4096  # what a latency table's meta accepts
_SETTING = re.compile(r"([a-z]+):b(\d+):t(\d+)")


@dataclass(frozen=True)
class Setting:
    """One way of running networks on this machine's CPU: backend, batch size, threads."""

    backend: str
    batch: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.backend}:b{self.batch}:t{self.threads}"

    @classmethod
    def of_table(cls, meta: dict[str, Any] | None) -> Setting | None:
        """The setting a latency table was measured with, where it was measured on a CPU
        with one of our backends (the reference Pixel 1 table has none). Which CPU is not
        part of it: `found_here` asks whether it was this machine's."""
        if not meta or meta.get("device", "cpu") != "cpu" or meta.get("backend") not in BACKENDS:
            return None
        threads, batch = meta.get("threads"), meta.get("batch", 1)
        if not isinstance(threads, int) or not isinstance(batch, int):
            return None
        return cls(meta["backend"], batch, threads)


def table_text(meta: dict[str, Any] | None) -> str:
    """The setting a latency table (or a folder's recorded latency) was measured with, in
    short: backend, batch, threads and the machine, as far as its meta says. Two figures
    compare only where this text is the same."""
    meta = meta or {}
    machine = next((shorten(meta[key], 64) for key in ("gpu", "cpu", "device_name", "device")
                    if isinstance(meta.get(key), str)), None)
    setting = Setting.of_table(meta)
    if setting is not None:
        head = setting.label
    elif meta.get("backend") in BACKENDS and isinstance(meta.get("device"), str):
        head = f"{meta['backend']}:b{meta.get('batch', 1)} ({meta['device']})"  # a GPU's
    else:
        return machine or "n/a"
    return f"{head} on {machine}" if machine else head


def found_here(meta: dict[str, Any] | None, setting: Setting) -> bool:
    """Whether a network's latency table was measured with `setting` on this very CPU: the
    same backend, batch and threads on another machine (or on one the table does not name)
    is another setting, not the one the network was found for."""
    return (meta is not None and meta.get("device") == "cpu"
            and meta.get("cpu") == cpu_model() and Setting.of_table(meta) == setting)


def table_setting(meta: dict[str, Any]) -> dict[str, Any]:
    """Where and how a table was measured, from its meta: the fields it records, no more."""
    where = meta.get("gpu") or meta.get("cpu") or meta.get("device")
    setting = {"device": where, "backend": meta.get("backend"), "threads": meta.get("threads"),
               "batch": meta.get("batch", 1)}
    return {key: value for key, value in setting.items() if value is not None}


def priced(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a search with this latency table prices, for summaries and reports: the table's
    setting (`table_setting`) and its runtime's name ("ONNX Runtime", "PyTorch (eager)", or
    the table's own backend word, e.g. the reference Pixel 1 table's "tflite")."""
    if meta is None:
        return None
    setting = table_setting(meta)
    backend = setting.get("backend")
    return {**setting, "runtime": BACKEND_NAMES.get(backend, backend or "unknown")}


def parse_setting(text: str) -> Setting:
    """`torch:b1:t1` -> Setting; anything else is an error that says what is wrong."""
    match = _SETTING.fullmatch(text)
    if match is None:
        raise ProxylessError(f"--settings {clip(text)!r}: expected {SETTING_FORMAT}, e.g. "
                             f"torch:b1:t1 or onnxruntime:b64:t2 (or '{NO_SETTINGS}' to only "
                             "predict from --table)")
    backend, batch, threads = match.group(1), int(match.group(2)), int(match.group(3))
    if backend not in BACKENDS:
        raise ProxylessError(f"--settings {text!r}: unknown backend {backend!r}; expected one "
                             f"of {', '.join(BACKENDS)}")
    if not (1 <= batch <= MAX_BATCH and 1 <= threads <= MAX_THREADS):
        raise ProxylessError(f"--settings {text!r}: batch (b) must be a whole number from 1 to "
                             f"{MAX_BATCH:,} and threads (t) from 1 to {MAX_THREADS}")
    return Setting(backend, batch, threads)


def parse_settings(texts: list[str]) -> list[Setting]:
    """The settings of `--settings` in order; `none` (alone) gives none; repeats refused."""
    if texts == [NO_SETTINGS]:
        return []
    settings = [parse_setting(text) for text in texts]
    labels = [s.label for s in settings]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ProxylessError(f"--settings names {', '.join(repeated)} more than once; give "
                             "each setting once")
    return settings


@dataclass(frozen=True)
class Timing:
    """How long each setting measures (see `Timer`), and how many times (`rounds`): a shared
    machine's speed moves by tens of percent between minutes, which one round cannot tell
    from a difference between the networks."""

    warmup: int = 5
    repeats: int = 20
    min_time: float = 3.0
    rounds: int = 1


def measure_setting(archs: list[Architecture], setting: Setting, timing: Timing,
                    progress: bool = False, desc: str | None = None) -> list[Entry]:
    """End-to-end latency (ms per batch) of each network on `setting`, all timed together
    round-robin by one Timer, so that the machine's drift hits them alike."""
    timer = Timer(setting.backend, "cpu", setting.threads, timing.warmup, timing.repeats,
                  timing.min_time)
    torch.manual_seed(0)  # the weights do not change the latency; fixed all the same
    workloads = [(build_network(arch).eval(), arch.space.input_shape(setting.batch))
                 for arch in archs]
    return timer.time(workloads, progress, desc=desc or setting.label)


def measure_runtimes(arch: Architecture, batch: int = 1, threads: int = 1,
                     timing: Timing | None = None,
                     backends: tuple[str, ...] = BACKENDS) -> dict[str, float]:
    """End-to-end ms (per batch) of `arch` on this CPU in each of `backends` (fp32) at `batch`
    and `threads`, all timed together round-robin: what the same network costs in each
    runtime, side by side."""
    timing = timing or Timing()
    timers = [Timer(backend, "cpu", threads, timing.warmup, timing.repeats, timing.min_time)
              for backend in backends]
    torch.manual_seed(0)  # the weights do not change the latency; fixed all the same
    net, shape = build_network(arch).eval(), arch.space.input_shape(batch)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runners = [timer.runner(net, shape) for timer in timers]
    finally:
        torch.set_num_threads(previous)
    entries = timers[0].time_runs(runners)
    return {backend: entry.ms for backend, entry in zip(backends, entries, strict=True)}
