"""Latency tables cached per device: profile once, reuse while the fingerprint matches.

The cache folder is `$PROXYLESS_CACHE`, else `$XDG_CACHE_HOME/proxyless`, else
`~/.cache/proxyless`; tables live in its `tables/` folder, named by space and a digest of the
device fingerprint (CPU, libraries, backend, threads, batch) and the space.

Runs may share the folder: a table is checked, profiled and written under an exclusive lock
(`flock` on `<table>.lock`, released by the kernel however its holder ends), so a second run
waits for the first and reuses its table instead of profiling the device twice at once. A
finished table is written atomically and read without the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking, as before
    fcntl = None

from proxyless.errors import ProxylessError
from proxyless.files import cache_dir
from proxyless.latency.calibration import CURRENT_GROUPING, Calibration, calibrate
from proxyless.latency.profile import ProfileSetting, other_settings, profile_job, profile_meta
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import fingerprint
from proxyless.model.space import SearchSpace


def cached_table(space: SearchSpace, setting: ProfileSetting, progress: bool = True,
                 log: Callable[[str], None] = print) -> tuple[LatencyTable, Path]:
    """This device's table for `space`, profiled as `setting` says: from the cache when the
    fingerprint matches."""
    setting = setting.resolved()
    info = fingerprint(setting.backend, setting.device, setting.threads, setting.batch)
    digest = hashlib.sha256(json.dumps({"fingerprint": info, "space": space.to_dict()},
                                       sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "tables" / f"{space.name}-{digest}.json"
    table = _finished(path)
    if table is not None and _older_calibration(table):
        with exclusive(path.with_name(path.name + ".lock"), lambda: None):
            table = _finished(path)  # another process may have recalibrated it meanwhile
            if table is not None and _older_calibration(table):
                log(f"latency table: recalibrating {path} (its calibration is of an older "
                    "form; one with a term for the blocks' weights predicts networks better)")
                log(calibrate(table, setting.calibration_networks, progress=progress).summary())
                table.save(path)
    if table is None:
        waiting = (f"latency table: waiting for another process profiling {space.name} on "
                   f"this device ({path})")
        with exclusive(path.with_name(path.name + ".lock"), lambda: log(waiting)):
            table = _finished(path)  # the process we waited for may have written it
            if table is None:
                _drop_unusable(path, profile_meta(space, setting.timer(), setting.batch), log)
                log(f"latency table: profiling {space.name} on {info['cpu']} "
                    f"({setting.backend}, {setting.threads} thread(s), batch {setting.batch})"
                    f" -> {path}")
                # under the lock; saved calibrated, so from then on `_finished`
                return profile_job(space, setting, path, progress, log), path
    log(f"latency table: reusing {path}")
    return table, path


def _older_calibration(table: LatencyTable) -> bool:
    """Whether a cached table's calibration is of an older form (scales per kernel or per
    resolution): its layers stay, its calibration is fitted again on this device."""
    return Calibration.from_dict(table.calibration).grouping != CURRENT_GROUPING


def _finished(path: Path) -> LatencyTable | None:
    """The cached table at `path` when it is complete (calibrated) and readable."""
    if not path.exists():
        return None
    try:
        table = LatencyTable.load(path)
    except ProxylessError:  # damaged: `_drop_unusable` removes it under the lock
        return None
    return table if table.calibration else None


def _drop_unusable(path: Path, meta: dict, log: Callable[[str], None]) -> None:
    """Under the lock: remove a cached partial table that cannot be resumed (damaged, or
    measured with other settings, e.g. another --profile-min-time); the cache is ours."""
    if not path.exists():
        return
    try:
        problem = other_settings(LatencyTable.load(path), meta)
    except ProxylessError as err:
        problem = [str(err)]
    if problem:
        log(f"latency table: discarding the unfinished {path} ({', '.join(problem)})")
        path.unlink()


@contextlib.contextmanager
def exclusive(lock: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive `flock` on the file `lock` (created if missing, never removed: a
    removed lock file lets two processes lock two different files); `on_wait()` runs once
    first if another process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock
