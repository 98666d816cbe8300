"""One writer per run folder: an exclusive `flock` on `FOLDER/.lock`, held while a command
or a run function writes there.

The kernel drops the lock with its process, however the process ends (kill -9 included), so
there is never a stale lock to clean up; a second process that wants the folder is refused at
once, with the holder's pid. Within one process the lock is re-entrant (the CLI holds it around
the library's run function, which takes it too) and released when the outermost holder
returns, so a script (or a test) may resume a run in the same process.

    >>> with hold_run_folder("runs/a"):     # or ProxylessError: another process writes there
    ...     ...

Taken on rank 0 only under torchrun (the only rank that writes). On network file systems
`flock` works where the mount supports locks (NFS does; Lustre needs `-o flock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from proxyless.config_io import clip
from proxyless.engine.runtime import prepare_out_dir
from proxyless.errors import ProxylessError

LOCK_FILE = ".lock"
_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, holders in this process)


def _acquire(folder: Path) -> int:
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ProxylessError(
                f"{clip(folder)} is in use by another proxyless process (pid {holder}) that is "
                "writing to it; wait for it to end (or stop it), or choose another "
                "--out") from None
        except OSError as err:  # a file system without locks
            os.close(fd)
            raise ProxylessError(f"cannot lock {clip(path)} ({err.strerror}); put --out on a "
                                 "file system that supports flock") from None
        try:  # the holder we waited on may have removed the file: lock the one that is there
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold_run_folder(folder: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold `folder`'s lock inside (the folder is made, as `prepare_out_dir` does, where
    missing); `enabled=False` (ranks other than 0) holds nothing."""
    if not enabled:
        yield
        return
    key = prepare_out_dir(folder).resolve()
    if key in _held:
        fd, count = _held[key]
        _held[key] = (fd, count + 1)
    else:
        _held[key] = (_acquire(key), 1)
    try:
        yield
    finally:
        fd, count = _held[key]
        if count > 1:
            _held[key] = (fd, count - 1)
        else:
            del _held[key]
            with contextlib.suppress(OSError):  # removed while locked: no one else holds it
                os.unlink(key / LOCK_FILE)
            os.close(fd)
