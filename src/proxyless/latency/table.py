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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyless.config_io import excerpt, shorten
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, write_mapping_atomic
from proxyless.model.space import PRESETS, SearchSpace, load_space

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
            where = shorten(self.meta.get("device", "its device"), 60)
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
        """A table from its file's mapping: every field checked by name and type, every
        latency a finite number >= 0 (a NaN or negative entry would make the search chase
        a `nan ms` or negative latency)."""
        if not isinstance(data, dict):
            raise ProxylessError(f"{where}: expected a mapping, got {type(data).__name__}")
        if "format" not in data and any(isinstance(v, dict) and "mean" in v
                                        for v in data.values()):
            return from_reference(data, where)
        if data.get("format") != FORMAT:
            found = (f"format {excerpt(data['format'])}" if "format" in data
                     else "no 'format' key")
            raise ProxylessError(f"{where}: not a latency table ({found}; expected format "
                                 f"{FORMAT!r} or the reference code's key -> {{mean, var, "
                                 "count} mapping); make one with `proxyless profile`")
        unknown = sorted(set(data) - {"format", "meta", "calibration", "entries"}, key=repr)
        if unknown:
            raise ProxylessError(f"{where}: unknown key(s) {excerpt(unknown, 120)}; allowed "
                                 "keys are format, meta, calibration, entries")
        entries = _mapping(data.get("entries", {}), f"{where}: entries",
                           "a mapping of layer keys to {ms, spread, count}")
        return cls({_key(k, f"{where}: entries"): _entry(v, f"{where}: entries[{excerpt(k)}]")
                    for k, v in entries.items()},
                   _meta(data.get("meta"), f"{where}: meta"),
                   _calibration(data.get("calibration"), f"{where}: calibration"))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        table = cls.from_dict(read_mapping(path, "latency table"), f"latency table {path}")
        table.meta.setdefault("path", str(path))
        return table


# -- checking a table's fields ---------------------------------------------------------
_ENTRY_KEYS = ("ms", "spread", "count")
_META_INTS = {"threads": (1, 4096), "batch": (1, 10**6), "warmup": (0, 10**6),
              "repeats": (1, 10**6)}  # name -> the range a Timer accepts and can run
MAX_MS = 1e9  # 11 days for one layer: beyond it a sum of entries could overflow to inf
_META_NUMBERS = ("min_time", "anchor_ms")
_META_STRINGS = ("backend", "device", "cpu", "anchor_arch", "source", "date", "path")  # read
_CALIBRATION_KEYS = ("offset", "scales", "per_op", "per_mweight", "fit", "refused",
                     "grouping")
# how a calibration groups the blocks, each group with a scale (`latency.calibration`)
GROUPINGS = ("single", "resolution", "kernel")


def _mapping(value: Any, where: str, what: str = "a mapping") -> dict:
    if not isinstance(value, dict):
        raise ProxylessError(f"{where} must be {what}, got {type(value).__name__} "
                             f"{excerpt(value)}")
    return value


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise ProxylessError(f"{where}: key {excerpt(key)} must be a string (a layer key)")
    return key


def _number(value: Any, where: str, minimum: float = 0.0) -> float:
    """A finite number from `minimum` to MAX_MS; YAML/JSON allow NaN and infinity, a
    latency may not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not minimum <= value <= MAX_MS:
        raise ProxylessError(f"{where} must be a finite number from {minimum:g} to {MAX_MS:g}, "
                             f"got {excerpt(value)}; profile the space again")
    return float(value)


def _whole(value: Any, where: str, minimum: int = 0, maximum: int = 10**9) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) <= maximum:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProxylessError(f"{where} must be a whole number from {minimum} to {maximum:,}, "
                             f"got {excerpt(value)}")
    return value


def _entry(value: Any, where: str) -> Entry:
    value = _mapping(value, where, "a mapping of ms, spread and count")
    unknown = sorted(set(value) - set(_ENTRY_KEYS), key=repr)
    if unknown or "ms" not in value:
        problem = f"unknown key(s) {excerpt(unknown)}" if unknown else "no 'ms'"
        raise ProxylessError(f"{where} has {problem}; an entry holds ms, spread and count")
    return Entry(_number(value["ms"], f"{where}.ms"),
                 _number(value.get("spread", 0.0), f"{where}.spread"),
                 _whole(value.get("count", 0), f"{where}.count"))


def _meta(value: Any, where: str) -> dict[str, Any]:
    """The provenance fields the code reads are checked; other fields stay as written."""
    meta = dict(_mapping({} if value is None else value, where))
    for name, (minimum, maximum) in _META_INTS.items():
        if name in meta:
            meta[name] = _whole(meta[name], f"{where}.{name}", minimum, maximum)
    for name in _META_NUMBERS:
        if name in meta:
            meta[name] = _number(meta[name], f"{where}.{name}",
                                 minimum=0.0 if name == "min_time" else 1e-12)
    for name in _META_STRINGS:
        if name in meta and not isinstance(meta[name], str):
            raise ProxylessError(f"{where}.{name} must be a string, got {excerpt(meta[name])}")
    space = meta.get("space")
    if isinstance(space, dict):  # parsed now, so a bad space is reported with the table's name
        SearchSpace.from_dict(space, f"{where}.space")
    elif not (space is None or space in PRESETS):
        raise ProxylessError(f"{where}.space must be a space (a mapping) or a preset name "
                             f"({', '.join(PRESETS)}), got {excerpt(space)}")
    return meta


def _calibration(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _mapping(value, where, "a mapping of offset, scales, per_op and fit (or null)")
    unknown = sorted(set(value) - set(_CALIBRATION_KEYS), key=repr)
    if unknown:
        raise ProxylessError(f"{where}: unknown key(s) {excerpt(unknown)}; a calibration "
                             "holds offset, scales, per_op and fit (or refused and fit)")
    if "refused" in value:  # a fit not used, and why: the table's plain sum
        if not isinstance(value["refused"], str) or set(value) - {"refused", "fit",
                                                                  "grouping"}:
            raise ProxylessError(f"{where}: a refused calibration holds its reason (text), "
                                 "grouping and fit only; profile the space again")
        return {"refused": value["refused"],
                "grouping": _grouping(value.get("grouping", "kernel"), f"{where}.grouping"),
                "fit": dict(_mapping(value.get("fit", {}), f"{where}.fit"))}
    scales = _mapping(value.get("scales", {}), f"{where}.scales", "a mapping of op kinds to scales")
    # the offset is of either sign: a correction of the fixed layers' entries too
    return {"offset": _number(value.get("offset", 0.0), f"{where}.offset", minimum=-MAX_MS),
            "scales": {_key(k, f"{where}.scales"): _number(v, f"{where}.scales[{excerpt(k)}]")
                       for k, v in scales.items()},
            # ms per non-zero block, of either sign (a table of separate layers overcounts)
            "per_op": _number(value.get("per_op", 0.0), f"{where}.per_op", minimum=-MAX_MS),
            # ms per million weights of a non-zero block (the cache misses of loading them)
            "per_mweight": _number(value.get("per_mweight", 0.0), f"{where}.per_mweight"),
            "grouping": _grouping(value.get("grouping", "kernel"), f"{where}.grouping"),
            "fit": dict(_mapping(value.get("fit", {}), f"{where}.fit"))}


def _grouping(value: Any, where: str) -> str:
    if value not in GROUPINGS:
        raise ProxylessError(f"{where} must be one of {', '.join(GROUPINGS)}, got "
                             f"{excerpt(value)}; profile the space again")
    return value


def from_reference(data: dict, where: str = "reference latency table") -> LatencyTable:
    """The reference code's table (key -> mean ms, var, count); ImageNet space, width 1.0."""
    entries = {}
    for key, value in data.items():
        here = f"{where}: entry {excerpt(key)}"
        value = _mapping(value, here, "a mapping of mean, var and count")
        if "mean" not in value:
            raise ProxylessError(f"{here} has no 'mean' (ms); a reference entry holds mean, "
                                 "var and count")
        entries[_key(key, where)] = Entry(_number(value["mean"], f"{here}: mean"),
                                          _number(value.get("var", 0.0), f"{here}: var") ** 0.5,
                                          _whole(value.get("count", 0), f"{here}: count"))
    meta = {"device": "reference table (the ProxylessNAS authors': Pixel 1, TFLite)",
            "backend": "tflite", "batch": 1, "space": load_space("imagenet").to_dict(),
            "source": "reference"}
    return LatencyTable(entries, meta)
