"""Train a derived network from scratch and evaluate it (the last step of ProxylessNAS).

    >>> from proxyless.train import TrainConfig, train_network
    >>> final = train_network(arch, load_data("builtin"), TrainConfig(epochs=5), "runs/x")

SGD with Nesterov momentum, a per-step cosine schedule, label smoothing, weight decay on conv
and linear weights only (not on BatchNorm or biases). Each epoch appends a line to
`metrics.jsonl` and writes `checkpoint.pt` atomically; `resume=True` continues exactly where
the last finished epoch left off. `final.json` holds the test top-1, parameters and MACs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from proxyless import distributed
from proxyless.arch import Architecture
from proxyless.config import from_dict, to_dict, write_json_atomic
from proxyless.data import Batches, DataSplits
from proxyless.errors import ProxylessError
from proxyless.net import build_network
from proxyless.runtime import load_checkpoint, save_checkpoint, seed_epoch, start_run
from proxyless.walk import count_macs, count_params

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    dropout: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    eval_batch_size: int = 500

    def validate(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0, "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "dropout": 0 <= self.dropout < 1, "eval_batch_size": self.eval_batch_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ProxylessError(f"train config: {name}={getattr(self, name)!r} is out of "
                                     "range")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_dict(cls, data, "train config")


# Settings that may change between a run and its resumption without changing its results.
_RESUMABLE_CHANGES = {"device", "threads", "eval_batch_size"}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: BN parameters and biases are 1-D."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def cosine_lambda(total_steps: int):
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, top-1 in %) over all batches, summed over DDP ranks."""
    model.eval()
    loss_sum = correct = count = 0.0
    for x, y in batches:
        logits = model(x.contiguous(memory_format=torch.channels_last))
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count], device)
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


def _check_resume(state: dict, arch: Architecture, config: TrainConfig, out: Path) -> None:
    if state.get("arch") != arch.to_dict():
        raise ProxylessError(f"{out / CHECKPOINT} was written for another architecture; "
                             "use a new --out or the same architecture file")
    saved = state.get("config", {})
    changed = [k for k, v in to_dict(config).items()
               if k not in _RESUMABLE_CHANGES and saved.get(k) != v]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise ProxylessError(f"cannot resume {out} with different settings ({diffs}); "
                             "use the original settings or a new --out")


def train_network(arch: Architecture, data: DataSplits, config: TrainConfig,
                  out_dir: str | Path, resume: bool = False, progress: bool = True,
                  log=print) -> dict:
    """Train `arch` from scratch on data.train, report top-1 on data.test; returns final.json."""
    config.validate()
    out = Path(out_dir)
    run = start_run(out, config.device, config.threads, resume, "run", CHECKPOINT)
    dist_info, device, checkpoint_path = run.dist, run.device, run.checkpoint

    space = arch.space
    if data.train.channels != space.in_channels:
        raise ProxylessError(f"data {data.name!r} has {data.train.channels} channel(s) but "
                             f"space {space.name!r} expects {space.in_channels}")
    torch.manual_seed(config.seed)
    # channels_last: oneDNN's depthwise convolutions run ~20% faster in NHWC on the CPU.
    model = build_network(arch, dropout=config.dropout).to(device,
                                                           memory_format=torch.channels_last)
    train_batches = Batches(data.train, config.batch_size, mean=data.mean, std=data.std,
                            shuffle=True, augment=config.augment, seed=config.seed,
                            drop_last=True, rank=dist_info.rank,
                            world_size=dist_info.world_size, image_size=space.input_size,
                            device=device)
    test_batches = Batches(data.test, config.eval_batch_size, mean=data.mean, std=data.std,
                           shuffle=False, augment=False, pad=False, rank=dist_info.rank,
                           world_size=dist_info.world_size, image_size=space.input_size,
                           device=device)
    if len(train_batches) == 0:
        raise ProxylessError(f"batch size {config.batch_size} exceeds the {len(data.train)} "
                             "training images; lower --batch-size")
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lambda(config.epochs * len(train_batches)))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    metrics: list[dict] = []
    start_epoch, elapsed = 0, 0.0
    if resume:
        state = load_checkpoint(checkpoint_path)
        _check_resume(state, arch, config, out)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, metrics, elapsed = state["epoch"], state["metrics"], state["elapsed_s"]
        if dist_info.is_main:
            log(f"resuming {out} after epoch {start_epoch}/{config.epochs}")
    if dist_info.enabled:
        model = nn.parallel.DistributedDataParallel(model)
    bare = model.module if dist_info.enabled else model

    if dist_info.is_main:  # rewrite so a resumed run never duplicates lines
        (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        write_json_atomic(out / "config.json", {"arch": arch.to_dict(),
                                                "train": to_dict(config),
                                                "data": {"name": data.name,
                                                         "source": data.source}})

    params, macs = count_params(arch), count_macs(arch)
    epochs = tqdm(range(start_epoch, config.epochs), desc="train", unit="epoch",
                  initial=start_epoch, total=config.epochs,
                  disable=not (progress and dist_info.is_main))
    for epoch in epochs:
        started = time.perf_counter()
        seed_epoch(config.seed, epoch)
        train_batches.set_epoch(epoch)
        model.train()
        loss_sum = correct = count = 0.0
        bar = tqdm(train_batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                   disable=not (progress and dist_info.is_main))
        for x, y in bar:
            logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.numel()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count], device)
        test_loss, test_top1 = evaluate(model, test_batches, device)
        epoch_time = time.perf_counter() - started
        elapsed += epoch_time
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": loss_sum / count, "train_top1": 100.0 * correct / count,
                  "test_loss": test_loss, "test_top1": test_top1, "epoch_time_s": epoch_time}
        metrics.append(record)
        if dist_info.is_main:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(checkpoint_path, {
                "format": "proxyless-train/1", "epoch": epoch + 1, "model": bare.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "arch": arch.to_dict(), "config": to_dict(config), "metrics": metrics,
                "elapsed_s": elapsed, "data": {"name": data.name, "source": data.source},
            })
            epochs.write(f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss']:.3f}  "
                         f"train {record['train_top1']:.2f}%  test {test_top1:.2f}%  "
                         f"({epoch_time:.1f}s)")

    final = {"test_top1": metrics[-1]["test_top1"], "test_loss": metrics[-1]["test_loss"],
             "params": params, "macs": macs, "epochs": config.epochs, "train_time_s": elapsed,
             "arch": arch.encode(), "space": space.name, "data": data.name,
             "train_images": len(data.train), "test_images": len(data.test)}
    if dist_info.is_main:
        write_json_atomic(out / "final.json", final)
        bare.cpu()
        torch.save({"arch": arch.to_dict(), "model": bare.state_dict()}, out / "model.pt")
    return final
