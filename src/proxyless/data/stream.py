"""Image folders streamed from disk: `FolderSet` (an index, no pixels) and `StreamBatches`,
which decode and crop in DataLoader worker processes.

Only the list of files is in memory (`folder_index`), so 100,000 photos cost what 10,000 do.
Per epoch the order and every crop and flip follow from (seed, epoch, rank) as `Batches`'
do, drawn in the main process and handed to the workers with the file numbers: the same
batches whatever `workers` is, so `--resume` stays exact. Batches travel as uint8 H x W x C
(4x fewer bytes than float, through shared memory, pinned for CUDA) and are normalized on the
device; viewed as N x C x H x W they are already channels_last, the layout the networks run in.

A file that cannot be decoded is named in a warning and left out of its batch; when more than
`BAD_SHARE` of an epoch's images (and more than `BAD_MIN`) fail, the run stops with an error
naming examples: a run of days survives a damaged photo, not a broken disk.
"""

from __future__ import annotations

import atexit
import math
import random
import signal
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from proxyless.config_io import clip
from proxyless.data.batches import Batches, to_network_input
from proxyless.data.decode import DEFAULT_SCALE, Crop, UnreadableImage, decode
from proxyless.data.folder_index import FolderIndex
from proxyless.data.sets import ImageSet
from proxyless.engine.runtime import available_cores
from proxyless.engine.stopping import STOP_SIGNALS
from proxyless.errors import ProxylessError, ProxylessWarning

BAD_SHARE = 0.001
BAD_MIN = 10
STATS_IMAGES = 500


def _own_generator() -> torch.Generator:
    """A DataLoader draws its workers' base seed from this generator (or else from torch's
    global one) whenever a pass starts: the global generator, which dropout and the search's
    draws use, must not depend on the worker count or on whether workers persist (exact
    resume). Our crops are seeded per image and never read that base seed."""
    return torch.Generator().manual_seed(0)


def _ignore_stop_signals(worker_id: int) -> None:
    """In a decoding worker: SIGTERM and SIGUSR1 are for the training process, which stops at
    a safe point and then ends its workers (a cluster often signals every process of a job:
    a worker ended by one would fail the epoch instead). So the workers must be ended
    explicitly (`shutdown_workers`): multiprocessing's own exit handler ends them with a
    SIGTERM they ignore, then waits for them forever."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)


# what holds decoding processes: every StreamBatches (its workers persist between passes) and
# every pass of a one-off loader (statistics, evaluation) still running
_STREAMS: weakref.WeakSet = weakref.WeakSet()
_PASSES: weakref.WeakSet = weakref.WeakSet()


def _end_pass(iterator) -> None:
    """End a DataLoader pass's worker processes: asked to stop (torch's own shutdown: a
    message on their queues, then a join), and killed where they do not (they ignore
    SIGTERM)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is None:  # a pass in this process: nothing to end
        return
    shutdown()
    for worker in getattr(iterator, "_workers", ()):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)


def shutdown_workers() -> None:
    """End every decoding process this process started: at the end of a search or a
    training, of every command (finished, stopped, failed or interrupted), and at exit. A
    StreamBatches used again afterwards starts new workers."""
    for batches in list(_STREAMS):
        batches.close()
    for iterator in list(_PASSES):
        _end_pass(iterator)
    _PASSES.clear()


# registered after torch's and multiprocessing's own exit handlers, so it runs before them
atexit.register(shutdown_workers)


class UnreadableImageWarning(ProxylessWarning):
    """An image file that could not be decoded and was left out of its batch."""


def _warn_unreadable(path: str, reason: str) -> None:
    warnings.warn(f"skipped unreadable image {path}: {reason}", UnreadableImageWarning,
                  stacklevel=3)


def default_workers() -> int:
    """DataLoader workers by default: the cores this process may use, less one for the loop
    itself (at least 1, at most 16)."""
    return max(1, min(16, available_cores() - 1))


class FolderSet:
    """Some files of an image folder (`rows` of its index), read as `size` x `size` images
    with `channels` channels when needed; training crops them at random with area share
    `scale`, everything else takes the centre crop."""

    def __init__(self, index: FolderIndex, rows: np.ndarray, size: int, channels: int,
                 scale: tuple[float, float] = DEFAULT_SCALE) -> None:
        self.index, self.rows = index, np.asarray(rows, dtype=np.int64)
        self.size, self.channels, self.scale = size, channels, tuple(scale)
        self.classes = index.classes
        self.labels = torch.from_numpy(index.labels[self.rows].astype(np.int64))

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> FolderSet:
        return FolderSet(self.index, self.rows[np.asarray(indices, dtype=np.int64)], self.size,
                         self.channels, self.scale)

    def path(self, i: int) -> str:
        return str(self.index.path(int(self.rows[i])))

    def crop(self, train: bool, color_jitter: str = "none") -> Crop:
        return Crop(self.size, self.channels, train, self.scale, color_jitter)

    def readable(self, indices: Sequence[int] | np.ndarray | torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of those of `indices` that can be decoded (centre-cropped, uint8
        N x C x H x W), the others named in a warning: for checks and calibrations, which a
        damaged photo must not end."""
        crop, images, labels = self.crop(False), [], []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            try:
                images.append(decode(self.path(i), crop))
            except UnreadableImage as err:
                _warn_unreadable(self.path(i), str(err))
                continue
            labels.append(int(self.labels[i]))
        if not images:
            raise ProxylessError(f"none of the {len(np.asarray(indices).reshape(-1))} images "
                                 f"asked for in {clip(self.index.root)} could be read; check "
                                 "the folder")
        return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2),
                torch.tensor(labels, dtype=torch.int64))

    def channel_stats(self, seed: int = 0, count: int = STATS_IMAGES,
                      workers: int | None = None
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1], estimated on `count` images drawn with `seed`
        (decoding every image of a large folder for two numbers per channel is not worth an
        epoch: 500 images fix the mean to ~0.5% of the range)."""
        drawn = np.random.default_rng(seed).permutation(len(self))[:count]
        total, squares, pixels = 0.0, 0.0, 0
        for images, labels, _ in _centre_crops(self, drawn, 64, workers):
            if not len(labels):  # none of this batch could be read
                continue
            x = images.to(torch.float64).div_(255).flatten(0, 2)  # pixels x channels
            total, squares, pixels = total + x.sum(0), squares + (x * x).sum(0), pixels + len(x)
        if not pixels:
            raise ProxylessError(f"none of {len(drawn)} images drawn from "
                                 f"{clip(self.index.root)} could be read; check the folder")
        mean = total / pixels
        std = (squares / pixels - mean * mean).clamp_min(0).sqrt()
        std[std == 0] = 1.0  # constant images: avoid dividing by zero
        return tuple(mean.tolist()), tuple(std.tolist())


class _Decoder(Dataset):
    """Item (position, draw seed) of a FolderSet -> (uint8 H x W x C or None, label, failure):
    runs in the DataLoader's workers."""

    def __init__(self, data: FolderSet, train: bool, color_jitter: str = "none") -> None:
        self.data, self.crop = data, data.crop(train, color_jitter)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        position, seed = key
        path = self.data.path(position)
        try:
            pixels = decode(path, self.crop, random.Random(seed) if self.crop.train else None)
        except UnreadableImage as err:
            return None, -1, (path, str(err))
        return pixels, int(self.data.labels[position]), None


def _collate(items):
    """Stack the images that decoded (uint8 N x H x W x C), their labels, and the failures."""
    good = [(p, y) for p, y, _ in items if p is not None]
    failed = [f for _, _, f in items if f is not None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), failed
    images = torch.from_numpy(np.stack([p for p, _ in good]))
    return images, torch.tensor([y for _, y in good], dtype=torch.int64), failed


class _EpochSampler:
    """The DataLoader's batch sampler, iterated in the main process: the current epoch's
    batches of (position, draw seed), made a batch at a time (a list of 1.28 M tuples per
    epoch would take ~150 MB)."""

    def __init__(self, owner: StreamBatches) -> None:
        # weak: no reference cycle, so a loop's batches and their workers go when it ends
        self.owner = weakref.ref(owner)
        self.start = 0  # the next pass's first batch (`StreamBatches.iterate`)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        start, self.start = self.start, 0
        return self.owner()._plan(start)

    def __len__(self) -> int:
        return len(self.owner())


class StreamBatches(Batches):
    """`Batches` of a FolderSet: the same order, sharding, padding and length; images decoded,
    cropped (random-resized + flip where `augment`, else centre) in `workers` processes."""

    def __init__(self, data: FolderSet, batch_size: int, *, workers: int | None = None,
                 color_jitter: str = "none", **options) -> None:
        size = options.pop("image_size", None)  # a FolderSet's images come at its size
        if size is not None and size != data.size:
            raise ProxylessError(f"the image folder {clip(data.index.root)} was read at "
                                 f"{data.size} px but the network takes {size} px; load it "
                                 f"with image_size={size}")
        super().__init__(data, batch_size, **options)
        workers = default_workers() if workers is None else workers
        self.workers, self.sampler = workers, _EpochSampler(self)
        self.loader = DataLoader(
            _Decoder(data, self.augment, color_jitter), batch_sampler=self.sampler,
            collate_fn=_collate,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
            generator=_own_generator(), worker_init_fn=_ignore_stop_signals)
        self.skipped: dict[str, str] = {}  # this epoch's unreadable files: path -> reason
        _STREAMS.add(self)

    def close(self) -> None:
        """End the decoding processes (a later pass starts new ones)."""
        iterator, self.loader._iterator = self.loader._iterator, None
        if iterator is not None:
            _end_pass(iterator)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.skipped = {}

    def _plan(self, start: int = 0) -> Iterator[list[tuple[int, int]]]:
        """This epoch's batches for this rank from batch `start` on: positions in `Batches`'
        order, each with the seed of its crop and flip, drawn from (seed, epoch, rank) alone."""
        order_generator, aug_generator = self._generators()
        order = self._order(order_generator)[:len(self) * self.batch_size]
        draws = torch.randint(0, 2**62, (len(order),), generator=aug_generator)
        for first in range(start * self.batch_size, len(order), self.batch_size):
            end = first + self.batch_size
            yield list(zip(order[first:end].tolist(), draws[first:end].tolist(), strict=True))

    def _note_failures(self, failed: list[tuple[str, str]]) -> None:
        for path, reason in failed:
            if path not in self.skipped:  # a file read twice in an epoch counts once
                _warn_unreadable(path, reason)
                self.skipped[path] = reason
        limit = max(BAD_MIN, math.ceil(BAD_SHARE * self.samples))
        if len(self.skipped) > limit:
            examples = "; ".join(f"{p} ({r})" for p, r in list(self.skipped.items())[:3])
            raise ProxylessError(
                f"{len(self.skipped)} images of {clip(self.data.index.root)} could not be read "
                f"in this epoch, more than {limit} ({BAD_SHARE:.1%} of {self.samples:,}, at "
                f"least {BAD_MIN}): {examples}. Check the disk and the files; the last "
                "checkpoint is kept, and --resume continues from it")

    def iterate(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.start = start  # read when the loader starts its pass, just below
        for images, labels, failed in _guarded(self.loader, self.data.index.root):
            if failed:
                self._note_failures(failed)
            if not len(labels):
                if not self.pad:  # evaluation sums over what it saw: an empty batch is none
                    continue
                # training: every rank must take the same steps (DDP), so no step is skipped
                raise ProxylessError(f"no image of a batch of {clip(self.data.index.root)} "
                                     f"could be read: {failed[0][0]} ({failed[0][1]})")
            # N x H x W x C viewed as N x C x H x W: channels_last, no copy
            x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            yield (to_network_input(x, self._scale, self._shift, None),
                   labels.to(self.device, non_blocking=True))


def _guarded(loader: DataLoader, root: Path) -> Iterator:
    """`loader`'s batches, a failure of its worker processes (killed for memory, a full
    /dev/shm in a container) turned into one clear error."""
    batches = iter(loader)
    one_off = not loader.persistent_workers
    if one_off:
        _PASSES.add(batches)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as err:
                if "DataLoader worker" not in str(err) and "shared memory" not in str(err):
                    raise
                raise ProxylessError(
                    f"the processes decoding {clip(root)} failed ({str(err).splitlines()[0]})"
                    "; give them more memory or shared memory (/dev/shm, e.g. docker "
                    "--shm-size), or decode in the main process with --workers 0") from None
            yield batch
    finally:  # a pass left early (an error, a stop, a caller done with it) ends its workers
        if one_off:
            _end_pass(batches)


def make_batches(data: ImageSet | FolderSet, batch_size: int, *, workers: int | None = None,
                 color_jitter: str = "none", **options) -> Batches:
    """`StreamBatches` for a FolderSet (decoded by `workers` processes, training images
    colour-jittered as `color_jitter` says), `Batches` for images in memory (small images
    of their own: no colour jitter); `options` are Batches'."""
    if isinstance(data, FolderSet):
        return StreamBatches(data, batch_size, workers=workers, color_jitter=color_jitter,
                             **options)
    if color_jitter != "none":
        warnings.warn(f"colour jitter ({color_jitter}) is done while decoding streamed image "
                      "folders; these images are held in memory and are not jittered",
                      ProxylessWarning, stacklevel=2)
    return Batches(data, batch_size, **options)


def skipped_images(*batches: Batches) -> int | None:
    """Images left out as unreadable in this epoch by these batches; None for data in
    memory (nothing there can fail to decode)."""
    counts = [len(b.skipped) for b in batches if isinstance(b, StreamBatches)]
    return sum(counts) if counts else None


def skipped_note(record: dict) -> str:
    """An epoch line's tally of the images it left out as unreadable ("" where none were)."""
    count = record.get("skipped_images") or 0
    return f"  skipped {count} unreadable image{'s' if count != 1 else ''}" if count else ""


def read_images(data: ImageSet | FolderSet, batch_size: int = 500,
                workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 N x C x H x W, labels) of every image of `data` in order, `batch_size` at a
    time (centre-cropped and decoded by `workers` processes for a FolderSet): for evaluating
    a model file on a test set larger than memory. Unreadable files are left out with a
    warning."""
    if not isinstance(data, FolderSet):
        for start in range(0, len(data), batch_size):
            yield data.images[start:start + batch_size], data.labels[start:start + batch_size]
        return
    for images, labels, failed in _centre_crops(data, range(len(data)), batch_size, workers):
        for path, reason in failed:
            _warn_unreadable(path, reason)
        if len(labels):
            yield images.permute(0, 3, 1, 2), labels


def _centre_crops(data: FolderSet, positions: Sequence[int] | np.ndarray, batch_size: int,
                  workers: int | None) -> Iterator:
    """Batches (uint8 N x H x W x C, labels, failures) of the centre crops of `data`'s images
    at `positions`, in order, decoded by `workers` processes (None: the cores)."""
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_Decoder(data, False), batch_size=batch_size, collate_fn=_collate,
                        generator=_own_generator(), worker_init_fn=_ignore_stop_signals,
                        sampler=[(int(i), 0) for i in positions],
                        num_workers=min(workers, math.ceil(len(positions) / batch_size)))
    return _guarded(loader, data.index.root)
