"""`proxyless search`: ProxylessNAS on your data and hardware; and the search options that
`proxyless run` shares."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from proxyless.cli.config_file import (
    add_config_arg,
    print_config,
    resolved_options,
    save_config,
)
from proxyless.cli.options import (
    AUTO,
    add_data_args,
    add_runtime_args,
    batch_size_arg,
    data_from_args,
    finite_float,
    fit_classes,
    is_main_rank,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    positive_min_time,
    require_out,
    resolve_batch_size,
    run_folder,
    runtime_settings,
    threads_int,
)
from proxyless.engine import distributed
from proxyless.engine.memory import check_space_fits
from proxyless.errors import ProxylessError
from proxyless.latency.profile import ProfileSetting
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import (
    BACKENDS,
    DEFAULT_THREADS,
    GPU_PROFILE_BATCH,
)
from proxyless.model.shared_weights import WEIGHT_SHARING
from proxyless.model.space import SearchSpace, load_space
from proxyless.search.config import (
    CONSTRAINTS,
    ESTIMATORS,
    REWARDS,
    STRATEGIES,
    SearchConfig,
)
from proxyless.search.job import search_job
from proxyless.search.losses import LOSSES


def add_search_args(p: argparse.ArgumentParser, run: bool = False) -> None:
    p = p.add_argument_group("search", "the architecture search: schedule, losses, target, "
                                       "REINFORCE")
    d = SearchConfig()
    budget = " (default: from --budget)" if run else ""
    given = (lambda value: None) if run else (lambda value: value)  # run: None, from --budget
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES)
    if not run:
        p.add_argument("--table", default=None,
                       help="latency table (from `proxyless profile`, or the reference "
                            "code's format)")
    p.add_argument("--target-ms", type=positive_float, default=None,
                   help="latency target in ms on the table's device"
                        + (" (default: chosen from this device's table)" if run else ""))
    p.add_argument("--target-mflops", type=positive_float, default=None,
                   help="multiply-add target in millions, instead of latency")
    p.add_argument("--loss", default=d.loss, choices=LOSSES)
    p.add_argument("--estimator", default=d.estimator if not run else None, choices=ESTIMATORS,
                   help="two: the paper's two-path architecture step; recompute: the "
                        f"reference code's full_v2 (default {d.estimator}" + (
                            ", or from --budget)" if run else ")"))
    p.add_argument("--constraint", default=None if run else d.constraint, choices=CONSTRAINTS,
                   help="dual (default" + (", but soft with --budget paper" if run else "") +
                        "): Lagrange multipliers make the target bind the derived network; "
                        "soft: the paper's loss alone")
    p.add_argument("--dual-lr", type=positive_float, default=d.dual_lr,
                   help="the multiplier's step per architecture step")
    p.add_argument("--target-floor", type=nonneg_float, default=given(d.target_floor),
                   help="with --constraint dual, the found network must also reach this "
                        f"share of the target (default {d.target_floor}: it lands in "
                        "[0.95 T, T] by the table); 0: the target only bounds it from above")
    p.add_argument("--weight-sharing", default=d.weight_sharing, choices=WEIGHT_SHARING,
                   help="separate: every candidate has its own weights (the paper); "
                        "entangled: a block's candidates are slices of one kernel (centre "
                        "kernels, first channels), so every step trains what every path uses")
    p.add_argument("--warmup-epochs", type=nonneg_int, default=d.warmup_epochs if not run else None,
                   help="weight-only epochs before the search" + budget)
    p.add_argument("--warmup-parent", type=nonneg_float,
                   default=d.warmup_parent if not run else None,
                   help="share of the warm-up that trains only the largest path, which then "
                        "seeds the other candidates (0: uniform random paths throughout)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs if not run else None,
                   help="search epochs after the warm-up" + budget)
    p.add_argument("--batch-size", type=batch_size_arg, default=given(d.batch_size),
                   help=f"per process; default {d.batch_size}" +
                        (", or from --budget" if run else "") +
                        "; auto: the largest that fits in memory (probed on a GPU, estimated "
                        "on the CPU) and the data")
    p.add_argument("--lr", type=positive_float, default=given(d.lr),
                   help=f"weights' learning rate (default {d.lr}" + (
                       ", or from --budget)" if run else ")"))
    p.add_argument("--warmup-lr", type=positive_float, default=None,
                   help="the warm-up's starting learning rate (default: --lr" +
                        (", or from --budget)" if run else ")"))
    p.add_argument("--arch-lr", type=positive_float, default=given(d.arch_lr),
                   help=f"α's learning rate (Adam; default {d.arch_lr}" + (
                       ", or from --budget)" if run else ")"))
    p.add_argument("--arch-every", type=positive_int, default=d.arch_every if not run else None,
                   help="one architecture step every N weight steps" + budget)
    p.add_argument("--fair-paths", action="store_true",
                   help="each weight step trains every candidate of every block once (FairNAS "
                        "strict fairness; ~N times the compute per step) instead of one path "
                        "drawn from p")
    p.add_argument("--sandwich", action="store_true",
                   help="each weight step trains the largest path, the smallest and one "
                        "drawn from p, the two distilled from the largest's predictions "
                        "(BigNAS's sandwich rule; ~3 times the compute per step)")
    p.add_argument("--decide", type=nonneg_float, default=given(d.decide),
                   help="weight of the entropy term in the architecture loss: it settles "
                        f"the blocks the data leaves undecided (default {d.decide}; 0: the paper's "
                        "loss)")
    p.add_argument("--train-limit", type=positive_int, default=None,
                   help="training images per search epoch" + (budget or " (default: all)"))
    p.add_argument("--reinforce-samples", type=positive_int, default=d.reinforce_samples)
    p.add_argument("--reward", default=d.reinforce_reward, choices=REWARDS,
                   help="REINFORCE reward: mnas ACC*(LAT/T)^w, reference ACC*(T/LAT)^0.1")
    p.add_argument("--reward-w", type=finite_float, default=d.reinforce_w)
    p.add_argument("--measure-latency", action="store_true",
                   help="REINFORCE: measure each sampled network end to end instead of the "
                        "table")


def search_config_from(args: argparse.Namespace) -> SearchConfig:
    """The search settings from the options (validated where they are used); an option left
    at None takes SearchConfig's default."""
    if args.target_ms is not None and args.target_mflops is not None:
        raise ProxylessError("give --target-ms or --target-mflops, not both")
    metric = "flops" if args.target_mflops is not None else "latency"
    target = args.target_mflops if metric == "flops" else args.target_ms
    settings = dict(
        strategy=args.strategy, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        weight_sharing=args.weight_sharing, warmup_parent=args.warmup_parent,
        batch_size=None if args.batch_size == AUTO else args.batch_size, lr=args.lr,
        warmup_lr=args.warmup_lr,
        arch_lr=args.arch_lr, arch_every=args.arch_every, decide=args.decide,
        fair_paths=args.fair_paths, sandwich=args.sandwich, estimator=args.estimator,
        loss=args.loss, constraint=args.constraint, dual_lr=args.dual_lr,
        target_floor=args.target_floor, metric=metric, train_limit=args.train_limit,
        reinforce_samples=args.reinforce_samples, reinforce_reward=args.reward,
        reinforce_w=args.reward_w, reinforce_measure=args.measure_latency,
        val_size=args.val_size, **runtime_settings(args))
    optional = {"warmup_lr", "train_limit", "threads", "workers"}  # None is a value there
    return SearchConfig(target=target, **{k: v for k, v in settings.items()
                                          if v is not None or k in optional})


def add_profile_args(p: argparse.ArgumentParser) -> None:
    """What latency to search for when no --table is given: this device's, profiled (or
    taken from the cache) for a runtime, batch and thread count."""
    p = p.add_argument_group("latency profile", "what latency is searched for without "
                                                "--table: this device's, profiled or cached")
    p.add_argument("--profile-backend", default=None, choices=BACKENDS,
                   help="the runtime whose latency is searched for without --table: ONNX "
                        "Runtime (default on the CPU: what an exported network is deployed "
                        "with) or torch (PyTorch eager; default with --device cuda, the GPU "
                        "the search runs on)")
    p.add_argument("--profile-threads", type=threads_int, default=DEFAULT_THREADS,
                   help=f"threads of that latency (default {DEFAULT_THREADS}: one core, as a "
                        "deployment at batch 1 uses; see docs/latency.md)")
    p.add_argument("--profile-batch", type=positive_int, default=None,
                   help=f"batch size of that latency (default 1 on the CPU, "
                        f"{GPU_PROFILE_BATCH} on a GPU as the paper's GPU latency; e.g. 64 "
                        "with --profile-threads 2 searches for CPU throughput)")
    p.add_argument("--profile-min-time", type=positive_min_time, default=10.0,
                   help="seconds of round-robin timing per group of layers when profiling")


def resolve_profile_args(args: argparse.Namespace) -> None:
    """The profile's runtime and batch where not given (`ProfileSetting.resolved`): on a GPU,
    its own latency at the paper's GPU batch (PyTorch, batch 8); on the CPU, ONNX Runtime at
    batch 1."""
    setting = profile_setting(args)
    args.profile_backend, args.profile_batch = setting.backend, setting.batch


def profile_setting(args: argparse.Namespace) -> ProfileSetting:
    """How this device is profiled when no --table is given, from the --profile-* options."""
    return ProfileSetting(args.profile_backend, args.device, args.profile_batch,
                          args.profile_threads, args.profile_min_time).resolved()


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search an architecture on your data and hardware")
    p.add_argument("--space", default="fashion", help="preset or space file (default fashion)")
    p.add_argument("--out", default=None, help="run folder (required)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    add_search_args(p)
    add_profile_args(p)
    add_data_args(p)
    add_runtime_args(p)
    add_config_arg(p)


def resolve_search_options(args: argparse.Namespace
                           ) -> tuple[SearchSpace, SearchConfig, LatencyTable | None]:
    """Everything `search` decides before it reads data, validated: what `--print-config`
    prints and the run folder's config.yaml holds; and the `--table` given (read now: a bad
    table is refused before any work)."""
    space = load_space(args.space)
    table = LatencyTable.load(args.table) if args.table else None
    resolve_profile_args(args)
    config = search_config_from(args)
    config.validate()
    check_space_fits(space, 1 if args.batch_size == AUTO else config.batch_size)
    return space, config, table


def cmd_search(args: argparse.Namespace) -> int:
    space, config, table = resolve_search_options(args)
    if args.print_config:
        return print_config(resolved_options(args, config))
    require_out(args)
    distributed.setup(args.device)  # under torchrun: each rank on its own GPU from here on
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731 - stdout holds the result
    with run_folder(args.out):
        if is_main_rank():
            save_config(args.out, resolved_options(args, config))
        data = data_from_args(args, space, config.val_size)
        config = dataclasses.replace(config, batch_size=resolve_batch_size(
            args, space, data, "search", arch_every=config.arch_every,
            train_limit=config.train_limit))
        space = fit_classes(space, data, log)
        summary = search_job(space, data, config, args.out, table, profile_setting(args),
                             args.resume, not args.no_progress, log)
        if summary is None:  # not rank 0
            return 0
    out = Path(args.out)
    line = f"searched: {summary.arch}\n  params {summary.params / 1e6:.3f}M  MACs " \
           f"{summary.macs / 1e6:.2f}M  val(argmax) {summary.val_top1:.2f}%"
    if summary.predicted_ms is not None:
        line += f"  predicted {summary.predicted_ms:.3f} ms"
    if summary.measured_ms is not None:
        line += f"  measured {summary.measured_ms:.3f} ms"
    if summary.priced is not None:
        line += f" ({summary.priced['runtime']}, batch {summary.priced['batch']})"
    if summary.runtimes_ms:
        line += "\n  in each runtime, measured now: " + ", ".join(
            f"{name} {ms:.3f} ms" for name, ms in summary.runtimes_ms.items())
    print(line + f"\n  -> {out / 'arch.json'}, {out / 'summary.json'}, {out / 'probs.png'}, "
                 f"{out / 'arch.png'}")
    return 0
