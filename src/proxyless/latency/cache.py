"""Latency tables cached per device: profile once, reuse while the fingerprint matches.

The cache folder is `$PROXYLESS_CACHE`, else `$XDG_CACHE_HOME/proxyless`, else
`~/.cache/proxyless`; tables live in its `tables/` folder, named by space and a digest of the
device fingerprint (CPU, libraries, backend, threads, batch) and the space.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from proxyless.latency.calibration import calibrate
from proxyless.latency.profile import profile_space
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import Timer, fingerprint
from proxyless.space import SearchSpace


def cache_dir() -> Path:
    """$PROXYLESS_CACHE, else $XDG_CACHE_HOME/proxyless, else ~/.cache/proxyless."""
    if os.environ.get("PROXYLESS_CACHE"):
        return Path(os.environ["PROXYLESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "proxyless"


def cached_table(space: SearchSpace, device: str, threads: int, min_time: float,
                 calibration_networks: int, progress: bool, log=print) -> tuple[LatencyTable,
                                                                              Path]:
    """This device's table for `space`: from the cache when the fingerprint matches."""
    info = fingerprint("torch", device, threads, 1)
    digest = hashlib.sha256(json.dumps({"fingerprint": info, "space": space.to_dict()},
                                       sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "tables" / f"{space.name}-{digest}.json"
    if path.exists():
        table = LatencyTable.load(path)
        if table.calibration:
            log(f"latency table: reusing {path}")
            return table, path
    log(f"latency table: profiling {space.name} on {info['cpu']} ({threads} thread(s)) -> {path}")
    table = profile_space(space, path, Timer("torch", device, threads, min_time=min_time),
                          progress=progress, log=log)
    fit = calibrate(table, calibration_networks, progress=progress).fit
    table.save(path)
    log(f"calibration: MAPE {fit['mape_plain_sum']:.1f}% (table sum) -> "
        f"{fit['mape_fitted']:.1f}% (fitted) on {fit['architectures']} networks")
    return table, path
