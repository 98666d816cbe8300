"""What the commands share: option types that refuse bad numbers in one line, the option
groups of several commands (data, runtime), and the run-folder guard."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from proxyless.config_io import MAX_SEED, clip
from proxyless.data import DataSplits, load_data
from proxyless.data.decode import DEFAULT_SCALE
from proxyless.data.loading import DATA_MODES, STREAM_MIN_SIZE
from proxyless.engine import distributed
from proxyless.engine.memory import auto_batch_size
from proxyless.engine.run_lock import hold_run_folder
from proxyless.engine.runtime import (
    available_cores,
    prepare_out_dir,
    process_limit,
    remove_if_empty,
)
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping
from proxyless.latency.timer import MAX_MIN_TIME
from proxyless.model.architecture import Architecture
from proxyless.model.space import SearchSpace


def _shown(text: str) -> str:
    """The value as typed, quoted, at most ~80 characters: a pasted blob stays one line."""
    return repr(clip(text))


def bounded_number(text: str, kind: type, low: float | None, high: float | None,
                   strict_low: bool, what: str) -> float | int:
    """Parse one option value as `kind` within [low, high] ((low, high] when strict_low);
    argparse reports the ArgumentTypeError as `argument --x: <message>`, exit code 2."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
    # inf and nan pass float(): a nan compares false with every bound, so it lands here too
    ok = math.isfinite(value) and (low is None or (value > low if strict_low else value >= low))
    if not ok or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {_shown(text)}")
    return value


def finite_float(text: str) -> float:
    return bounded_number(text, float, None, None, False, "a finite number")


def positive_float(text: str) -> float:
    return bounded_number(text, float, 0, None, True, "a finite number > 0")


def nonneg_float(text: str) -> float:
    return bounded_number(text, float, 0, None, False, "a finite number >= 0")


def min_time(text: str) -> float:
    """Seconds of round-robin timing: one limit for every command that times."""
    return bounded_number(text, float, 0, MAX_MIN_TIME, False,
                          f"a number of seconds from 0 to {MAX_MIN_TIME:g}")


def positive_min_time(text: str) -> float:
    return bounded_number(text, float, 0, MAX_MIN_TIME, True,
                          f"a number of seconds above 0, at most {MAX_MIN_TIME:g}")


def positive_int(text: str) -> int:
    return bounded_number(text, int, 1, None, False, "a whole number >= 1")


def nonneg_int(text: str) -> int:
    return bounded_number(text, int, 0, None, False, "a whole number >= 0")


def val_size_arg(text: str) -> float | int:
    """--val-size: a fraction below 1, or a count of images (a whole number: 50000, not
    50000.0, in config files)."""
    value = nonneg_float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _within_limit(value: int, what: str) -> int:
    limit = process_limit()
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"{value} {what} on {available_cores()} cores would only slow the run down; "
            f"at most {limit} (4 per core)")
    return value


def workers_int(text: str) -> int:
    """--workers: decoding processes, 0 (in this process) up to `process_limit()`."""
    return _within_limit(nonneg_int(text), "decoding processes")


def threads_int(text: str) -> int:
    """--threads and the like: 1 up to `process_limit()`."""
    return _within_limit(positive_int(text), "threads")


def seed_int(text: str) -> int:
    return bounded_number(text, int, 0, MAX_SEED, False, f"a whole number from 0 to {MAX_SEED}")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser = parser.add_argument_group("data", "what is trained and validated on")
    parser.add_argument("--data", default=None,
                        help="dataset name (auto, builtin, fashion-mnist, cifar10, imagefolder) "
                             "or a path; default: full Fashion-MNIST if installed, else the "
                             "built-in subset")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--val-size", type=val_size_arg, default=None,
                        help="images held out of the training split for validation "
                             "(count, or a fraction below 1; the paper: 50000 of ImageNet)")
    parser.add_argument("--data-mode", choices=DATA_MODES, default="auto",
                        help="image folders: stream them from disk (decoded per batch by "
                             "--workers processes) or decode them once into memory; auto: "
                             f"stream for inputs of {STREAM_MIN_SIZE} px and more or where "
                             "memory would not hold them (IDX and CIFAR files: memory)")
    parser.add_argument("--workers", type=workers_int, default=None,
                        help="processes decoding a streamed image folder (default: the cores "
                             "available, less one; 0: in this process)")
    parser.add_argument("--crop-scale", type=nonneg_float, nargs=2, default=DEFAULT_SCALE,
                        metavar=("MIN", "MAX"),
                        help="area share of a streamed folder's random-resized training crops "
                             "(default 0.08 1, the paper's; small data sets may want 0.35 1)")


def add_model_data_args(parser: argparse.ArgumentParser) -> None:
    """--data/--data-dir of the commands that test a finished model (export, evaluate)."""
    parser.add_argument("--data", default=None,
                        help="dataset name (builtin, fashion-mnist, cifar10, imagefolder) or "
                             "a path; default: the data the model was trained on")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")


AUTO = "auto"
BATCH_SIZE_HELP = ("per process (default {default}); auto: the largest that fits in memory "
                   "(probed on a GPU, estimated on the CPU) and the data")


def batch_size_arg(text: str) -> int | str:
    """--batch-size: a positive number, or `auto` (`resolve_batch_size`)."""
    return AUTO if text == AUTO else positive_int(text)


def resolve_batch_size(args: argparse.Namespace, space: SearchSpace, data: DataSplits,
                       section: str, arch: Architecture | None = None,
                       arch_every: int = 1, folder: str = "",
                       train_limit: int | None = None) -> int:
    """--batch-size as a number. `auto`: on --resume, the run's own (`section` of the
    config.json in `folder` of the run folder); else `engine.memory.auto_batch_size`'s, said
    on stderr."""
    if args.batch_size != AUTO:
        return args.batch_size
    saved = Path(args.out) / folder / "config.json"
    if args.resume and saved.is_file():
        value = read_mapping(saved, "run settings").get(section, {}).get("batch_size")
        if isinstance(value, int) and value >= 1:
            return value
    batch, how = auto_batch_size(space, data, args.device, args.precision, arch, arch_every,
                                 train_limit)
    if distributed.is_main():
        print(f"--batch-size auto: {batch} per process ({how}; the learning rate is not "
              "scaled)", file=sys.stderr)
    return batch


def data_from_args(args: argparse.Namespace, space: SearchSpace,
                   val_size: float | int) -> DataSplits:
    """The dataset of --data/--data-dir, fitted to the space (channels, input size), with
    `val_size` images held out for validation."""
    return load_data(args.data, args.data_dir, val_size=val_size, seed=args.seed,
                     image_size=space.input_size, channels=space.in_channels,
                     data_mode=args.data_mode, crop_scale=tuple(args.crop_scale),
                     workers=args.workers)


def fit_classes(space: SearchSpace, data: DataSplits,
                log: Callable[[str], None] = print) -> SearchSpace:
    """`space` with its classifier sized to the data's classes: the imagenet preset has 1000,
    a user's folder of photos its own count."""
    count = len(data.train.classes)
    if count == space.num_classes:
        return space
    if is_main_rank():
        log(f"space {space.name!r} has {space.num_classes} classes, the data {count}: its "
            f"classifier is sized to {count}")
    return dataclasses.replace(space, num_classes=count)


@contextlib.contextmanager
def run_folder(out: str | Path) -> Iterator[None]:
    """Check --out before any work (a file there or above it, a folder that cannot be made);
    and when this command made the folder and fails with a ProxylessError before writing a
    file into it, remove it again: a failed command leaves no empty folder behind. Holds the
    folder's lock (`run_lock`) meanwhile: one process writes a run folder."""
    path = prepare_out_dir(out, "--out", create=False)
    existed = path.exists()
    try:
        with hold_run_folder(path, is_main_rank()):  # a second process is refused here
            yield
    except ProxylessError:
        if not existed:
            settings = path / "config.yaml"  # written first: not a result of the command
            # the lock went with its holder above
            if path.is_dir() and [p.name for p in path.iterdir()] == [settings.name]:
                settings.unlink()
            remove_if_empty(path)
        raise


def progress_bars(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: on a terminal, unless --no-progress. Redirected to a
    file (a cluster job's log, `make run > log`), each bar's redraws would become thousands
    of lines; the one line per epoch is printed either way."""
    return not args.no_progress and sys.stderr.isatty()


def require_out(args: argparse.Namespace) -> None:
    """--out, which every command that writes a run folder needs (unless it only prints its
    configuration)."""
    if args.out is None:
        raise ProxylessError(f"give --out DIR: the run folder `proxyless {args.command}` "
                             "writes into (or --print-config to see its options)")


def is_main_rank() -> bool:
    """Whether this process prints the results (rank 0 under torchrun, else always)."""
    return distributed.is_main()
