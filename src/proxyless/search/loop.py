"""The search loop: warm-up, then alternating weight and architecture steps (ProxylessNAS §3).

    >>> result = search(space, data, cost_model, SearchConfig(target=2.0), "runs/search")

Schedule (the reference code's, scaled to the data): a validation split held out of the
training set; `warmup_epochs` of weight steps on random single paths (see `warmup_paths`: the
first `warmup_parent` of them train the largest path only); then per training batch
one weight step (`sample` mode, α frozen) and every `arch_every` batches one architecture
step on a validation batch (weights frozen), with no α step in the first search epoch. Weights:
SGD Nesterov with label smoothing and a cosine schedule per phase; α: the strategy's
optimizer (Adam, betas (0, 0.999) for the gradient strategy).

Each epoch appends to `metrics.jsonl` and writes `checkpoint.pt` atomically; every random
draw is seeded from (seed, epoch), so `resume=True` after any interruption ends with the same
architecture as an uninterrupted run.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from proxyless import distributed
from proxyless.arch import Architecture
from proxyless.config import to_dict, write_json_atomic
from proxyless.data import Batches, DataSplits
from proxyless.errors import ProxylessError
from proxyless.latency.model import CostModel
from proxyless.runtime import load_checkpoint, save_checkpoint, seed_epoch, start_run
from proxyless.search.config import SearchConfig
from proxyless.search.gradient import GradientStrategy
from proxyless.search.reinforce import Objective, ReinforceStrategy
from proxyless.supernet import SuperNet, recalibrate_batchnorm
from proxyless.train import param_groups

CHECKPOINT = "checkpoint.pt"


@dataclass
class SearchResult:
    arch: Architecture
    metrics: list[dict]
    probs_history: list[list[list[float]]]  # [epoch][block][candidate]
    supernet: SuperNet


def _phase_lr(config: SearchConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Cosine over the warm-up, then a fresh cosine over the search (as the reference)."""
    warm, total = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return 0.5 * (1 + math.cos(math.pi * step / warm))
        t = min(step - warm, total)
        return 0.5 * (1 + math.cos(math.pi * t / total))
    return factor


def warmup_paths(net: SuperNet, step: int, warm_steps: int, parent_steps: int,
                 generator: torch.Generator) -> list[int] | None:
    """The active path of every block for warm-up step `step` (None: draw from p).

    Candidates have their own weights, so with uniform random paths from a random start the
    layers after a block see unrelated features from step to step, and a short warm-up
    learns next to nothing (on `fashion`: ~20% train top-1 after 400 steps against 80% for
    one fixed path). So the warm-up first trains the largest path alone, copies it into the
    other candidates (`MixedOp.inherit_from_parent`), then anneals linearly from that path to
    uniform random paths, and the search starts from a supernet whose paths all work.
    """
    if step >= warm_steps or parent_steps == 0:
        return None
    parents = net.parent_indices()
    if step < parent_steps:
        return parents
    keep_parent = 1.0 - (step - parent_steps) / max(warm_steps - parent_steps, 1)
    paths = []
    for op, parent in zip(net.mixed_ops, parents, strict=True):
        if torch.rand((), generator=generator).item() < keep_parent:
            paths.append(parent)
        else:
            paths.append(int(torch.randint(len(op.tokens), (), generator=generator)))
    return paths


def make_strategy(supernet: SuperNet, cost_model: CostModel | None, config: SearchConfig,
                  latency_fn: Objective | None = None, objectives: Sequence[Objective] = ()):
    if config.strategy == "reinforce":
        return ReinforceStrategy(supernet, cost_model, config, latency_fn, objectives)
    if latency_fn is not None or objectives:
        raise ProxylessError("latency_fn and objectives need strategy='reinforce': the "
                             "gradient strategy only takes a differentiable cost model")
    return GradientStrategy(supernet, cost_model, config)


@torch.no_grad()
def evaluate_argmax(net: SuperNet, batches: Batches, calibration: Batches | None = None,
                    calibration_batches: int = 20) -> float:
    """Top-1 (%) of the current argmax architecture, on the supernet's weights.

    The network is taken out of the supernet (which stays untouched) and, given
    `calibration` batches, its BatchNorm statistics are re-estimated on them first.
    """
    device = next(net.parameters()).device
    model = net.derived_network().to(device, memory_format=torch.channels_last)
    if calibration is not None:
        recalibrate_batchnorm(model, calibration, calibration_batches)
    model.eval()
    correct = count = 0.0
    for x, y in batches:
        correct += (model(x).argmax(1) == y).sum().item()
        count += y.numel()
    correct, count = distributed.all_reduce_sum([correct, count], device)
    return 100.0 * correct / max(count, 1)


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
    measured = config.strategy == "reinforce" and config.metric == "latency" and (
        latency_fn is not None or config.reinforce_measure)
    if config.target is not None and cost_model is None and not measured:
        raise ProxylessError("a target needs a cost model (a latency table, or --target-mflops)"
                             ", or REINFORCE with latency measured end to end")
    if cost_model is not None and cost_model.space.slots() != space.slots():
        raise ProxylessError(f"the {cost_model.name} model was built for space "
                             f"{cost_model.space.name!r}, not the searched space "
                             f"{space.name!r}; profile this space or pass its own table")
    out = Path(out_dir)
    if data.val is None:
        raise ProxylessError("the search needs a validation split held out of the training set")
    if data.train.channels != space.in_channels:
        raise ProxylessError(f"data {data.name!r} has {data.train.channels} channel(s) but "
                             f"space {space.name!r} expects {space.in_channels}")
    run = start_run(out, config.device, config.threads, resume, "search", CHECKPOINT)
    dist_info, device, checkpoint_path = run.dist, run.device, run.checkpoint

    torch.manual_seed(config.seed)
    net = SuperNet(space).to(device, memory_format=torch.channels_last)
    train_set = data.train
    if config.train_limit and config.train_limit < len(train_set):
        g = torch.Generator().manual_seed(config.seed)
        train_set = train_set.subset(torch.randperm(len(train_set), generator=g)
                                     [:config.train_limit])
    common = dict(mean=data.mean, std=data.std, rank=dist_info.rank,
                  world_size=dist_info.world_size, image_size=space.input_size, device=device)
    train_batches = Batches(train_set, config.batch_size, shuffle=True, augment=True,
                            seed=config.seed, drop_last=True, **common)
    val_batches = Batches(data.val, config.batch_size, shuffle=True, augment=False,
                          seed=config.seed + 1, drop_last=True, **common)
    eval_set = data.val
    if config.eval_limit and config.eval_limit < len(eval_set):
        eval_set = eval_set.subset(torch.arange(config.eval_limit))
    eval_batches = Batches(eval_set, 500, shuffle=False, augment=False, pad=False, **common)
    if len(train_batches) < config.arch_every:
        raise ProxylessError(f"{len(train_batches)} training batches per epoch are fewer than "
                             f"--arch-every {config.arch_every}: no architecture step would "
                             "run; lower --arch-every or --batch-size")
    if len(train_batches) == 0 or len(val_batches) == 0:
        raise ProxylessError(f"batch size {config.batch_size} exceeds the training "
                             f"({len(train_set)}) or validation ({len(data.val)}) images")

    w_opt = torch.optim.SGD(param_groups_weights(net, config.weight_decay), lr=config.lr,
                            momentum=config.momentum, nesterov=True)
    w_sched = torch.optim.lr_scheduler.LambdaLR(w_opt, _phase_lr(config, len(train_batches)))
    strategy = make_strategy(net, cost_model, config, latency_fn, objectives)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    metrics: list[dict] = []
    probs_history: list[list[list[float]]] = [[p.tolist() for p in net.probs()]]
    start_epoch, elapsed = 0, 0.0
    if resume:
        state = load_checkpoint(checkpoint_path)
        saved = state.get("config", {})
        changed = [k for k, v in to_dict(config).items()
                   if k not in ("device", "threads") and saved.get(k) != v]
        if state.get("space") != space.to_dict() or changed:
            raise ProxylessError(f"cannot resume {out} with a different space or settings "
                                 f"({', '.join(changed) or 'space'}); use the original ones "
                                 "or a new --out")
        net.load_state_dict(state["supernet"])
        w_opt.load_state_dict(state["w_optimizer"])
        w_sched.load_state_dict(state["w_scheduler"])
        strategy.load_state_dict(state["strategy"])
        start_epoch, metrics = state["epoch"], state["metrics"]
        probs_history, elapsed = state["probs_history"], state["elapsed_s"]
        if dist_info.is_main:
            log(f"resuming {out} after epoch {start_epoch}/"
                f"{config.warmup_epochs + config.epochs}")
    if dist_info.is_main:
        (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        write_json_atomic(out / "config.json", {"space": space.to_dict(),
                                                "search": to_dict(config),
                                                "data": {"name": data.name,
                                                         "source": data.source}})

    total_epochs = config.warmup_epochs + config.epochs
    show = progress and dist_info.is_main
    epochs = tqdm(range(start_epoch, total_epochs), desc="search", unit="epoch",
                  initial=start_epoch, total=total_epochs, disable=not show)
    weights = net.weight_parameters()
    steps_per_epoch = len(train_batches)
    warm_steps = config.warmup_epochs * steps_per_epoch
    parent_steps = round(config.warmup_parent * warm_steps)
    for epoch in epochs:
        started = time.perf_counter()
        seed_epoch(config.seed, epoch)
        # Identical on every rank, so all ranks run the same paths (see average_grads).
        gates = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        train_batches.set_epoch(epoch)
        val_batches.set_epoch(epoch)
        val_stream = itertools.chain.from_iterable(itertools.repeat(val_batches))
        warmup = epoch < config.warmup_epochs
        arch_on = epoch > config.warmup_epochs  # no α step in the first search epoch
        phase = "warmup" if warmup else "search"
        net.train()
        loss_sum = correct = count = 0.0
        arch_stats: list[dict] = []
        bar = tqdm(train_batches, desc=f"{phase} {epoch + 1}", unit="batch", leave=False,
                   disable=not show)
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            if step == parent_steps and parent_steps > 0:
                net.inherit_from_parents()
            net.set_mode("sample")
            net.sample_gates(gates, fixed=warmup_paths(net, step, warm_steps, parent_steps,
                                                       gates))
            logits = net(x.contiguous(memory_format=torch.channels_last))
            loss = criterion(logits, y)
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_grads(weights)
            w_opt.step()
            w_sched.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.numel()
            if arch_on and (i + 1) % config.arch_every == 0:
                xv, yv = next(val_stream)
                arch_stats.append(strategy.step(
                    xv.contiguous(memory_format=torch.channels_last), yv, gates))
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)

        loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count],
                                                              device)
        val_top1 = evaluate_argmax(net, eval_batches, train_batches)
        arch = net.derive()
        record = {"epoch": epoch + 1, "phase": phase, "lr": w_opt.param_groups[0]["lr"],
                  "train_loss": loss_sum / count, "train_top1": 100.0 * correct / count,
                  "val_top1": val_top1, "entropy": net.entropy(), "arch": arch.encode(),
                  "arch_steps": len(arch_stats)}
        if arch_stats:
            record["arch_loss"] = sum(s["arch_loss"] for s in arch_stats) / len(arch_stats)
            if "multiplier" in arch_stats[-1]:
                record["multiplier"] = arch_stats[-1]["multiplier"]
        for model in (cost_model, *also_log):
            if model is not None and f"argmax_{model.name}" not in record:
                with torch.no_grad():
                    record[f"expected_{model.name}"] = model.expected_supernet(net).item()
                record[f"argmax_{model.name}"] = model.predict(arch)
        record["epoch_time_s"] = time.perf_counter() - started
        elapsed += record["epoch_time_s"]
        metrics.append(record)
        probs_history.append([p.tolist() for p in net.probs()])
        if dist_info.is_main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(checkpoint_path, {
                "format": "proxyless-search/1", "epoch": epoch + 1,
                "supernet": net.state_dict(), "w_optimizer": w_opt.state_dict(),
                "w_scheduler": w_sched.state_dict(), "strategy": strategy.state_dict(),
                "space": space.to_dict(), "config": to_dict(config), "metrics": metrics,
                "probs_history": probs_history, "elapsed_s": elapsed})
            epochs.write(epoch_line(record, total_epochs, cost_model))
    return SearchResult(net.derive(), metrics, probs_history, net)


def param_groups_weights(net: SuperNet, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights of the supernet, never on α, BN or biases."""
    holder = nn.ParameterList(net.weight_parameters())
    return param_groups(holder, weight_decay)


def epoch_line(record: dict, total: int, cost_model: CostModel | None) -> str:
    line = (f"{record['phase']:<6} {record['epoch']}/{total}  loss {record['train_loss']:.3f}"
            f"  train {record['train_top1']:.1f}%  val(argmax) {record['val_top1']:.1f}%"
            f"  H(p) {record['entropy']:.2f}")
    if cost_model is not None:
        unit = cost_model.unit
        line += (f"  E[{cost_model.name}] {record[f'expected_{cost_model.name}']:.3f}{unit}"
                 f"  argmax {record[f'argmax_{cost_model.name}']:.3f}{unit}")
    return line + f"  ({record['epoch_time_s']:.0f}s)"
