"""The one way to measure whole networks end to end: anchored, on a table's time base.

A shared machine's speed drifts by several percent from minute to minute. So every group of
workloads is timed together with a fixed anchor network (`anchor_architecture`), and the
ratio of the anchor's latency now to its latency when the reference was set (the first group
of a table, or of a standalone meter) is the machine's speed factor (> 1: slower now).
Dividing by it puts every measurement on one time base. Profiling, calibration,
`latency-check`, the search's outputs, `run` and REINFORCE all measure through a `Meter`.

    >>> ms, speed = Meter.for_table(table).measure(archs)     # raw ms, and the speed factor
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from proxyless.engine import distributed
from proxyless.engine.runtime import resolve_device
from proxyless.errors import ProxylessError
from proxyless.latency.table import Entry, LatencyTable
from proxyless.latency.timer import Timer, cpu_model
from proxyless.model.architecture import Architecture
from proxyless.model.network import build_network
from proxyless.model.space import ZERO, SearchSpace

# Timing for measuring many networks during a search (REINFORCE): a few runs each, no minimum
# time, because every architecture step measures its new samples; the anchor measured beside
# them keeps the figures on one time base all the same.
QUICK_TIMING = {"warmup": 3, "repeats": 10, "min_time": 0.0}


def anchor_architecture(space: SearchSpace) -> Architecture:
    """The fixed mid-sized network measured alongside every group of workloads."""
    tokens = [t for t in space.candidates if t != ZERO]
    return Architecture.uniform(space, tokens[len(tokens) // 2])


def timer_for(table: LatencyTable, **overrides: Any) -> Timer:
    """A timer with the table's own settings, on this machine (which must be the table's)."""
    meta = table.meta
    if meta.get("source") == "reference" or "backend" not in meta or "threads" not in meta:
        raise ProxylessError("the table was not measured on this machine: it records no "
                             "runtime and thread count to time networks with, as the authors' "
                             "Pixel 1 table does not")
    if meta.get("cpu") and meta["cpu"] != cpu_model():
        raise ProxylessError(f"the table was measured on {meta['cpu']!r} but this machine is "
                             f"{cpu_model()!r}; profile this machine with `proxyless profile`")
    if meta.get("gpu"):
        here = (torch.cuda.get_device_name(resolve_device(str(meta.get("device", "cuda"))))
                if torch.cuda.is_available() else "no GPU")
        if here != meta["gpu"]:
            raise ProxylessError(f"the table was measured on the GPU {meta['gpu']!r} but this "
                                 f"machine has {here!r}; profile this machine with `proxyless "
                                 "profile --device cuda`")
    settings = {"warmup": int(meta.get("warmup", 10)), "repeats": int(meta.get("repeats", 50)),
                "min_time": float(meta.get("min_time", 20.0)), **overrides}
    return Timer(meta["backend"], meta.get("device", "cpu"), int(meta["threads"]), **settings)


class Meter:
    """Times workloads or networks of `space` beside the anchor network.

    `reference` holds the anchor's latency at the time base (`anchor_ms`); a table's meter
    uses the table's meta, so a table made here keeps its anchor. An empty reference is set
    by the first measurement.
    """

    def __init__(self, timer: Timer, space: SearchSpace, batch: int = 1,
                 reference: dict[str, Any] | None = None) -> None:
        self.timer, self.space, self.batch = timer, space, batch
        self.reference = {} if reference is None else reference

    @classmethod
    def for_table(cls, table: LatencyTable, **timing: Any) -> Meter:
        """Measures as the table was measured (its backend, threads, batch and anchor)."""
        return cls(timer_for(table, **timing), table.space, int(table.meta.get("batch", 1)),
                   table.meta)

    def input_shape(self) -> tuple[int, int, int, int]:
        return self.space.input_shape(self.batch)

    def time(self, workloads: list[tuple[nn.Module, tuple[int, ...]]], progress: bool = False,
             desc: str = "measure") -> tuple[list[Entry], float]:
        """Entries of `workloads` (raw ms) and the speed factor of the moment."""
        anchor = anchor_architecture(self.space)
        entries = self.timer.time([*workloads, (build_network(anchor), self.input_shape())],
                                  progress, desc)
        anchor_ms = entries[-1].ms
        if "anchor_ms" not in self.reference:
            self.reference["anchor_arch"] = anchor.encode()
            self.reference["anchor_ms"] = anchor_ms
        return entries[:-1], anchor_ms / float(self.reference["anchor_ms"])

    def measure(self, archs: list[Architecture], progress: bool = False,
                desc: str = "measure") -> tuple[list[float], float]:
        """End-to-end ms of each network (measured together), and the speed factor."""
        entries, speed = self.time([(build_network(a), self.input_shape()) for a in archs],
                                   progress, desc)
        return [e.ms for e in entries], speed


class MeasuredLatency:
    """`arch -> ms` measured end to end on this machine, cached per network (REINFORCE's
    latency without a model). New networks are measured together (`measure_new`), beside
    the anchor, with `QUICK_TIMING`, on the time base of the meter's reference: a table's
    (`for_table`), or the first measurement's. Under torchrun rank 0 measures (ranks timing
    at once would slow each other down) and every rank receives its figures."""

    def __init__(self, meter: Meter | None) -> None:
        self.meter = meter  # None on ranks other than 0
        self.cache: dict[str, float] = {}

    @classmethod
    def for_table(cls, table: LatencyTable) -> MeasuredLatency:
        return cls(Meter.for_table(table, **QUICK_TIMING) if distributed.is_main() else None)

    @classmethod
    def standalone(cls, space: SearchSpace, device: str, threads: int) -> MeasuredLatency:
        timer = (Timer("torch", device, threads, **QUICK_TIMING) if distributed.is_main()
                 else None)
        return cls(Meter(timer, space) if timer is not None else None)

    def measure_new(self, archs: Sequence[Architecture]) -> None:
        """Measure, in one group, the networks not measured yet."""
        new = {a.encode(): a for a in archs if a.encode() not in self.cache}
        if not new:
            return
        values = None
        if self.meter is not None:
            ms, speed = self.meter.measure(list(new.values()))
            values = [m / speed for m in ms]
        self.cache.update(zip(new, distributed.broadcast_object(values), strict=True))

    def __call__(self, arch: Architecture) -> float:
        self.measure_new([arch])
        return self.cache[arch.encode()]

    def state_dict(self) -> dict[str, Any]:
        reference = dict(self.meter.reference) if self.meter is not None else {}
        return {"measured": dict(self.cache), "time_base": reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cache = dict(state.get("measured", {}))
        if self.meter is not None and state.get("time_base"):
            self.meter.reference.update(state["time_base"])


def spread_architectures(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """Random architectures spread from light to heavy: each draws its blocks from its own
    random preference over the candidates (Dirichlet), so the sample covers the latency range
    instead of piling up around the mean as uniform draws do."""
    rng = np.random.default_rng(seed)
    tokens = list(space.candidates)
    archs = []
    for _ in range(count):
        preference = rng.dirichlet(np.full(len(tokens), 0.5))
        chosen = []
        for slot in space.slots():
            weights = np.array([preference[tokens.index(t)] for t in slot.candidates]) + 1e-9
            chosen.append(slot.candidates[rng.choice(len(slot.candidates),
                                                     p=weights / weights.sum())])
        archs.append(Architecture(space, tuple(chosen)))
    return archs
