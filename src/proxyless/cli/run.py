"""`proxyless run`: the whole job in one command (profile, search, retrain, evaluate,
measure, report); `--budget` sets how long it searches and retrains."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from proxyless import distributed
from proxyless.budgets import BUDGETS
from proxyless.cli.config_file import add_config_arg, resolved_options, save_config
from proxyless.cli.options import (
    AUTO,
    add_data_args,
    add_runtime_args,
    data_from_args,
    fit_classes,
    is_main_rank,
    positive_int,
    resolve_batch_size,
    run_folder,
)
from proxyless.cli.search import (
    add_profile_args,
    add_search_args,
    resolve_profile_args,
    search_config_from,
)
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.table import LatencyTable
from proxyless.memory import check_space_fits
from proxyless.pipeline import RunConfig, run_pipeline
from proxyless.space import load_space
from proxyless.train import TrainConfig


def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="the whole job in one command: profile, search, retrain, "
                                   "evaluate, measure, report")
    p.add_argument("--space", default="fashion", help="preset or space file (default fashion)")
    p.add_argument("--out", default=None,
                   help="run folder (default runs/<space>-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--budget", default="quick", choices=list(BUDGETS),
                   help="how long to search and retrain, on 2 CPU cores with full "
                        "Fashion-MNIST: " + "; ".join(f"{name}: {b.describe()}"
                                                      for name, b in BUDGETS.items()))
    p.add_argument("--retrain-epochs", type=positive_int, default=None,
                   help="epochs of retraining the derived network (default: from --budget, "
                        "by the size of the training set)")
    p.add_argument("--table", default=None,
                   help="a latency table to search with instead of profiling this device "
                        "(from `proxyless profile`, or the reference code's format)")
    add_search_args(p, run=True)
    add_profile_args(p)
    add_data_args(p)
    add_runtime_args(p)
    add_config_arg(p)


def apply_budget(args: argparse.Namespace) -> set[str]:
    """Fill the search and retraining lengths that were not given from `--budget`; returns
    the names it filled."""
    budget, filled = BUDGETS[args.budget], set()
    settings = {name: getattr(budget, name)
                for name in ("warmup_epochs", "epochs", "train_limit", "arch_every")}
    for name, value in {**settings, **dict(budget.search)}.items():
        if getattr(args, name) is None:  # an option given wins over the budget
            setattr(args, name, value)
            filled.add(name)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if "batch_size" in filled and budget.total_batch and ranks > 1:
        # the authors' batch is one process's: under torchrun, each rank takes its share
        if args.batch_size % ranks:
            raise ProxylessError(f"--budget {args.budget}: its batch of {args.batch_size} does "
                                 f"not split over {ranks} ranks; give --batch-size (per GPU)")
        args.batch_size //= ranks
    return filled


def cmd_run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.out is None:
        if args.resume:
            raise ProxylessError("--resume needs --out: the run folder to continue")
        args.out = f"runs/{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    distributed.setup(args.device)
    args.out = distributed.broadcast_object(args.out)  # ranks may start a second apart
    from_budget = apply_budget(args)
    resolve_profile_args(args)
    search_config = search_config_from(args)
    search_config.validate()
    check_space_fits(space, 1 if args.batch_size == AUTO else search_config.batch_size)
    if args.table is not None:  # a bad table is refused before the data is read
        latency_model(LatencyTable.load(args.table), space)
    with run_folder(args.out):
        data = data_from_args(args, space, search_config.val_size)
        space = fit_classes(space, data)
        budget = BUDGETS[args.budget]
        epochs = (args.retrain_epochs if args.retrain_epochs is not None
                  else budget.retrain_epochs(len(data.train)))
        warmup, search_epochs = budget.search_epochs(len(data.train))
        search_config = dataclasses.replace(
            search_config,
            warmup_epochs=warmup if "warmup_epochs" in from_budget else args.warmup_epochs,
            epochs=search_epochs if "epochs" in from_budget else args.epochs,
            batch_size=resolve_batch_size(args, space, data, "search",
                                          arch_every=search_config.arch_every,
                                          folder="search",
                                          train_limit=search_config.train_limit))
        train_config = TrainConfig(**{"epochs": epochs, "batch_size": search_config.batch_size,
                                      **dict(budget.train), "seed": args.seed,
                                      "device": args.device, "threads": args.threads,
                                      "workers": args.workers, "precision": args.precision,
                                      "tensorboard": not args.no_tensorboard,
                                      "log_every": args.log_every,
                                      "checkpoint_every": args.checkpoint_every})
        config = RunConfig(search_config, train_config, profile_threads=args.profile_threads,
                           profile_min_time=args.profile_min_time,
                           profile_backend=args.profile_backend,
                           profile_batch=args.profile_batch, table=args.table,
                           budget=args.budget)
        config.validate()
        if is_main_rank():  # the options as resolved: the budget's epochs scaled to the data
            args.warmup_epochs, args.epochs = search_config.warmup_epochs, search_config.epochs
            args.retrain_epochs = epochs
            save_config(args.out, resolved_options(args, search_config))
        results = run_pipeline(space, data, config, args.out, resume=args.resume,
                               progress=not args.no_progress)
    if not is_main_rank():
        return 0
    measured = (f"{results['measured_ms']:.3f} ms" if results["measured_ms"] is not None
                else "n/a")
    priced = results["priced"] or {}
    print(f"\n{results['arch']}\n  test top-1 {results['test_top1']:.2f}%  latency target "
          f"{results['target_ms']} ms, predicted {results['predicted_ms']:.3f} ms, measured "
          f"{measured} ({priced.get('runtime', 'n/a')}, batch {priced.get('batch', 1)})")
    if results.get("runtimes_ms"):
        figures = ", ".join(f"{name} {'n/a' if ms is None else f'{ms:.3f} ms'}"
                            for name, ms in results["runtimes_ms"].items())
        print(f"  in each runtime, measured now: {figures}")
    print(f"  report: {Path(args.out) / 'report.md'}")
    return 0
