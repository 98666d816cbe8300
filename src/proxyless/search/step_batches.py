"""A search's batches on this rank: weight steps (training split), architecture steps
(held-out split) and the argmax network's evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxyless.data import Batches, DataSplits, make_batches
from proxyless.engine.runtime import RunContext
from proxyless.errors import ProxylessError
from proxyless.search.config import SearchConfig


@dataclass
class SearchBatches:
    """This rank's batches: weight steps, architecture steps, and the argmax's evaluation."""
    train: Batches
    val: Batches
    eval: Batches

    @classmethod
    def build(cls, space, data: DataSplits, config: SearchConfig,
              run: RunContext) -> SearchBatches:
        train_set = data.train
        if config.train_limit and config.train_limit < len(train_set):
            g = torch.Generator().manual_seed(config.seed)
            train_set = train_set.subset(torch.randperm(len(train_set), generator=g)
                                         [:config.train_limit])
        common = dict(mean=data.mean, std=data.std, rank=run.dist.rank,
                      world_size=run.dist.world_size, image_size=space.input_size,
                      device=run.device, workers=config.workers)
        train = make_batches(train_set, config.batch_size, shuffle=True, augment=True,
                             seed=config.seed, drop_last=True, color_jitter=config.color_jitter,
                             **common)
        val = make_batches(data.val, config.batch_size, shuffle=True, augment=False,
                           seed=config.seed + 1, drop_last=True, **common)
        eval_set = data.val
        if config.eval_limit and config.eval_limit < len(eval_set):
            eval_set = eval_set.subset(torch.arange(config.eval_limit))
        evaluation = make_batches(eval_set, 500, shuffle=False, augment=False, pad=False,
                                  **common)
        if len(train) < config.arch_every:
            raise ProxylessError(f"{len(train)} training batches per epoch are fewer than "
                                 f"--arch-every {config.arch_every}: no architecture step "
                                 "would run; lower --arch-every or --batch-size")
        if len(train) == 0 or len(val) == 0:
            raise ProxylessError(f"batch size {config.batch_size} exceeds the training "
                                 f"({len(train_set)}) or validation ({len(data.val)}) images")
        return cls(train, val, evaluation)
