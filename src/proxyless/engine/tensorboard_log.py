"""A run folder's TensorBoard event files: `tensorboard --logdir runs/` shows a search or a
training while it runs.

    >>> board = RunBoard(out, steps_per_epoch=len(train), every=10, read_every=25,
    ...                  metrics=("epoch/val_top1",))
    >>> board.open(start_epoch=0, resumed=False, settings=config_json)
    >>> board.add(step, {"train/loss": loss})   # device tensors or numbers; step 1 = first batch
    >>> board.epoch(1, record)                   # a metrics.jsonl record: its numbers as epoch/*

Steps count weight steps over the whole run (epoch e's batch i is e * steps_per_epoch + i + 1);
epoch figures sit at the step their epoch ended on, so every curve shares one axis. Step values
are averaged over `every` steps and stay on the device (as tensors) until `read_every` steps
have gone by, then are read in one transfer per device: a GPU is never made to wait per step.

A resumed run continues the same curves without duplicates: its writer starts with TensorBoard's
purge mark at the first step after the checkpoint, and TensorBoard drops whatever the stopped
process had logged from that step on. Only one process writes (rank 0 under torchrun): the
others hold a disabled board.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

Value = torch.Tensor | float


class RunBoard:
    def __init__(self, folder: str | Path, steps_per_epoch: int, every: int = 10,
                 read_every: int = 1, enabled: bool = True, metrics: Iterable[str] = (),
                 log: Callable[[str], None] = print) -> None:
        self.folder, self.steps_per_epoch = Path(folder), steps_per_epoch
        self.every, self.read_every = max(1, every), max(1, read_every)
        self.enabled, self.metrics, self.log = enabled, tuple(metrics), log
        self.writer = None
        self.sums: dict[str, Value] = {}
        self.counts: dict[str, int] = {}
        self.interval_end: int | None = None  # the last step of the interval being summed
        self.pending: list[tuple[int, str, Value]] = []
        self.last_read = 0
        self.picture_share, self.picture_time, self.opened_at = 0.02, 0.0, 0.0
        self.picture_cost = 1.0  # seconds, a guess until the first picture is timed

    def open(self, start_epoch: int, resumed: bool,
             settings: Mapping[str, Any] | None = None, steps_done: int = 0) -> None:
        """Start writing after `start_epoch` finished epochs and `steps_done` steps of the
        next; a fresh run also records its `settings` as hparams, beside `metrics` (scalar
        tags: what runs are compared by)."""
        if not self.enabled:
            return
        try:  # deferred: a quarter of a second that `proxyless --help` need not pay
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # a dependency: missing only in a hand-made environment
            self.enabled = False
            self.log(f"warning: no TensorBoard event files ({err}); `pip install tensorboard`, "
                     "or pass --no-tensorboard to silence this")
            return
        self.opened_at = time.perf_counter()
        first_step = start_epoch * self.steps_per_epoch + steps_done + 1
        self.last_read = first_step - 1
        self.writer = SummaryWriter(str(self.folder),
                                    purge_step=first_step if resumed else None)
        if not resumed and settings is not None:
            self._hparams(settings)

    @property
    def active(self) -> bool:
        """Whether anything logged is written (a writer is open)."""
        return self.writer is not None

    def add(self, step: int, values: Mapping[str, Value]) -> None:
        """Values of weight step `step`, averaged with the others of their tag over an
        interval of `every` steps, logged at its last step (a multiple of `every`). Nothing
        here reads a device tensor."""
        if self.writer is None:
            return
        interval_end = -(-step // self.every) * self.every
        if self.interval_end is not None and interval_end != self.interval_end:
            self._end_interval()
        self.interval_end = interval_end
        for tag, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self.sums[tag] = self.sums[tag] + value if tag in self.sums else value
            self.counts[tag] = self.counts.get(tag, 0) + 1
        if step - self.last_read >= self.read_every:
            self.read()
            self.last_read = step

    def _end_interval(self) -> None:
        for tag, total in self.sums.items():
            self.pending.append((self.interval_end, tag, total / self.counts[tag]))
        self.sums.clear()
        self.counts.clear()
        self.interval_end = None

    def state_dict(self) -> dict[str, Any]:
        """The interval being summed, for a checkpoint inside an epoch (read to the host)."""
        return {"interval_end": self.interval_end, "counts": dict(self.counts),
                "sums": {tag: float(total) for tag, total in self.sums.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Go on summing the interval a checkpoint inside an epoch held."""
        if self.writer is None:
            return
        self.interval_end = state["interval_end"]
        self.counts = dict(state["counts"])
        self.sums = dict(state["sums"])

    def read(self) -> None:
        """Write the pending values: the device tensors of each device in one transfer."""
        if not self.pending:
            return
        by_device: dict[torch.device, list[int]] = {}
        for k, (_, _, value) in enumerate(self.pending):
            if isinstance(value, torch.Tensor):
                by_device.setdefault(value.device, []).append(k)
        numbers: list[float | None] = [None if isinstance(v, torch.Tensor) else float(v)
                                       for _, _, v in self.pending]
        for indices in by_device.values():
            read = torch.stack([self.pending[k][2].reshape(()) for k in indices]).tolist()
            for k, value in zip(indices, read, strict=True):
                numbers[k] = value
        for (step, tag, _), value in zip(self.pending, numbers, strict=True):
            if value is not None and math.isfinite(value):  # a NaN ends the run elsewhere
                self.writer.add_scalar(tag, value, step)
        self.pending.clear()

    def epoch(self, epoch: int, record: Mapping[str, Any]) -> None:
        """The numbers of epoch `epoch`'s record (1 = the first) as `epoch/<key>`."""
        if self.writer is None:
            return
        step = epoch * self.steps_per_epoch
        if self.interval_end is not None and self.interval_end <= step:
            self._end_interval()  # it ends with the epoch: nothing more can join it
        self.read()
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(value):
                    self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def figure(self, tag: str, draw: Callable[[], Any], epoch: int, last: bool) -> None:
        """A matplotlib figure made by `draw()` at the end of epoch `epoch`, within a budget:
        a picture of many panels takes about a second to draw and encode (on the 2-core
        machine we build on), so one is drawn only where all pictures so far and this one
        (priced as the last, or at a second before the first) stay within `picture_share` of
        the time since the board opened: after every epoch of a long run, now and then in a
        run of short epochs, and always after the `last` epoch."""
        if self.writer is None:
            return
        elapsed = time.perf_counter() - self.opened_at
        if not last and self.picture_time + self.picture_cost > self.picture_share * elapsed:
            return
        started = time.perf_counter()
        self.writer.add_figure(tag, draw(), epoch * self.steps_per_epoch, close=True)
        self.picture_cost = time.perf_counter() - started
        self.picture_time += self.picture_cost

    def _hparams(self, settings: Mapping[str, Any]) -> None:
        """The settings in TensorBoard's HPARAMS tab, beside the final value of `metrics`.
        Written into this run's own event file (SummaryWriter.add_hparams would make a
        separate run folder for them)."""
        from torch.utils.tensorboard.summary import hparams  # deferred: see `open`

        flat = {key: _hparam_value(value) for key, value in _flatten(settings).items()}
        writer = self.writer._get_file_writer()
        for summary in hparams(flat, {tag: 0.0 for tag in self.metrics}):
            writer.add_summary(summary)

    def close(self) -> None:
        """Write what is pending and close the files (the run ended, or stopped)."""
        if self.writer is None:
            return
        try:
            self.read()
        except RuntimeError:  # a device error ends the run: its message matters, not ours
            pass
        self.writer.close()
        self.writer = None


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard takes booleans, numbers and text: None and lists become text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def disabled() -> RunBoard:
    """A board that writes nothing (--no-tensorboard, or not rank 0)."""
    return RunBoard(".", 1, enabled=False)
