"""The search loop: warm-up, then alternating weight and architecture steps (ProxylessNAS §3).

    >>> result = search(space, data, cost_model, SearchConfig(target=2.0), "runs/search")

Schedule (the reference code's, scaled to the data): a validation split held out of the
training set; `warmup_epochs` of weight steps on random single paths (see `warmup_paths`: the
first `warmup_parent` of them train the largest path only); then per training batch
one weight step (`sample` mode, α frozen) and every `arch_every` batches one architecture
step on a validation batch (weights frozen), with no α step in the first search epoch. Weights:
SGD Nesterov with label smoothing and a cosine schedule per phase; α: the strategy's
optimizer (Adam, betas (0, 0.999) for the gradient strategy).

Each epoch appends to `metrics.jsonl` and writes `checkpoint.pt` atomically (inside epochs
too, every `checkpoint_every` minutes and on SIGTERM/SIGUSR1); every random draw is seeded
from (seed, epoch) or checkpointed, so `resume=True` after any interruption ends with the same
architecture as an uninterrupted run (the run skeleton: `proxyless.engine.epochs`). `search` sets
up; `SearchEpoch` is one epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from proxyless.config_io import to_dict
from proxyless.data import (
    Batches,
    DataSplits,
    shutdown_workers,
    skipped_images,
    skipped_note,
)
from proxyless.engine import distributed
from proxyless.engine import epochs as skeleton
from proxyless.engine.divergence import LOWER_ARCH_LR, Diverged, StepLosses, at_batch
from proxyless.engine.memory import memory_advice
from proxyless.engine.optimizer import cosine_schedule, weight_optimizer
from proxyless.engine.precision import Precision
from proxyless.engine.run_lock import hold_run_folder
from proxyless.engine.runtime import start_run
from proxyless.engine.tensorboard_log import RunBoard
from proxyless.engine.tensorboard_log import disabled as disabled_board
from proxyless.engine.training_speed import (
    PrecisionChoice,
    choose_cpu_precision,
    chosen_precision,
    describe,
    earlier_speed,
)
from proxyless.errors import ProxylessError
from proxyless.latency.cost import CostModel
from proxyless.model.architecture import Architecture
from proxyless.model.batchnorm import recalibrate_batchnorm
from proxyless.model.layers import count_macs
from proxyless.model.supernet import SuperNet
from proxyless.pipeline.plots import probs_figure
from proxyless.search.checks import check_inputs, check_resume
from proxyless.search.config import SearchConfig
from proxyless.search.gradient import GradientStrategy
from proxyless.search.paths import fair_paths, sandwich_paths, warmup_paths
from proxyless.search.reinforce import Objective, ReinforceStrategy
from proxyless.search.step_batches import SearchBatches

CHECKPOINT = "checkpoint.pt"


@dataclass
class SearchResult:
    arch: Architecture
    metrics: list[dict]
    probs_history: list[list[list[float]]]  # [epoch][block][candidate]
    supernet: SuperNet


def require_finite_alpha(net: SuperNet) -> None:
    """After an architecture step, whose strategy checked its loss before stepping: α itself
    diverged, so the step size is to blame."""
    for b, alpha in enumerate(net.host_alphas()):  # one copy from the device for all
        if not torch.isfinite(alpha).all():
            bad = alpha[~torch.isfinite(alpha)][0].item()
            raise Diverged(f"α of block {b}", bad, LOWER_ARCH_LR)


def make_strategy(supernet: SuperNet, cost_model: CostModel | None, config: SearchConfig,
                  latency_fn: Objective | None = None, objectives: Sequence[Objective] = (),
                  precision: Precision | None = None):
    if config.strategy == "reinforce":
        return ReinforceStrategy(supernet, cost_model, config, latency_fn, objectives,
                                 precision)
    if latency_fn is not None or objectives:
        raise ProxylessError("latency_fn and objectives need strategy='reinforce': the "
                             "gradient strategy only takes a differentiable cost model")
    return GradientStrategy(supernet, cost_model, config, precision)


def derive_within_target(net: SuperNet, cost_model: CostModel | None,
                         config: SearchConfig) -> Architecture:
    """The architecture the search hands over: the argmax path of every block; or, where a
    binding target (`constraint="dual"`) finds that outside [target_floor·T, T] by the cost
    model, the most likely architecture under p inside it (`CostModel.most_likely_within`).
    The multipliers bring p there; this makes the last step from p to one network keep it."""
    arch = net.derive()
    if cost_model is None or config.target is None or config.constraint != "dual":
        return arch
    low = config.target_floor * config.target if config.target_floor > 0 else -math.inf
    high = config.target
    if low <= cost_model.predict(arch) <= high:
        return arch
    log_probs = [torch.log_softmax(alpha, 0).tolist() for alpha in net.host_alphas()]
    indices = cost_model.most_likely_within(log_probs, low, high)
    return arch if indices is None else Architecture.from_indices(net.space, indices)


@torch.no_grad()
def evaluate_argmax(net: SuperNet, batches: Batches, calibration: Batches | None = None,
                    calibration_batches: int = 20, precision: Precision | None = None,
                    arch: Architecture | None = None) -> float:
    """Top-1 (%) of `arch` (default: the current argmax architecture), on the supernet's
    weights.

    The network is taken out of the supernet (which stays untouched) and, given
    `calibration` batches, its BatchNorm statistics are re-estimated on them first.
    """
    device = next(net.parameters()).device
    precision = precision or Precision("fp32", device.type)
    model = net.derived_network(arch).to(device, memory_format=torch.channels_last)
    if calibration is not None:
        with precision.autocast():
            recalibrate_batchnorm(model, calibration, calibration_batches)
    return skeleton.evaluate(model, batches, device, precision)[1]


def search(space, data: DataSplits, cost_model: CostModel | None, config: SearchConfig,
           out_dir: str | Path, resume: bool = False, progress: bool = True,
           log: Callable[[str], None] = print, latency_fn: Objective | None = None,
           objectives: Sequence[Objective] = (),
           also_log: Sequence[CostModel] = ()) -> SearchResult:
    """ProxylessNAS on `data` under `config`; checkpoints, metrics and plots go to out_dir.

    REINFORCE also takes `latency_fn(arch) -> ms` instead of the cost model's prediction
    (anything measured or computed, no gradient needed) and extra `objectives(arch) -> float`
    that multiply the reward. `also_log`: cost models whose expected and argmax costs go into
    metrics.jsonl beside the constrained one (e.g. latency under a FLOPs target).
    """
    config.validate()
    check_inputs(space, data, cost_model, config, latency_fn)
    with hold_run_folder(out_dir, distributed.is_main()):  # one writer at a time
        try:
            return _search(space, data, cost_model, config, Path(out_dir), resume, progress,
                           log, latency_fn, objectives, also_log)
        finally:  # however it ends: no decoding process outlives the search
            shutdown_workers()


def search_precision(net: SuperNet, batches: SearchBatches, config: SearchConfig, run,
                      earlier: dict | None) -> tuple[Precision, dict]:
    """The search's precision: `auto` on a CPU timed on weight steps of one path drawn from
    the supernet (`engine.training_speed`), as rank 0 decided; and its record."""
    images = (config.warmup_epochs + config.epochs) * len(batches.train) * config.batch_size
    largest = Architecture.from_indices(net.space, net.parent_indices())  # work at most

    def timed() -> PrecisionChoice:
        net.sample_gates("sample", torch.Generator().manual_seed(config.seed))
        return choose_cpu_precision(net, *next(iter(batches.train)), nn.CrossEntropyLoss())

    return distributed.broadcast_object(chosen_precision(
        config.precision, run.device, images * count_macs(largest), timed, earlier))


def _search(space, data: DataSplits, cost_model: CostModel | None, config: SearchConfig,
            out: Path, resume: bool, progress: bool, log: Callable[[str], None],
            latency_fn: Objective | None, objectives: Sequence[Objective],
            also_log: Sequence[CostModel]) -> SearchResult:
    run = start_run(out, config.device, config.threads, resume, "search", CHECKPOINT)
    torch.manual_seed(config.seed)
    net = SuperNet(space, weight_sharing=config.weight_sharing).to(
        run.device, memory_format=torch.channels_last)
    batches = SearchBatches.build(space, data, config, run)
    precision, speed = search_precision(net, batches, config, run,
                                         earlier_speed(out) if resume else None)
    if run.dist.is_main:
        log(f"searching in {describe(speed)}")
    w_opt = weight_optimizer(net.weight_parameters(), config.lr, config.momentum,
                             config.weight_decay, config.decay_bn)  # never α
    steps = len(batches.train)
    schedule = cosine_schedule(config.epochs * steps, restart_at=config.warmup_epochs * steps,
                               first_scale=(config.lr if config.warmup_lr is None
                                            else config.warmup_lr) / config.lr)
    w_sched = torch.optim.lr_scheduler.LambdaLR(w_opt, schedule)
    strategy = make_strategy(net, cost_model, config, latency_fn, objectives, precision)
    latency_fn = strategy.latency_fn if isinstance(strategy, ReinforceStrategy) else None
    # the table decides the handed-over network unless the target binds a latency measured
    # (or computed) otherwise: then the argmax, as the multipliers left it
    projection = cost_model if latency_fn is None else None
    cost_models = (cost_model, *also_log)
    board = RunBoard(out, steps, config.log_every, skeleton.sync_every(run.device),
                     enabled=config.tensorboard and run.dist.is_main, log=log,
                     metrics=("epoch/val_top1", *(f"epoch/argmax_{m.name}"
                                                  for m in cost_models if m is not None)))
    one_epoch = SearchEpoch(net, batches, w_opt, w_sched, strategy, config, cost_models,
                            run.device, progress and run.dist.is_main, precision, projection,
                            board)
    total = config.warmup_epochs + config.epochs
    epochs = skeleton.Epochs(run, out, "proxyless-search/1", total, config.seed,
                             state={"supernet": net, "w_optimizer": w_opt, "w_scheduler": w_sched,
                                    "strategy": strategy, "grad_scaler": one_epoch.scaler,
                                    "probs_history": one_epoch.probs_history},
                             saved={"space": space.to_dict(), "config": to_dict(config),
                                    "data": {"transform": data.transform}},
                             optional=("grad_scaler",), board=board,
                             checkpoint_every=config.checkpoint_every,
                             batch_size=config.batch_size,
                             memory_advice=lambda: memory_advice(space, config.batch_size,
                                                                 run.device, precision.name))
    epochs.start(resume, {"space": space.to_dict(), "search": to_dict(config),
                          "data": {"name": data.name, "source": data.source,
                                   "transform": data.transform}, "speed": speed},
                 lambda checkpoint: check_resume(checkpoint, space, config, out,
                                                 data.transform), log)
    metrics = epochs.run(one_epoch, lambda r: epoch_line(r, total, cost_model), "search",
                         progress)
    return SearchResult(derive_within_target(net, projection, config), metrics,
                        one_epoch.probs_history, net)


class SearchEpoch:
    """One epoch of the search, `one_epoch(epoch, cursor) -> record`: per training batch a weight
    step on sampled paths (α frozen), and every `arch_every` batches an architecture step
    on a validation batch (weights frozen), none in the warm-up or the first search epoch."""

    def __init__(self, net: SuperNet, batches: SearchBatches, w_opt: torch.optim.Optimizer,
                 w_sched, strategy, config: SearchConfig,
                 cost_models: Sequence[CostModel | None], device: torch.device,
                 show: bool, precision: Precision | None = None,
                 projection: CostModel | None = None, board: RunBoard | None = None) -> None:
        self.net, self.batches, self.w_opt, self.w_sched = net, batches, w_opt, w_sched
        self.strategy, self.config, self.cost_models = strategy, config, cost_models
        self.device, self.show = device, show
        self.precision = precision or Precision("fp32", device.type)
        self.projection = projection  # see derive_within_target
        self.board = board or disabled_board()
        self.scaler = self.precision.scaler()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.weights = net.weight_parameters()
        self.probs_history: list[list[list[float]]] = [[p.tolist() for p in net.probs()]]
        self.warm_steps = config.warmup_epochs * len(batches.train)
        self.parent_steps = round(config.warmup_parent * self.warm_steps)

    def __call__(self, epoch: int, cursor: skeleton.EpochCursor | None = None) -> dict:
        config, train = self.config, self.batches.train
        cursor = cursor or skeleton.EpochCursor(None, epoch)
        # Identical on every rank, so all ranks run the same paths (see average_grads).
        gates = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        train.set_epoch(epoch)
        self.batches.val.set_epoch(epoch)
        phase = "warmup" if epoch < config.warmup_epochs else "search"
        arch_on = epoch > config.warmup_epochs  # no α step in the first search epoch
        self.net.train()
        tally, arch_stats = skeleton.Tally(), []
        if cursor.restored is not None:  # resumed inside this epoch
            tally.load_state_dict(cursor.restored["tally"], self.device)
            arch_stats = list(cursor.restored["arch_stats"])
            gates.set_state(cursor.restored["gates"])
        # one validation batch per architecture step, the split over and over
        val = self.batches.val
        val_stream = itertools.chain(val.iterate(len(arch_stats) % len(val)),
                                     itertools.chain.from_iterable(itertools.repeat(val)))
        losses = StepLosses("the weight step's loss", len(train),
                                     skeleton.sync_every(self.device))

        def loop_state() -> dict:
            losses.flush()  # nothing diverged goes into a checkpoint
            return {"tally": tally.state_dict(), "arch_stats": arch_stats,
                    "gates": gates.get_state()}

        bar = skeleton.batch_bar(train, f"{phase} {epoch + 1}", self.show, cursor.start)
        for i, (x, y) in enumerate(bar, start=cursor.start):
            loss = losses.add(i, self.weight_step(x, y, epoch * len(train) + i, gates, tally))
            if arch_on and (i + 1) % config.arch_every == 0:
                with at_batch(i, len(train)):
                    losses.flush()  # the weights this step sees must be finite
                    xv, yv = next(val_stream)
                    self.strategy.decide_weight = config.decide * self.search_progress(epoch, i)
                    arch_stats.append(self.strategy.step(
                        xv.contiguous(memory_format=torch.channels_last), yv, gates))
                    require_finite_alpha(self.net)
                    self.log_arch_step(epoch * len(train) + i + 1, arch_stats[-1])
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            cursor.step_done(i, len(train), loop_state)
        losses.flush()
        return self.record(epoch, phase, tally, arch_stats)

    def search_progress(self, epoch: int, batch: int) -> float:
        """How far the architecture steps have come, 0 to 1: the entropy term ramps up with
        it, so the data steers α first and near ties are settled at the end."""
        arch_epochs = self.config.epochs - 1
        done = epoch - self.config.warmup_epochs - 1 + (batch + 1) / len(self.batches.train)
        return min(1.0, max(0.0, done / arch_epochs))

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, step: int,
                    gates: torch.Generator, tally: skeleton.Tally) -> torch.Tensor:
        """One SGD step of the weights on a path drawn from p (or the warm-up's path); after
        the parent phase, with `fair_paths` on every candidate of every block once, with
        `sandwich` on the largest, smallest and drawn paths (see `sandwich_paths`). Returns
        the loss as a device tensor: nothing here waits for the GPU."""
        net = self.net
        if step == self.parent_steps and self.parent_steps > 0:
            net.inherit_from_parents()
        distill = self.config.sandwich and step >= self.parent_steps
        if self.config.fair_paths and step >= self.parent_steps:
            paths = fair_paths(net, gates)
        else:
            paths = [warmup_paths(net, step, self.warm_steps, self.parent_steps, gates)]
            if distill:
                paths = sandwich_paths(net, paths[0])
        x = x.contiguous(memory_format=torch.channels_last)
        self.w_opt.zero_grad(set_to_none=True)
        lr = self.w_opt.param_groups[0]["lr"]
        teacher = None
        for fixed in paths:  # gradients add up over the paths, then one update
            net.sample_gates("sample", gates, fixed=fixed)
            with self.precision.autocast():
                logits = net(x)
            logits = logits.float()
            if teacher is None:
                loss = self.criterion(logits, y)
            else:  # in-place distillation: the largest path's predictions as soft labels
                loss = nn.functional.cross_entropy(logits, teacher)
            self.scaler.scale(loss / len(paths)).backward()
            if distill and teacher is None:
                teacher = logits.detach().softmax(1)
        distributed.average_grads(self.weights)  # scaled alike on every rank: then unscaled
        self.scaler.step(self.w_opt)
        self.scaler.update()
        self.w_sched.step()
        if teacher is not None:  # report the drawn path's loss on the labels, not the teacher's
            loss = self.criterion(logits.detach(), y)
        loss = loss.detach()
        top1 = tally.add(loss * y.numel(), logits, y)
        self.board.add(step + 1, {"train/loss": loss, "train/top1": top1, "train/lr": lr})
        return loss

    def log_arch_step(self, step: int, stats: dict) -> None:
        """The architecture step's figures for TensorBoard: its strategy's (loss, multiplier,
        reward), E[cost] and the argmax's cost under each cost model, and the mean entropy
        of p (from the host's copy of α, which the next gate draws need anyway)."""
        if not self.board.active:
            return
        values: dict = {f"arch/{key.removeprefix('arch_')}": value
                        for key, value in stats.items() if isinstance(value, (int, float))}
        values["arch/entropy"] = self.net.entropy()
        argmax = self.net.derive()
        for model in self.cost_models:
            if model is not None:
                with torch.no_grad():
                    values[f"arch/expected_{model.name}"] = model.expected_supernet(self.net)
                values[f"arch/argmax_{model.name}"] = model.predict(argmax)
        self.board.add(step, values)

    def record(self, epoch: int, phase: str, tally: skeleton.Tally | None,
               arch_stats: list[dict]) -> dict:
        """The epoch's line of metrics.jsonl (and its p in probs_history); `tally`: the
        weight steps', None where none ran (a re-targeting's epoch)."""
        net = self.net
        record: dict = {"epoch": epoch + 1, "phase": phase}
        if tally is not None:
            train_loss, train_top1 = tally.totals(self.device)
            record |= {"lr": self.w_opt.param_groups[0]["lr"], "train_loss": train_loss,
                       "train_top1": train_top1}
        arch = derive_within_target(net, self.projection, self.config)
        val_top1 = evaluate_argmax(net, self.batches.eval, self.batches.train,
                                   precision=self.precision, arch=arch)
        record |= {"val_top1": val_top1, "entropy": net.entropy(), "arch": arch.encode(),
                   "arch_steps": len(arch_stats)}
        skipped = skipped_images(self.batches.train, self.batches.val, self.batches.eval)
        if skipped is not None:
            record["skipped_images"] = skipped
        if arch != net.derive():  # the argmax missed the target's range
            record["argmax_arch"] = net.derive().encode()
        if arch_stats:
            record["arch_loss"] = sum(s["arch_loss"] for s in arch_stats) / len(arch_stats)
            if "multiplier" in arch_stats[-1]:
                record["multiplier"] = arch_stats[-1]["multiplier"]
        for model in self.cost_models:
            if model is not None and f"argmax_{model.name}" not in record:
                with torch.no_grad():
                    record[f"expected_{model.name}"] = model.expected_supernet(net).item()
                record[f"argmax_{model.name}"] = model.predict(arch)
        self.probs_history.append([p.tolist() for p in net.probs()])
        tokens = [slot.candidates for slot in net.space.slots()]
        last = epoch + 1 == self.config.warmup_epochs + self.config.epochs
        self.board.figure("probs", lambda: probs_figure(self.probs_history, tokens,
                                                        f"p per block after epoch {epoch + 1}"),
                          epoch + 1, last)
        return record


def epoch_line(record: dict, total: int, cost_model: CostModel | None) -> str:
    line = (f"{record['phase']:<6} {record['epoch']}/{total}  loss {record['train_loss']:.3f}"
            f"  train {record['train_top1']:.1f}%  val(argmax) {record['val_top1']:.1f}%"
            f"  H(p) {record['entropy']:.2f}")
    if cost_model is not None:
        unit = cost_model.unit
        line += (f"  E[{cost_model.name}] {record[f'expected_{cost_model.name}']:.3f}{unit}"
                 f"  argmax {record[f'argmax_{cost_model.name}']:.3f}{unit}")
    return line + f"{skipped_note(record)}  ({record['epoch_time_s']:.0f}s)"
