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
    BATCH_SIZE_HELP,
    add_data_args,
    batch_size_arg,
    data_from_args,
    fit_classes,
    is_main_rank,
    positive_float,
    positive_min_time,
    progress_bars,
    require_out,
    resolve_batch_size,
    run_folder,
    threads_int,
)
from proxyless.cli.settings import add_runtime_args, add_settings, settings_from_args
from proxyless.engine import distributed
from proxyless.engine.memory import check_space_fits
from proxyless.errors import ProxylessError
from proxyless.latency.profile import ProfileSetting
from proxyless.latency.table import LatencyTable
from proxyless.model.space import SearchSpace, load_space
from proxyless.search.config import (
    SearchConfig,
)
from proxyless.search.job import search_job
from proxyless.search.outputs import SearchSummary

# run: the settings `--budget` decides are unset (None) until it has
BUDGET_SETTINGS = ("estimator", "constraint", "target_floor", "warmup_epochs", "warmup_parent",
                   "epochs", "batch_size", "lr", "arch_lr", "arch_every", "decide",
                   "zero_alpha", "decay_bn", "color_jitter")
SEARCH_SETTINGS = ("loss", "estimator", "constraint", "dual_lr", "target_floor",
                   "weight_sharing", "warmup_epochs", "warmup_parent", "epochs", "batch_size",
                   "lr", "warmup_lr", "arch_lr", "arch_every", "fair_paths", "sandwich",
                   "decide", "train_limit", "reinforce_samples", "reward", "reward_w",
                   "measure_latency", "zero_alpha", "decay_bn", "color_jitter")


def add_search_args(p: argparse.ArgumentParser, run: bool = False) -> None:
    """The search's settings (`SearchConfig`) as options, each as declared; `run` leaves
    those `--budget` decides unset."""
    p = p.add_argument_group("search", "the architecture search: schedule, losses, target, "
                                       "REINFORCE")
    d = SearchConfig()
    add_settings(p, SearchConfig, ("strategy",))
    if not run:
        p.add_argument("--table", default=None,
                       help="latency table (from `proxyless profile`, or the reference "
                            "code's format)")
    p.add_argument("--target-ms", type=positive_float, default=None,
                   help="latency target in ms on the table's device"
                        + (" (default: chosen from this device's table)" if run else ""))
    p.add_argument("--target-mflops", type=positive_float, default=None,
                   help="multiply-add target in millions, instead of latency")
    unset = dict.fromkeys(BUDGET_SETTINGS) if run else {}
    notes = ({name: f" (default {getattr(d, name)}, or from --budget)"
              for name in BUDGET_SETTINGS} | {"train_limit": " (default: from --budget)"}
             if run else {})
    batch_help = BATCH_SIZE_HELP.format(default=d.batch_size) + (
        ", or from --budget" if run else "")
    add_settings(p, SearchConfig, SEARCH_SETTINGS, unset, notes,
                 {"batch_size": {"type": batch_size_arg, "help": batch_help}})


def search_config_from(args: argparse.Namespace) -> SearchConfig:
    """The search settings from the options (validated where they are used); an option left
    at None takes SearchConfig's default."""
    if args.target_ms is not None and args.target_mflops is not None:
        raise ProxylessError("give --target-ms or --target-mflops, not both")
    metric = "flops" if args.target_mflops is not None else "latency"
    target = args.target_mflops if metric == "flops" else args.target_ms
    settings = {**settings_from_args(SearchConfig, args), "metric": metric}
    if args.batch_size == AUTO:
        del settings["batch_size"]
    return SearchConfig(target=target, **settings)


def add_profile_args(p: argparse.ArgumentParser) -> None:
    """What latency to search for when no --table is given: this device's, profiled (or
    taken from the cache) for a runtime, batch and thread count."""
    p = p.add_argument_group("latency profile", "what latency is searched for without "
                                                "--table: this device's, profiled or cached")
    add_settings(p, ProfileSetting, ("backend", "threads", "batch", "min_time"),
                 extra={"threads": {"type": threads_int},
                        "min_time": {"type": positive_min_time}}, prefix="profile-")


def resolve_profile_args(args: argparse.Namespace) -> None:
    """The profile's runtime and batch where not given (`ProfileSetting.resolved`): on a GPU,
    its own latency at the paper's GPU batch (PyTorch, batch 8); on the CPU, ONNX Runtime at
    batch 1."""
    setting = profile_setting(args)
    args.profile_backend, args.profile_batch = setting.backend, setting.batch


def profile_setting(args: argparse.Namespace) -> ProfileSetting:
    """How this device is profiled when no --table is given, from the --profile-* options."""
    return ProfileSetting(device=args.device,
                          **settings_from_args(ProfileSetting, args, "profile-")).resolved()


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
                             args.resume, progress_bars(args), log)
        if summary is None:  # not rank 0
            return 0
    print(summary_text(summary, Path(args.out)))
    return 0


def summary_text(summary: SearchSummary, out: Path) -> str:
    """What a finished search (or re-targeting) found, for the terminal."""
    verb = "re-targeted" if summary.retargeted_from else "searched"
    line = f"{verb}: {summary.arch}\n  params {summary.params / 1e6:.3f}M  MACs " \
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
    return line + (f"\n  -> {out / 'arch.json'}, {out / 'summary.json'}, "
                   f"{out / 'probs.png'}, {out / 'arch.png'}")
