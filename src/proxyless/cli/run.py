"""`proxyless run`: the whole job in one command (profile, search, retrain, evaluate,
measure, report); `--budget` sets how long it searches and retrains."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from proxyless.cli.config_file import (
    add_config_arg,
    print_config,
    save_config,
)
from proxyless.cli.options import (
    AUTO,
    add_data_args,
    data_from_args,
    fit_classes,
    is_main_rank,
    positive_int,
    progress_bars,
    resolve_batch_size,
    run_folder,
)
from proxyless.cli.search import (
    add_profile_args,
    add_search_args,
    profile_setting,
    resolve_profile_args,
    search_config_from,
)
from proxyless.cli.settings import add_runtime_args, add_settings, settings_from_args
from proxyless.config_io import to_dict
from proxyless.engine import distributed
from proxyless.engine.memory import check_space_fits
from proxyless.engine.runtime import RuntimeConfig
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.table import LatencyTable
from proxyless.model.space import SearchSpace, load_space
from proxyless.pipeline.budgets import BUDGETS, fill_from_budget
from proxyless.pipeline.run import RunConfig, run_pipeline
from proxyless.search.config import SearchConfig
from proxyless.search.retarget import finished_search
from proxyless.training.trainer import TrainConfig


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
    p.add_argument("--table", default=None,
                   help="a latency table to search with instead of profiling this device "
                        "(from `proxyless profile`, or the reference code's format)")
    retrain = p.add_argument_group("retraining", "the derived network's training, on the "
                                                 "whole training set (the search's hold-out "
                                                 "included)")
    retrain.add_argument("--retrain-epochs", type=positive_int, default=None,
                         help="epochs of retraining the derived network (default: from "
                              "--budget, by the size of the training set)")
    add_settings(retrain, RunConfig, ("retrain_init",))
    add_settings(retrain, TrainConfig, ("compile",))
    add_settings(retrain, TrainConfig, ("dropout", "color_jitter"),
                 {"dropout": None, "color_jitter": None},
                 {"dropout": f" (default {TrainConfig().dropout:g}, or from --budget; the "
                             "authors' released models: 0.3 GPU and mobile_14, 0.2 CPU, 0.1 "
                             "mobile)",
                  "color_jitter": " (default none, or from --budget; --color-jitter is the "
                                  "search's)"}, prefix="retrain-")
    add_search_args(p, run=True)
    p.add_argument("--from-search", default=None, metavar="SEARCH_DIR",
                   help="re-target the trained supernet of a finished search (or run) folder "
                        "to this run's target and table instead of searching anew: "
                        "architecture steps only, minutes (`proxyless retarget`); give it "
                        "the search's data")
    add_profile_args(p)
    add_data_args(p)
    add_runtime_args(p)
    add_config_arg(p)


def apply_budget(args: argparse.Namespace) -> None:
    """Fill every search option left unset (None) from `--budget`, then from SearchConfig's
    defaults (`budgets.fill_from_budget`), and the retraining's likewise (TrainConfig's), so
    that every later step sees a value."""
    fill_from_budget(vars(args), args.budget, to_dict(SearchConfig()),
                     int(os.environ.get("WORLD_SIZE", "1")))
    retraining = {**to_dict(TrainConfig()), **dict(BUDGETS[args.budget].train)}
    for name in ("dropout", "color_jitter"):  # the retraining's, shown by --print-config
        if getattr(args, f"retrain_{name}") is None:
            setattr(args, f"retrain_{name}", retraining[name])


def budget_epochs(args: argparse.Namespace, train_images: int,
                  retrain_images: int) -> tuple[int, int, int]:
    """Warm-up, search and retraining epochs: as given, else from `--budget` for a search
    training split of `train_images` and a retraining set (the split and the search's
    hold-out) of `retrain_images`."""
    budget = BUDGETS[args.budget]
    warmup, search_epochs = budget.search_epochs(train_images)
    return (warmup if args.warmup_epochs is None else args.warmup_epochs,
            search_epochs if args.epochs is None else args.epochs,
            budget.retrain_epochs(retrain_images) if args.retrain_epochs is None
            else args.retrain_epochs)


def _train_config(args: argparse.Namespace, epochs: int, batch_size: int) -> TrainConfig:
    """The retraining's settings: the budget's, then the runtime options."""
    return TrainConfig(**{"epochs": epochs, "batch_size": batch_size,
                          **dict(BUDGETS[args.budget].train),
                          **settings_from_args(TrainConfig, args, prefix="retrain-"),
                          "compile": args.compile,
                          **settings_from_args(RuntimeConfig, args)})


def _run_config(args: argparse.Namespace, search_config: SearchConfig,
                train_config: TrainConfig) -> RunConfig:
    return RunConfig(search_config, train_config, profile=profile_setting(args),
                     table=args.table, budget=args.budget, retrain_init=args.retrain_init,
                     from_search=args.from_search)


def resolve_run_options(args: argparse.Namespace) -> tuple[SearchSpace, SearchConfig]:
    """Everything `run` decides before it reads data, validated: the budget and the
    defaults filled into `args`, the profile's setting, the search's settings. What
    `--print-config` prints and the run folder's config.yaml holds."""
    space = load_space(args.space)
    apply_budget(args)
    resolve_profile_args(args)
    search_config = search_config_from(args)
    train_epochs = 1 if args.retrain_epochs is None else args.retrain_epochs  # checked alone
    _run_config(args, search_config, _train_config(args, train_epochs,
                                                   search_config.batch_size)).validate()
    check_space_fits(space, 1 if args.batch_size == AUTO else search_config.batch_size)
    if args.table is not None:  # a bad table is refused before the data is read
        latency_model(LatencyTable.load(args.table), space)
    if args.from_search is not None:
        check_from_search(args, space, search_config)
    return space, search_config


def check_from_search(args: argparse.Namespace, space: SearchSpace,
                      search_config: SearchConfig) -> None:
    """--from-search: a finished search of this space, split as this run splits its data
    (else α would step on images its weights trained on); refused before the data is read.
    A resumed run whose search step is done needs it no more."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ProxylessError("--from-search runs in one process: under torchrun, re-target "
                             "first (`proxyless retarget SEARCH_DIR --out R`), then train "
                             "R/arch.json (`proxyless train`)")
    if args.resume and args.out and (Path(args.out) / "search" / "summary.json").exists():
        return
    searched = finished_search(args.from_search)
    if searched.space.slots() != space.slots():
        raise ProxylessError(f"--from-search {args.from_search}: its supernet is of space "
                             f"{searched.space.name!r}, not --space {space.name!r}")
    theirs, ours = searched.config, search_config
    if (theirs.seed, theirs.val_size) != (ours.seed, ours.val_size):
        raise ProxylessError(f"--from-search {args.from_search}: that search held out "
                             f"--val-size {theirs.val_size:g} with --seed {theirs.seed}; give "
                             "the same (its α steps need the images its weights never saw)")


def cmd_run(args: argparse.Namespace) -> int:
    space, search_config = resolve_run_options(args)
    if args.print_config:
        return print_config(args)
    if args.out is None:
        if args.resume:
            raise ProxylessError("--resume needs --out: the run folder to continue")
        args.out = f"runs/{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    distributed.setup(args.device)
    args.out = distributed.broadcast_object(args.out)  # ranks may start a second apart
    with run_folder(args.out):
        if is_main_rank():
            save_config(args.out, args)
        data = data_from_args(args, space, search_config.val_size)
        space = fit_classes(space, data)
        warmup, search_epochs, epochs = budget_epochs(args, len(data.train),
                                                      len(data.for_retraining().train))
        search_config = dataclasses.replace(
            search_config, warmup_epochs=warmup, epochs=search_epochs,
            batch_size=resolve_batch_size(args, space, data, "search",
                                          arch_every=search_config.arch_every,
                                          folder="search",
                                          train_limit=search_config.train_limit))
        config = _run_config(args, search_config,
                             _train_config(args, epochs, search_config.batch_size))
        config.validate()
        if is_main_rank():
            print(f"budget {args.budget} on {len(data.train):,} training images: {warmup} "
                  f"warm-up + {search_epochs} search epochs, {epochs} retraining "
                  f"epoch{'s' if epochs != 1 else ''}, "
                  f"batch {search_config.batch_size}", file=sys.stderr)
        results = run_pipeline(space, data, config, args.out, resume=args.resume,
                               progress=progress_bars(args))
    if not is_main_rank():
        return 0
    measured = (f"{results.measured_ms:.3f} ms" if results.measured_ms is not None
                else "n/a")
    priced = results.priced or {}
    setting = f"{priced.get('runtime', 'n/a')}, batch {priced.get('batch', 1)}"
    factor = results.speed_factor
    if results.measured_on_table_ms is not None and abs(factor - 1) > 0.03:
        # the machine drifted since it was profiled: the figure comparable with the target
        pace = f"x{factor:.2f} slower" if factor > 1 else f"x{1 / factor:.2f} faster"
        setting += (f"; {results.measured_on_table_ms:.3f} ms at the table's speed, this "
                    f"machine running {pace} than when profiled")
    print(f"\n{results.arch}\n  test top-1 {results.test_top1:.2f}%  latency target "
          f"{results.target_ms} ms, predicted {results.predicted_ms:.3f} ms, measured "
          f"{measured} ({setting})")
    if results.runtimes_ms:
        figures = ", ".join(f"{name} {'n/a' if ms is None else f'{ms:.3f} ms'}"
                            for name, ms in results.runtimes_ms.items())
        print(f"  in each runtime, measured now: {figures}")
    print(f"  report: {Path(args.out) / 'report.md'}")
    return 0
