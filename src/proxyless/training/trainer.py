"""Train a derived network from scratch and evaluate it (the last step of ProxylessNAS).

    >>> from proxyless.training.trainer import TrainConfig, train_network
    >>> final = train_network(arch, load_data("builtin"), TrainConfig(epochs=5), "runs/x")

SGD with Nesterov momentum, a per-step cosine schedule, label smoothing, weight decay on conv
and linear weights only (not on BatchNorm or biases). Each epoch appends a line to
`metrics.jsonl` and writes `checkpoint.pt` atomically (inside epochs too, every
`checkpoint_every` minutes, and on SIGTERM/SIGUSR1); `resume=True` continues exactly where the
last checkpoint left off (the run skeleton: `proxyless.engine.epochs`). `final.json` holds
the test top-1, parameters and MACs. A loss that becomes NaN/inf stops the run with an error
naming the epoch and batch; the checkpoint keeps the last good epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from proxyless.config_io import (
    from_dict,
    result_from_dict,
    setting,
    settings_problem,
    to_dict,
)
from proxyless.data import (
    Batches,
    DataSplits,
    check_channels,
    check_class_count,
    make_batches,
    shutdown_workers,
    skipped_images,
    skipped_note,
)
from proxyless.data.decode import COLOR_JITTERS
from proxyless.data.sets import training_transform
from proxyless.deploy.model_file import MODEL_FILE, ModelInfo, read_model_file, save_model
from proxyless.engine import distributed
from proxyless.engine.divergence import StepLosses
from proxyless.engine.epochs import (
    EpochCursor,
    Epochs,
    Tally,
    batch_bar,
    changed_settings,
    check_same_transform,
    evaluate,
    sync_every,
)
from proxyless.engine.memory import memory_advice
from proxyless.engine.optimizer import cosine_schedule, weight_optimizer
from proxyless.engine.precision import Precision
from proxyless.engine.run_lock import hold_run_folder
from proxyless.engine.runtime import RunContext, RuntimeConfig, first_line, start_run
from proxyless.engine.tensorboard_log import RunBoard
from proxyless.engine.training_speed import (
    choose_cpu_precision,
    chosen_precision,
    compile_pays_back,
    describe,
    earlier_speed,
    short_run,
    step_ms,
)
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, write_json_atomic
from proxyless.model.architecture import Architecture
from proxyless.model.layers import count_macs, count_params
from proxyless.model.network import ProxylessNet, build_network

CHECKPOINT = "checkpoint.pt"
COMPILE_MODES = ("auto", "on", "off")


@dataclass
class TrainConfig(RuntimeConfig):
    """The training's settings; the runtime's (seed, device, threads, ...) are
    `RuntimeConfig`'s."""

    epochs: int = setting(10, "training epochs", at_least=1)
    batch_size: int = setting(128, "images per step, per process", at_least=1)
    lr: float = setting(0.05, "learning rate (SGD Nesterov, cosine)", above=0)
    momentum: float = setting(0.9, "SGD momentum", option=None, at_least=0, below=1)
    weight_decay: float = setting(4e-5, "weight decay (not on BatchNorm and biases)",
                                  at_least=0)
    label_smoothing: float = setting(0.1, "label smoothing of the loss", at_least=0, below=1)
    dropout: float = setting(0.1, "dropout before the classifier", at_least=0, below=1)
    augment: bool = setting(True, "random crops and flips of the training images")
    color_jitter: str = setting("none", "colour jitter of streamed training images (the "
                                        "reference code's: normal; strong, the retraining's "
                                        "under --budget paper)", choices=tuple(COLOR_JITTERS))
    compile: str = setting("auto", "torch.compile the network for training: auto (where the "
                                   "steps left repay the compile time), on or off",
                           choices=COMPILE_MODES)
    init_from: str | None = setting(None, "a model file (or train folder) of the same "
                                          "architecture to start from: fine-tuning (default: "
                                          "from scratch, the authors' he_fout)")
    eval_batch_size: int = setting(500, "images per evaluation batch", option=None,
                                   at_least=1)

    @property
    def applied_color_jitter(self) -> str:
        """The colour jitter training images get: none where augmentation is off."""
        return self.color_jitter if self.augment else "none"

    def validate(self) -> None:
        problem = settings_problem(self)
        if problem is not None:
            raise ProxylessError(f"train config: {problem}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_dict(cls, data, "train config")


@dataclass
class TrainResult:
    """What a finished training left (`final.json`): the network's test top-1 and size, and
    what it was trained on. Read back with `read`."""

    test_top1: float
    test_loss: float = 0.0
    params: int = 0
    macs: int = 0
    epochs: int = 0
    train_time_s: float = 0.0
    arch: str = ""
    space: str = ""
    data: str = ""
    train_images: int = 0
    test_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def read(cls, path: str | Path, required: tuple[str, ...] = ("test_top1",)) -> TrainResult:
        """final.json (`config_io.result_from_dict`)."""
        return result_from_dict(cls, read_mapping(path, "training results"), path, required)


# Settings that may change between a run and its resumption without changing its results
# (init_from: a resumed run starts from its checkpoint, wherever it first started from).
_RESUMABLE_CHANGES = {*RuntimeConfig.RESUMABLE, "eval_batch_size", "compile", "init_from"}


def _check_resume(state: dict, arch: Architecture, config: TrainConfig, out: Path,
                  transform: dict) -> None:
    check_same_transform(state, transform, out)
    if state.get("arch") != arch.to_dict():
        raise ProxylessError(f"{out / CHECKPOINT} was written for another architecture; "
                             "use a new --out or the same architecture file")
    saved = state.get("config", {})
    changed = changed_settings(state, config, _RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise ProxylessError(f"cannot resume {out} with different settings ({diffs}); "
                             "use the original settings or a new --out")


def train_network(arch: Architecture, data: DataSplits, config: TrainConfig,
                  out_dir: str | Path, resume: bool = False, progress: bool = True,
                  log=print) -> TrainResult:
    """Train `arch` from scratch on data.train, report top-1 on data.test; returns what
    final.json holds."""
    config.validate()
    with hold_run_folder(out_dir, distributed.is_main()):  # one writer at a time
        try:
            return _train_network(arch, data, config, Path(out_dir), resume, progress, log)
        finally:  # however it ends: no decoding process outlives the training
            shutdown_workers()


def _train_network(arch: Architecture, data: DataSplits, config: TrainConfig, out: Path,
                   resume: bool, progress: bool, log) -> TrainResult:
    run = start_run(out, config.device, config.threads, resume, "run", CHECKPOINT)
    space = arch.space
    check_channels(data.train, space.in_channels, f"data {data.name!r}",
                   f"space {space.name!r}")
    check_class_count(data.train, space.num_classes, f"data {data.name!r}",
                      f"space {space.name!r}")
    torch.manual_seed(config.seed)
    # channels_last: oneDNN's depthwise convolutions run ~20% faster in NHWC on the CPU.
    bare = build_network(arch, dropout=config.dropout)
    if config.init_from is not None and not resume:
        start_from(bare, config.init_from)
    bare = bare.to(run.device, memory_format=torch.channels_last)
    train_batches, test_batches = _batches(data, config, run, space.input_size)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    # every rank trains as rank 0 decided: timings differ from one process to the next
    precision, compiled, speed = distributed.broadcast_object(training_speed(
        bare, train_batches, criterion, config, run, log if run.dist.is_main else None,
        earlier_speed(out) if resume else None))
    optimizer = weight_optimizer(bare.parameters(), config.lr, config.momentum,
                                 config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(config.epochs * len(train_batches)))
    scaler = precision.scaler()
    source = {"name": data.name, "source": data.source, "transform": data.transform}
    board = RunBoard(out, len(train_batches), config.log_every, sync_every(run.device),
                     enabled=config.tensorboard and run.dist.is_main, log=log,
                     metrics=("epoch/test_top1", "epoch/test_loss"))
    epochs = Epochs(run, out, "proxyless-train/1", config.epochs, config.seed,
                    state={"model": bare, "optimizer": optimizer, "scheduler": scheduler,
                           "grad_scaler": scaler},
                    saved={"arch": arch.to_dict(), "config": to_dict(config), "data": source},
                    optional=("grad_scaler",), board=board,
                    checkpoint_every=config.checkpoint_every, batch_size=config.batch_size,
                    memory_advice=lambda: memory_advice(space, config.batch_size, run.device,
                                                        precision.name, supernet=False))
    epochs.start(resume, {"arch": arch.to_dict(), "train": to_dict(config), "data": source,
                          "speed": speed},
                 lambda checkpoint: _check_resume(checkpoint, arch, config, out,
                                                  data.transform), log)
    model = nn.parallel.DistributedDataParallel(bare) if run.dist.enabled else bare
    # the training steps only: evaluation switches to eval mode, which would compile again
    stepped = torch.compile(model) if compiled else model
    show = progress and run.dist.is_main

    def one_epoch(epoch: int, cursor: EpochCursor) -> dict:
        train_batches.set_epoch(epoch)
        bar = batch_bar(train_batches, f"epoch {epoch + 1}", show, cursor.start)
        train_loss, train_top1 = train_epoch(stepped, bar, optimizer, scheduler, criterion,
                                             run.device, precision, scaler, board,
                                             epoch * len(train_batches), cursor)
        test_loss, test_top1 = evaluate(model, test_batches, run.device, precision)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": train_loss, "train_top1": train_top1,
                  "test_loss": test_loss, "test_top1": test_top1}
        skipped = skipped_images(train_batches, test_batches)
        if skipped is not None:
            record["skipped_images"] = skipped
        return record

    metrics = epochs.run(one_epoch, lambda r: _epoch_line(r, config.epochs), "train", progress)
    final = TrainResult(metrics[-1]["test_top1"], metrics[-1]["test_loss"], count_params(arch),
                        count_macs(arch), config.epochs, epochs.elapsed, arch.encode(),
                        space.name, data.name, len(data.train), len(data.test))
    if run.dist.is_main:
        # model.pt first, atomically: final.json marks a finished run (`proxyless run` skips
        # the retraining when it is there), so it must never exist without the model
        info = ModelInfo(arch, data.mean, data.std, data.train.classes,
                         {**source, "transform": training_transform(
                             data.transform, config.applied_color_jitter)},
                         {k: getattr(final, k) for k in ("test_top1", "test_loss", "params",
                                                         "macs", "epochs", "test_images")})
        save_model(out / MODEL_FILE, bare, info)
        write_json_atomic(out / "final.json", final.to_dict())
    return final


def training_speed(net: ProxylessNet, batches: Batches, criterion: nn.Module,
                   config: TrainConfig, run: RunContext, log,
                   earlier: dict | None = None) -> tuple[Precision, bool, dict]:
    """The precision and whether to compile, as `config` says; `auto` decided by timed steps
    of this network on a training batch (`engine.training_speed`) where the run is long
    enough to repay them, or as the run resumed decided (`earlier`). Also what was decided
    and measured, for config.json, said once through `log`."""
    steps = config.epochs * len(batches)
    work = steps * config.batch_size * count_macs(net.arch)
    drawn: list = []

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        if not drawn:  # one training batch, drawn only when something is timed
            x, y = next(iter(batches))
            drawn.append((x.contiguous(memory_format=torch.channels_last), y))
        return drawn[0]

    precision, speed = chosen_precision(
        config.precision, run.device, work,
        lambda: choose_cpu_precision(net, *batch(), criterion), earlier)
    if earlier and earlier.get("compile_setting") == config.compile and "compile" in earlier:
        compiled = bool(earlier["compile"])
    elif config.compile == "auto":
        compiled = not short_run(work) and compile_pays_back(
            (speed.get(f"{precision.name}_step_ms")
             or step_ms(copy.deepcopy(net).train(), *batch(), criterion, precision, 1)) / 1000,
            steps, precision)
    else:
        compiled = config.compile == "on"
    speed = {**speed, "compile": compiled, "compile_setting": config.compile}
    if log is not None:
        log(f"training in {describe(speed)}")
    return precision, compiled, speed


def start_from(net: ProxylessNet, path: str | Path) -> None:
    """`net` takes the weights of the model file at `path`, which must hold its architecture."""
    info, weights, file = read_model_file(path)
    if info.arch.encode() != net.arch.encode():
        raise ProxylessError(f"--init-from {file}: its architecture {info.arch.encode()} is "
                             f"not this one ({net.arch.encode()}); give a model file of the "
                             "same architecture, or train from scratch")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ProxylessError(f"--init-from {file}: its weights do not fit the network "
                             f"({first_line(err)}); give a model file of this architecture"
                             ) from None


def _batches(data: DataSplits, config: TrainConfig, run: RunContext,
             image_size: int) -> tuple[Batches, Batches]:
    """This rank's training batches (shuffled, augmented) and test batches."""
    common = dict(mean=data.mean, std=data.std, rank=run.dist.rank,
                  world_size=run.dist.world_size, image_size=image_size, device=run.device)
    train = make_batches(data.train, config.batch_size, shuffle=True, augment=config.augment,
                         color_jitter=config.applied_color_jitter,
                         seed=config.seed, drop_last=True, workers=config.workers, **common)
    test = make_batches(data.test, config.eval_batch_size, shuffle=False, augment=False,
                        pad=False, workers=config.workers, **common)
    if len(train) == 0:
        raise ProxylessError(f"batch size {config.batch_size} exceeds the {len(data.train)} "
                             "training images; lower --batch-size")
    return train, test


def train_epoch(model: nn.Module, bar: tqdm, optimizer: torch.optim.Optimizer, scheduler,
                criterion: nn.Module, device: torch.device, precision: Precision | None = None,
                scaler: torch.amp.GradScaler | None = None, board: RunBoard | None = None,
                steps_before: int = 0,
                cursor: EpochCursor | None = None) -> tuple[float, float]:
    """One pass of SGD over the batches of `bar` (see `batch_bar`): (mean loss, top-1 in %)
    summed over DDP ranks. The forward runs under `precision`'s autocast, the backward through
    `scaler` (fp16); losses are read on the host only every `sync_every` steps. Each step's
    loss, top-1 and rate go to `board` as step `steps_before` + its batch number. `cursor`:
    where the epoch stands (a run resumed inside it starts at `cursor.start`), told of every
    step done (mid-epoch checkpoints, stop signals)."""
    precision = precision or Precision("fp32", device.type)
    scaler = scaler or precision.scaler()
    model.train()
    tally = Tally()
    losses = StepLosses("the training loss", len(bar), sync_every(device))
    cursor = cursor or EpochCursor(None, 0)
    if cursor.restored is not None:
        tally.load_state_dict(cursor.restored["tally"], device)

    def loop_state() -> dict:
        losses.flush()  # nothing diverged goes into a checkpoint
        return {"tally": tally.state_dict()}

    for i, (x, y) in enumerate(bar, start=cursor.start):
        with precision.autocast():
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        top1 = tally.add(loss.detach() * y.numel(), logits, y)
        if board is not None:
            board.add(steps_before + i + 1, {"train/loss": loss.detach(), "train/top1": top1,
                                             "train/lr": lr})
        value = losses.add(i, loss)
        if value is not None:
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        cursor.step_done(i, len(bar), loop_state)
    losses.flush()
    return tally.totals(device)


def _epoch_line(record: dict, total: int) -> str:
    return (f"epoch {record['epoch']}/{total}  loss {record['train_loss']:.3f}  "
            f"train {record['train_top1']:.2f}%  test {record['test_top1']:.2f}%"
            f"{skipped_note(record)}  ({record['epoch_time_s']:.1f}s)")
