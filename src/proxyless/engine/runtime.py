"""Device, threads, seeding and atomic checkpoints: the plumbing every loop shares."""

from __future__ import annotations

import os
import pickle
import random
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from proxyless.config_io import MAX_SEED, clip, setting
from proxyless.engine import distributed
from proxyless.engine.precision import PRECISIONS
from proxyless.errors import ProxylessError
from proxyless.files import replace_atomically


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a cluster job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_limit() -> int:
    """The most threads or decoding processes an option may ask for: 4 per core available
    (at least 8). More only slows a run down (or forks thousands of processes)."""
    return max(8, 4 * available_cores())


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`, with a clear error where CUDA is not available."""
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ProxylessError(f"--device {name}: CUDA is not available on this machine; "
                                 "use --device cpu")
        return torch.device(name)
    raise ProxylessError(f"--device {name!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ProxylessError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every global RNG from (seed, epoch), so resuming at an epoch boundary is exact."""
    value = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain data (what `weights_only` loads): a run
    checkpointed inside an epoch draws on where it stopped (dropout, anything seeded)."""
    version, keys, gauss = random.getstate()
    kind, mt, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(keys), gauss],
             "numpy": [kind, torch.from_numpy(mt.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved (the GPUs' states only where there are as many)."""
    torch.set_rng_state(state["torch"])
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, mt, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, mt.numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    replace_atomically(path, lambda f: torch.save(state, f))


def first_line(err: Exception) -> str:
    """An exception's first line (at most 200 characters), or its type where it says nothing."""
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


_START_OVER = "remove it to start over, or point --out at another folder"


def load_checkpoint(path: Path, what: str = "checkpoint",
                    advice: str = _START_OVER) -> dict[str, Any]:
    """A checkpoint's (or model file's: `what`) tensors and plain data. Read with
    `weights_only=True`: a file holding anything else (code a crafted pickle would run) is
    refused before it can run. `advice` ends every error: what the user can do."""
    if not path.is_file():
        raise ProxylessError(f"no {what} at {path}; start without --resume" if what ==
                             "checkpoint" else f"no {what} at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the class it refused ("GLOBAL ..."); other complaints mean a damaged file
        if "global" in str(err).lower():
            raise ProxylessError(f"{what} {path} holds objects other than tensors and plain "
                                 "data (a file made elsewhere, or a hostile one); it was not "
                                 f"loaded: {advice}") from None
        raise ProxylessError(f"{what} {path} cannot be read (not a torch file, or a "
                             f"damaged one): {advice}") from None
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise ProxylessError(f"{what} {path} cannot be read ({first_line(err)}): "
                             f"{advice}") from None
    if not isinstance(state, dict):
        raise ProxylessError(f"{what} {path} is not a proxyless {what}: {advice}")
    return state


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists (`exists` is False below a file)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _holds_non_folder(path: Path) -> bool:
    """Whether something other than a folder is at `path`, by one stat: under torchrun, rank
    0's probe (`_probe_writable`) makes and removes the folder, and between two checks
    (`exists`, then `is_dir`) it would look like a file to another rank."""
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:  # nothing there (or below a file: `_check_creatable` says so)
        return False


def _check_creatable(path: Path, option: str, given: Path) -> None:
    """Refuse a folder that cannot exist: under a file, or where nothing may be written."""
    base = _nearest_existing(path)
    for _ in range(3):  # under torchrun, rank 0's probe (below) may remove it meanwhile
        if base.exists():
            break
        base = _nearest_existing(path)
    if _holds_non_folder(base):
        raise ProxylessError(f"{option} {clip(given)}: {clip(base)} is a file, so nothing can "
                             f"be created under it; choose another {option}")
    if not os.access(base, os.W_OK | os.X_OK) and base.exists():  # root passes: mkdir says
        raise ProxylessError(f"{option} {clip(given)}: no permission to write in "
                             f"{clip(base)}; choose another {option}")
    if distributed.is_main():  # the rank that writes; two probing at once would collide
        _probe_writable(path, base, option, given)


def _probe_writable(folder: Path, base: Path, option: str, given: Path) -> None:
    """Ask the OS itself: make `folder` (the missing folders between `base`, its nearest
    existing ancestor, and it) and a file in it, then remove what was made. Permission bits
    do not tell a read-only or virtual file system (/proc, /sys) from a writable one."""
    made: list[Path] = []
    try:
        step = base
        for part in folder.relative_to(base).parts:
            step = step / part
            try:
                step.mkdir()
                made.append(step)
            except FileExistsError:  # made meanwhile (another rank): not ours to remove
                if not step.is_dir():
                    raise
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ProxylessError(f"{option} {clip(given)}: nothing can be written in "
                             f"{clip(folder)} ({err.strerror or first_line(err)}); choose "
                             f"another {option}") from None
    finally:
        for step in reversed(made):  # deepest first; the command makes them again
            try:
                step.rmdir()
            except OSError:
                pass


def prepare_out_dir(path: str | Path, option: str = "--out", create: bool = True) -> Path:
    """The output folder `path`, checked before any work (and created unless `create` is
    False): a file in its place or above it, or a folder that cannot be made, is one clear
    error now rather than an OSError traceback after minutes of computing."""
    path = Path(path)
    if _holds_non_folder(path):
        raise ProxylessError(f"{option} {clip(path)} is a file, not a folder; remove it or "
                             f"choose another {option}")
    _check_creatable(path, option, path)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProxylessError(f"{option} {clip(path)}: cannot create the folder "
                                 f"({err.strerror or first_line(err)}); choose another "
                                 f"{option}") from None
    return path


def check_out_file(path: str | Path, option: str) -> Path:
    """Refuse an output file path that could not be written (a folder in its place, a file
    above it, no permission), before the work whose result it would hold."""
    path = Path(path)
    if path.is_dir():
        raise ProxylessError(f"{option} {clip(path)} is a folder; give a file path inside it "
                             "or another name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ProxylessError(f"{option} {clip(path)}: the file is not writable; choose "
                             f"another {option}")
    _check_creatable(path.parent, option, path)
    return path


def remove_if_empty(path: str | Path) -> bool:
    """Remove `path` when it is a folder tree without a single file (what a run that failed
    before writing anything leaves); a tree holding any file or link is left untouched."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    folders = []
    for root, subdirs, files in os.walk(path):  # top-down: parents before their children
        if files or any((Path(root) / d).is_symlink() for d in subdirs):
            return False
        folders.append(root)
    try:
        for folder in reversed(folders):  # children first
            os.rmdir(folder)
    except OSError:  # something appeared meanwhile, or no permission: keep what is left
        return False
    return True


def check_run_dir(out: Path, checkpoint: str, resume: bool, what: str) -> Path:
    """The checkpoint path of a run folder; refuse to overwrite a run, or to resume none."""
    path = out / checkpoint
    if path.exists() and not resume:
        raise ProxylessError(f"{out} already holds a {what} ({checkpoint}); pass --resume to "
                             "continue it or choose another --out")
    if resume and not path.exists():
        raise ProxylessError(f"--resume: {path} does not exist; nothing to resume (a run stopped "
                             "before its first epoch ended has none: run the same command "
                             "without --resume)")
    return path


@dataclass
class RuntimeConfig:
    """What a job runs with: the settings every job's config (`SearchConfig`, `TrainConfig`)
    shares, declared once here. All but the seed may change when a run resumes (`RESUMABLE`):
    they decide where and how fast it runs, not what it computes."""

    seed: int = setting(0, "seeds the weights, the data's order and augmentation, the paths",
                        at_least=0, at_most=MAX_SEED)
    device: str = setting("cpu", "cpu, cuda or cuda:N")
    threads: int | None = setting(None, "CPU threads for torch (None: torch's default)",
                                  at_least=1)
    workers: int | None = setting(None, "processes decoding a streamed image folder (None: "
                                        "the cores available, less one; 0: in this process)",
                                  at_least=0)
    precision: str = setting("auto", "the network's forward and backward: auto (bf16 on GPUs "
                                     "that have it, else fp16 with a gradient scaler; on a "
                                     "CPU, training takes bf16 where the CPU has it and timed "
                                     "steps are faster, the search fp32), fp32, bf16 or fp16. "
                                     "α, the gate gradients and the latency loss stay fp32",
                             choices=PRECISIONS)
    tensorboard: bool = setting(True, "TensorBoard event files in the run folder "
                                      "(`tensorboard --logdir runs/`)")
    log_every: int = setting(10, "TensorBoard: average the step curves over this many weight "
                                 "steps", at_least=1)
    checkpoint_every: float = setting(30.0, "also write a checkpoint inside an epoch once this "
                                            "many minutes have passed since the last (30: long "
                                            "epochs only; 0: at epoch ends only); --resume "
                                            "continues at the next batch", at_least=0)

    # (the precision is one: it resolves by device, and a resumed run may run on another)
    RESUMABLE: ClassVar[tuple[str, ...]] = ("device", "threads", "workers", "precision",
                                            "tensorboard", "log_every", "checkpoint_every")


@dataclass(frozen=True)
class RunContext:
    dist: distributed.DistInfo
    device: torch.device
    checkpoint: Path


def start_run(out: Path, device: str, threads: int | None, resume: bool,
              what: str, checkpoint: str = "checkpoint.pt") -> RunContext:
    """What every training loop does first: join DDP when launched by torchrun, take this
    rank's device, set the threads, check the run folder (see `check_run_dir`), create it."""
    info = distributed.setup(device)
    if device.startswith("cuda") and info.enabled:
        device = f"cuda:{info.local_rank}"
    resolved = resolve_device(device)
    set_threads(threads)
    if resolved.type == "cuda":
        # the shapes are fixed per layer (the supernet's too: one per candidate), so the
        # fastest convolution algorithm is searched once per shape and kept; fp32 layers
        # may use TF32 tensor cores (fp32 sums of 10-bit-mantissa products), the usual trade
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    path = check_run_dir(out, checkpoint, resume, what)
    if info.is_main:
        prepare_out_dir(out)
    return RunContext(info, resolved, path)
