"""What every training loop shares: the run skeleton (resume, checkpoints between and inside
epochs, stops), the evaluation and the step tallies. (The weights' optimizer and schedule:
`proxyless.engine.optimizer`; NaN/inf: `proxyless.engine.divergence`.)

    >>> run = start_run(out, config.device, config.threads, resume, "run", "checkpoint.pt")
    >>> epochs = Epochs(run, out, "proxyless-train/1", config.epochs, config.seed,
    ...                 state={"model": model, "optimizer": optimizer, "scheduler": scheduler},
    ...                 saved={"arch": arch.to_dict(), "config": to_dict(config)})
    >>> epochs.start(resume, config_json, check=refuse_other_settings, log=print)
    >>> epochs.run(one_epoch, line, desc="train")  # one_epoch(epoch, cursor) -> record

A run folder holds `config.json`, `metrics.jsonl` (one line per finished epoch) and
`checkpoint.pt`, written atomically after every epoch (by rank 0 under torchrun) and, every
`checkpoint_every` minutes, inside an epoch too. Each epoch starts by seeding every global RNG
from (seed, epoch), so a resumed run continues exactly as if it had never stopped:
`start(resume=True)` restores `state` from the checkpoint, after `check` has refused one
written with other settings. A checkpoint inside an epoch also holds the batch to go on from,
every RNG's state and what the loop hands `EpochCursor.step_done` (its tallies, generators):
the loop starts there (`cursor.start`, `cursor.restored`). A SIGTERM or SIGUSR1 (`stopping`)
ends the run after the current batch with such a checkpoint and `stopping.Stopped`.

A loss or parameter that becomes NaN/inf raises `Diverged` inside the epoch; `run` stops there,
before that epoch is checkpointed (it also checks the models' tensors and the record's losses
before every checkpoint), and says where it happened and which epoch the checkpoint holds.
"""

from __future__ import annotations

import contextlib
import json
import time
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from proxyless.config_io import current_names, shorten, to_dict
from proxyless.engine import distributed, stopping
from proxyless.engine.divergence import (
    LOWER_ARCH_LR,
    LOWER_LR,
    Diverged,
    first_nonfinite,
    require_finite,
)
from proxyless.engine.precision import Precision
from proxyless.engine.runtime import (
    RunContext,
    first_line,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_epoch,
    set_rng_state,
)
from proxyless.engine.tensorboard_log import RunBoard, disabled
from proxyless.errors import ProxylessError
from proxyless.files import append_text, replace_atomically, write_json_atomic


class Tally:
    """Loss and top-1 over batches, summed over DDP ranks. Sums stay on the device until
    `totals`: reading them per batch would make the host wait for the GPU at every step."""

    def __init__(self) -> None:
        self.loss_sum: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | float = 0.0
        self.count = 0

    def add(self, loss_sum: torch.Tensor | float, logits: torch.Tensor,
            y: torch.Tensor) -> torch.Tensor:
        """`loss_sum`: the batch's summed loss (a detached tensor, or a number). Returns the
        batch's top-1 in %, a device tensor."""
        correct = (logits.detach().argmax(1) == y).sum()
        self.loss_sum = self.loss_sum + loss_sum
        self.correct = self.correct + correct
        self.count += y.numel()
        return correct * (100.0 / max(y.numel(), 1))

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """What `state_dict` held (a mid-epoch checkpoint), its sums back on `device`."""
        self.loss_sum, self.correct = (v.to(device) if isinstance(v, torch.Tensor) else v
                                       for v in (state["loss_sum"], state["correct"]))
        self.count = int(state["count"])

    def totals(self, device: torch.device) -> tuple[float, float]:
        """(mean loss, top-1 in %) over every rank's batches."""
        local = [float(v) for v in (self.loss_sum, self.correct)] + [float(self.count)]
        loss_sum, correct, count = distributed.all_reduce_sum(local, device)
        return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


def sync_every(device: torch.device) -> int:
    """Steps between reads of the losses on the host (`StepLosses`): every step on the CPU,
    where reading costs nothing, and every 25 on a GPU, which then runs ahead of the host."""
    return 1 if device.type == "cpu" else 25


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device,
             precision: Precision | None = None) -> tuple[float, float]:
    """(mean cross-entropy, top-1 in %) over all batches, summed over DDP ranks; the forward
    under `precision`'s autocast, the loss in fp32."""
    precision = precision or Precision("fp32", device.type)
    model.eval()
    tally = Tally()
    for x, y in batches:
        with precision.autocast():
            logits = model(x.contiguous(memory_format=torch.channels_last))
        tally.add(nn.functional.cross_entropy(logits.float(), y, reduction="sum"), logits, y)
    return tally.totals(device)


def batch_bar(batches: Iterable, desc: str, show: bool, start: int = 0) -> tqdm:
    """The progress bar of one epoch's batches (gone when the epoch ends), from batch
    `start` on (`Batches.iterate`: a run resumed inside the epoch)."""
    if start:
        return tqdm(batches.iterate(start), desc=desc, unit="batch", leave=False,
                    disable=not show, total=len(batches), initial=start)
    return tqdm(batches, desc=desc, unit="batch", leave=False, disable=not show)


def changed_settings(checkpoint: dict, config, resumable: Iterable[str],
                     legacy: dict[str, Any] | None = None) -> list[str]:
    """The settings of `config` that differ from the checkpoint's, but those in `resumable`.
    A setting the checkpoint does not know (added since) ran at its default, or at its
    `legacy` value where the default has changed since (how older runs behaved)."""
    before = current_names(type(config), checkpoint.get("config", {}))
    defaults = {**to_dict(type(config)()), **(legacy or {})}
    return [k for k, v in to_dict(config).items()
            if k not in resumable and before.get(k, defaults[k]) != v]


def check_same_transform(checkpoint: dict, transform: dict, out: Path) -> None:
    """Refuse to resume with images prepared otherwise (--data-mode, --crop-scale): one run,
    one input pipeline, the one its model file records. A checkpoint from before streaming
    held its images in memory."""
    before = checkpoint.get("data", {}).get("transform", {"mode": "memory"})
    if before != transform:
        raise ProxylessError(f"cannot resume {out}: it prepared its images as {before}, now "
                             f"{transform}; give the original --data-mode and --crop-scale, "
                             "or a new --out")


class EpochCursor:
    """Where one epoch stands, for the loop that runs it: `start`, the batch to begin with
    (> 0 where the run resumes inside the epoch), `restored`, what the loop saved there
    (its `loop_state()`), and `step_done`, called after every step: it writes a mid-epoch
    checkpoint when one is due and stops the run when a stop signal came (`stopping`)."""

    def __init__(self, epochs: Epochs | None, epoch: int, start: int = 0,
                 restored: dict | None = None) -> None:
        self.epochs, self.epoch, self.start, self.restored = epochs, epoch, start, restored
        self.done, self.total = start, 0  # steps of this epoch finished, of how many

    def step_done(self, batch: int, total: int, loop_state: Callable[[], dict]) -> None:
        """Batch `batch` (from 0) of `total` is done; `loop_state()`: what the loop needs to
        go on from the next batch (tallies, generators), called only when checkpointing."""
        self.done, self.total = batch + 1, total
        if self.epochs is not None:
            self.epochs.poll(self.epoch, batch + 1, total, loop_state)


class Epochs:
    """The epochs of one run folder: resume, per-epoch seeding, metrics and checkpoints.

    `state`: checkpoint key -> what the run restores on resume, an object with
    `state_dict()`/`load_state_dict()` (models, optimizers, schedulers, strategies) or a list
    (its items are replaced). `saved`: checkpoint key -> a value saved as it is (what the run
    is: its space or architecture, its config, its data), for `check` to compare on resume.
    `board`: the run's TensorBoard events (opened by `start`, given each epoch's record).
    `checkpoint_every`: minutes between checkpoints inside an epoch (0: at epoch ends only);
    `batch_size` and `memory_advice()` go into the message of an out-of-memory error.
    """

    def __init__(self, run: RunContext, out: Path, checkpoint_format: str, total: int,
                 seed: int, state: dict[str, Any], saved: dict[str, Any],
                 optional: Iterable[str] = (), board: RunBoard | None = None,
                 checkpoint_every: float = 0.0, batch_size: int | None = None,
                 memory_advice: Callable[[], str] | None = None) -> None:
        self.context, self.out, self.format = run, out, checkpoint_format
        self.optional = set(optional)  # state keys older checkpoints lack: kept as they are
        self.total, self.seed = total, seed
        self.state, self.saved = state, saved
        self.metrics: list[dict] = []
        self.start_epoch, self.elapsed = 0, 0.0
        self.board = board if board is not None and run.dist.is_main else disabled()
        self.every_s = 60.0 * checkpoint_every
        self.batch_size, self.memory_advice = batch_size, memory_advice
        self.in_epoch: dict | None = None  # a mid-epoch checkpoint's position, once restored
        self.saved_at = time.monotonic()
        self.epoch_started = time.perf_counter()
        # ranks decide together (one all-reduce) every this many steps; alone, every step
        self.poll_every = sync_every(run.device) if run.dist.enabled else 1

    @property
    def is_main(self) -> bool:
        return self.context.dist.is_main

    def _restore(self, checkpoint: dict) -> None:
        """Load a checkpoint's state, or say plainly that it is not one of this run's: a
        damaged or foreign file must not end in a KeyError or a half-restored run."""
        path = self.context.checkpoint

        def refuse(problem: str) -> typing.NoReturn:
            raise ProxylessError(f"checkpoint {path} {problem} (damaged, or written by another "
                                 "version); remove it to start over, or use a new --out")

        missing = [k for k in (*self.state, "epoch", "metrics", "elapsed_s")
                   if k not in checkpoint and k not in self.optional]
        if missing:
            refuse(f"lacks {', '.join(missing)}")
        epoch, metrics, elapsed = (checkpoint[k] for k in ("epoch", "metrics", "elapsed_s"))
        if not (type(epoch) is int and 0 <= epoch <= self.total and isinstance(metrics, list)
                and len(metrics) == epoch and all(isinstance(m, dict) for m in metrics)
                and isinstance(elapsed, (int, float))):
            refuse("holds an epoch count, metrics or time that do not fit together")
        for key, target in self.state.items():
            if key not in checkpoint:  # optional
                continue
            try:
                if isinstance(target, list):
                    if not isinstance(checkpoint[key], list):
                        raise TypeError(f"expected a list, got {type(checkpoint[key]).__name__}")
                    target[:] = checkpoint[key]
                else:
                    target.load_state_dict(checkpoint[key])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                refuse(f"has a {key!r} that does not fit this run "
                       f"({shorten(first_line(err))})")
        self.start_epoch, self.metrics, self.elapsed = epoch, metrics, float(elapsed)
        inside = checkpoint.get("in_epoch")
        if inside is not None:
            if not (isinstance(inside, dict) and epoch < self.total
                    and type(inside.get("batch")) is int and inside["batch"] >= 1
                    and all(k in inside for k in ("rng", "loop", "time_s", "world_size"))):
                refuse("holds a position inside an epoch that does not fit the run")
            world = self.context.dist.world_size
            if inside["world_size"] != world:
                raise ProxylessError(
                    f"checkpoint {path} stopped inside epoch {epoch + 1} with "
                    f"{inside['world_size']} process(es); resume it with as many (torchrun "
                    f"--nproc-per-node {inside['world_size']}), not {world}: each process's "
                    "share of the epoch's batches depends on their number")
            self.in_epoch = inside

    def start(self, resume: bool, config_json: dict, check: Callable[[dict], None],
              log: Callable[[str], None] = print) -> None:
        """Restore the last finished epoch (`resume`), then (re)write metrics and config."""
        if resume:
            checkpoint = load_checkpoint(self.context.checkpoint)
            check(checkpoint)
            self._restore(checkpoint)
            if self.is_main:
                where = (f"in epoch {self.start_epoch + 1}/{self.total} at batch "
                         f"{self.in_epoch['batch'] + 1}" if self.in_epoch else
                         f"after epoch {self.start_epoch}/{self.total}")
                log(f"resuming {self.out} {where}")
        if self.is_main:  # rewritten, so that a resumed run never duplicates lines
            # atomically: a kill mid-write must not leave it shorter than the checkpoint's
            text = "".join(json.dumps(m) + "\n" for m in self.metrics)
            replace_atomically(self.out / "metrics.jsonl", lambda f: f.write(text.encode()))
            write_json_atomic(self.out / "config.json", config_json)
            self.board.open(self.start_epoch, resume, config_json,
                            steps_done=self.in_epoch["batch"] if self.in_epoch else 0)
            if self.in_epoch and self.in_epoch.get("board"):
                self.board.load_state_dict(self.in_epoch["board"])

    def run(self, one_epoch: Callable[[int, EpochCursor], dict], line: Callable[[dict], str],
            desc: str, progress: bool = True) -> list[dict]:
        """`one_epoch(epoch, cursor)` -> its record, for each epoch left; returns every record.
        A stop signal ends it with `Stopped` once the state is checkpointed (see `poll`)."""
        bar = tqdm(range(self.start_epoch, self.total), desc=desc, unit="epoch",
                   initial=self.start_epoch, total=self.total,
                   disable=not (progress and self.is_main))
        self.saved_at = time.monotonic()
        # what was logged is kept, however it ends; stop signals are noted, not raised
        with contextlib.closing(self.board), stopping.deferred():
            for epoch in bar:
                seed_epoch(self.seed, epoch)
                cursor, spent = EpochCursor(self, epoch), 0.0
                if self.in_epoch is not None:  # the position a mid-epoch checkpoint held
                    inside, self.in_epoch = self.in_epoch, None
                    set_rng_state(inside["rng"])
                    cursor = EpochCursor(self, epoch, inside["batch"], inside["loop"])
                    spent = float(inside["time_s"])
                self.epoch_started = time.perf_counter() - spent
                try:
                    record = one_epoch(epoch, cursor)
                    self.check_finite(record)
                except Diverged as err:
                    bar.close()
                    raise ProxylessError(self.diverged_message(err, epoch)) from None
                except (MemoryError, torch.cuda.OutOfMemoryError) as err:
                    bar.close()
                    raise ProxylessError(self.memory_message(err, epoch, cursor)) from None
                record["epoch_time_s"] = time.perf_counter() - self.epoch_started
                self.elapsed += record["epoch_time_s"]
                self.metrics.append(record)
                if self.is_main:
                    append_text(self.out / "metrics.jsonl", json.dumps(record) + "\n")
                    self.board.epoch(epoch + 1, record)
                    save_checkpoint(self.context.checkpoint, self.checkpoint(epoch + 1))
                    bar.write(line(record))
                self.saved_at = time.monotonic()
                if self._agree(False)[1]:
                    bar.close()
                    self._stop(f"after epoch {epoch + 1}/{self.total}")
        return self.metrics

    def _agree(self, due: bool) -> tuple[bool, bool]:
        """(checkpoint now, stop now), the same on every rank: set where any rank says so."""
        stop = stopping.requested() is not None
        if not self.context.dist.enabled:  # no tensor: this runs after every step
            return due, stop
        flags = torch.tensor([float(due), float(stop)], device=self.context.device)
        flags = distributed.any_rank(flags).cpu()
        return bool(flags[0]), bool(flags[1])

    def poll(self, epoch: int, done: int, total: int, loop_state: Callable[[], dict]) -> None:
        """After step `done` (from 1) of `total` in `epoch`: write a checkpoint inside the
        epoch when `checkpoint_every` has passed since the last one, or a stop signal came;
        then, on a signal, stop (`Stopped`). The ranks decide together every `poll_every`
        steps; rank 0 writes while the others wait."""
        if done % self.poll_every and done != total:
            return
        due = self.every_s > 0 and time.monotonic() - self.saved_at >= self.every_s
        checkpoint, stop = self._agree(due)
        if not (checkpoint or stop):
            return
        if done < total:  # at the epoch's end its own checkpoint follows
            state = loop_state()  # every rank: it may read losses all ranks sum
            if self.is_main:
                self.board.read()
                inside = {"batch": done, "loop": state, "rng": rng_state(),
                          "time_s": time.perf_counter() - self.epoch_started,
                          "world_size": self.context.dist.world_size,
                          "board": self.board.state_dict()}
                self.check_models_finite()
                save_checkpoint(self.context.checkpoint,
                                {**self.checkpoint(epoch), "in_epoch": inside})
            distributed.barrier()
            self.saved_at = time.monotonic()
        if stop and done < total:
            self._stop(f"after batch {done}/{total} of epoch {epoch + 1}/{self.total}")

    def _stop(self, where: str) -> typing.NoReturn:
        # rank 0 has written: `poll` waited at a barrier, `run` in `_agree` after the save
        name = stopping.requested() or "a stop signal to another process"
        stopping.clear()
        raise stopping.Stopped(f"stopped by {name} {where}; {self.context.checkpoint} holds "
                               "it, and --resume continues from there")

    def check_finite(self, record: dict) -> None:
        """Nothing NaN/inf goes into a checkpoint: the record's losses and every model's
        tensors are checked first (a step can leave NaN weights behind a finite loss)."""
        for key, value in record.items():
            if key.endswith("loss") and isinstance(value, float):
                require_finite(value, f"the epoch's {key.replace('_', ' ')}")
        self.check_models_finite()

    def check_models_finite(self) -> None:
        for key, target in self.state.items():
            bad = first_nonfinite(target) if isinstance(target, nn.Module) else None
            if bad is not None:
                name, value = bad
                # α are the only parameters the architecture optimizer moves
                advice = LOWER_ARCH_LR if name.endswith("alpha") else LOWER_LR
                raise Diverged(f"{key} tensor {name}", value, advice)

    def diverged_message(self, err: Diverged, epoch: int) -> str:
        """Where it diverged, what to do, and what the run folder still holds."""
        if epoch == 0:
            kept = "no epoch had finished, so no checkpoint was written"
        else:
            kept = (f"{self.context.checkpoint} still holds the last good epoch "
                    f"({epoch}/{self.total}; --resume continues from it)")
        return f"{err.describe(f'{epoch + 1}/{self.total}')}. The run stopped: {kept}"

    def memory_message(self, err: BaseException, epoch: int, cursor: EpochCursor) -> str:
        """Out of memory: where, at which batch size, what would fit, what is kept."""
        device = "GPU" if isinstance(err, torch.cuda.OutOfMemoryError) else "CPU"
        size = f" at batch size {self.batch_size}" if self.batch_size else ""
        advice = self.memory_advice() if self.memory_advice else ""
        if epoch == 0 and cursor.done == 0 and self.in_epoch is None:
            kept = "no checkpoint was written yet"
        else:
            kept = f"{self.context.checkpoint} keeps the last checkpoint (--resume continues " \
                   "from it where memory allows)"
        where = ("its evaluation" if cursor.total and cursor.done >= cursor.total
                 else f"step {cursor.done + 1}")
        return (f"out of {device} memory in epoch {epoch + 1}/{self.total}, {where}{size}"
                f"{'; ' + advice if advice else ''}; {kept}")

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        state = {key: target if isinstance(target, list) else target.state_dict()
                 for key, target in self.state.items()}
        return {"format": self.format, "epoch": epoch, **state, **self.saved,
                "metrics": self.metrics, "elapsed_s": self.elapsed}
