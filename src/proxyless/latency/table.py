"""Latency lookup tables: measured milliseconds per (op, input shape, stride), with provenance.

A table maps the walker's layer keys (`expanded_conv-input:14x14x80-output:14x14x80-expand:3-
kernel:5-stride:1-idskip:1`, `Conv-...`, `Conv_1-...`, `Logits-...`) to the median latency
and its spread, and records what it was measured on: device, CPU model, library versions,
backend, threads, batch size, date and the space it covers. It may also carry a calibration
(see `proxyless.latency.calibration`). Files are YAML or JSON.

The reference code's table format (e.g. its Pixel 1 table `mobile_trim.yaml`, values with
`mean`, `var`, `count`) loads too, so a search can target that phone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyless.config import read_mapping, write_mapping_atomic
from proxyless.errors import ProxylessError
from proxyless.space import SearchSpace, load_space

FORMAT = "proxyless-latency/1"


@dataclass
class Entry:
    ms: float            # median latency in milliseconds
    spread: float = 0.0  # interquartile range (ms), or the reference table's std
    count: int = 0       # timed runs


@dataclass
class LatencyTable:
    entries: dict[str, Entry] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    @property
    def space(self) -> SearchSpace | None:
        data = self.meta.get("space")
        if data is None:
            return None
        return SearchSpace.from_dict(data, "latency table space") if isinstance(data, dict) \
            else load_space(data)

    def ms(self, key: str) -> float:
        """The latency of one layer; a key the table lacks is an error naming it."""
        entry = self.entries.get(key)
        if entry is None:
            where = self.meta.get("device", "its device")
            raise ProxylessError(
                f"latency table (measured on {where}) has no entry {key!r}; profile this "
                "space with `proxyless profile --space ... --out TABLE` for this device")
        return entry.ms

    def to_dict(self) -> dict:
        return {"format": FORMAT, "meta": self.meta, "calibration": self.calibration,
                "entries": {k: {"ms": e.ms, "spread": e.spread, "count": e.count}
                            for k, e in sorted(self.entries.items())}}

    def save(self, path: str | Path) -> Path:
        # atomic: an interrupted save never loses finished entries
        return write_mapping_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, where: str = "latency table") -> LatencyTable:
        if data.get("format") == FORMAT:
            try:
                entries = {k: Entry(float(v["ms"]), float(v.get("spread", 0.0)),
                                    int(v.get("count", 0)))
                           for k, v in data.get("entries", {}).items()}
            except (TypeError, KeyError, ValueError) as err:
                raise ProxylessError(f"{where}: malformed entry ({err})") from None
            return cls(entries, dict(data.get("meta") or {}), data.get("calibration"))
        if data and all(isinstance(v, dict) and "mean" in v for v in data.values()):
            return from_reference(data)
        raise ProxylessError(f"{where}: not a latency table (expected format {FORMAT!r} or the "
                             "reference code's key -> {mean, var, count} mapping)")

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        table = cls.from_dict(read_mapping(path, "latency table"), f"latency table {path}")
        table.meta.setdefault("path", str(path))
        return table


def from_reference(data: dict) -> LatencyTable:
    """The reference code's table (key -> mean ms, var, count); ImageNet space, width 1.0."""
    entries = {}
    for key, value in data.items():
        try:
            entries[key] = Entry(float(value["mean"]), float(value.get("var", 0.0)) ** 0.5,
                                 int(value.get("count", 0)))
        except (TypeError, KeyError, ValueError) as err:
            raise ProxylessError(f"reference latency table: malformed entry {key!r} "
                                 f"({err})") from None
    meta = {"device": "reference table (the ProxylessNAS authors': Pixel 1, TFLite)",
            "backend": "tflite", "batch": 1, "space": load_space("imagenet").to_dict(),
            "source": "reference"}
    return LatencyTable(entries, meta)
