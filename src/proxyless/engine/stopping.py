"""Stopping a run on request: SIGTERM and SIGUSR1, what SLURM and Kubernetes send before they
end (preempt, requeue) a job.

Inside the epochs of a run (`deferred`), a signal is only noted: the loop finishes the batch
it is on, writes a checkpoint and raises `Stopped` (see `proxyless.engine.epochs.Epochs`). Anywhere
else in a command that holds the handlers (`stop_signals`), the handler raises `Stopped` at
once, as Ctrl-C raises KeyboardInterrupt: what is finished is checkpointed already. The CLI
prints how to resume and exits with `EXIT_STOPPED` (75, EX_TEMPFAIL: "try again later"), so a
cluster script can tell a stop to requeue from a failure. Ctrl-C (SIGINT) is left as it is.

    >>> with stop_signals():            # the CLI, around `search`, `train` and `run`
    ...     with deferred():            # Epochs.run, around its loop
    ...         if requested(): ...     # polled after every step
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL


class Stopped(BaseException):
    """A run stopped by a signal; its message says what the checkpoint holds. A
    BaseException, as KeyboardInterrupt is: raised from the handler anywhere in a command, no
    `except Exception` (an image decoder's, say) may take it for an error and go on."""

    exit_code = EXIT_STOPPED


class _State:
    requested: str | None = None   # the name of the signal received, until handled
    defer = 0                       # > 0 inside `deferred`: note the signal, raise nothing
    installed = 0                   # > 0 while our handler is in place


def _handler(signum: int, frame) -> None:
    _State.requested = signal.Signals(signum).name
    if not _State.defer:
        raise Stopped(f"stopped by {_State.requested}; everything up to the last checkpoint "
                      "is kept")


@contextlib.contextmanager
def _installed() -> Iterator[None]:
    """Our handler for the stop signals while inside, the previous ones restored after;
    nothing outside the main thread (where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.signal(stop, _handler) for stop in STOP_SIGNALS}
    _State.installed += 1
    try:
        yield
    finally:
        _State.installed -= 1
        for stop, handler in previous.items():
            signal.signal(stop, handler)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """A command that stops cleanly on SIGTERM/SIGUSR1 (see the module's text)."""
    _State.requested = None
    with _installed():
        yield


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, a stop signal is noted for `requested` instead of raising: the caller stops
    at a point where it can checkpoint. Installs the handlers where `stop_signals` has not
    (a library user's own script)."""
    with contextlib.ExitStack() as stack:
        if not _State.installed:
            stack.enter_context(_installed())
        _State.defer += 1
        try:
            yield
        finally:
            _State.defer -= 1


def requested() -> str | None:
    """The name of the stop signal received (SIGTERM, SIGUSR1), or None."""
    return _State.requested


def clear() -> None:
    _State.requested = None
