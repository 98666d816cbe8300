"""`proxyless train`: train a network from scratch and evaluate it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from proxyless.cli.config_file import add_config_arg, print_config, save_config
from proxyless.cli.options import (
    AUTO,
    BATCH_SIZE_HELP,
    add_data_args,
    batch_size_arg,
    data_from_args,
    fit_classes,
    is_main_rank,
    progress_bars,
    require_out,
    resolve_batch_size,
    run_folder,
)
from proxyless.cli.settings import add_runtime_args, add_settings, settings_from_args
from proxyless.engine.memory import check_space_fits
from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture, load_architecture
from proxyless.training.trainer import TrainConfig, train_network


def add_train_parser(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a network from scratch and evaluate it")
    p.add_argument("arch", nargs="?", default=None,
                   help="architecture file (ours or a reference net.config)")
    p.add_argument("--out", default=None,
                   help="run folder (checkpoints, metrics, results; required)")
    add_settings(p, TrainConfig, ("epochs", "batch_size", "lr", "weight_decay",
                                  "label_smoothing", "dropout", "augment", "color_jitter",
                                  "compile", "init_from"),
                 extra={"batch_size": {"type": batch_size_arg, "help": BATCH_SIZE_HELP.format(
                     default=d.batch_size)}})
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_data_args(p)
    add_runtime_args(p)
    add_config_arg(p)


def cmd_train(args: argparse.Namespace) -> int:
    if args.arch is None and not args.print_config:  # printed, a template to fill in
        raise ProxylessError("give the architecture file to train (or --config with one)")
    arch = load_architecture(args.arch) if args.arch is not None else None
    auto = args.batch_size == AUTO
    config = TrainConfig(**{**settings_from_args(TrainConfig, args),
                            "batch_size": 1 if auto else args.batch_size})
    config.validate()
    if arch is not None:
        check_space_fits(arch.space, config.batch_size, supernet=False)
    if args.print_config:
        return print_config(args)
    require_out(args)
    with run_folder(args.out):
        if is_main_rank():
            save_config(args.out, args)
        data = data_from_args(args, arch.space, args.val_size or 0)
        arch = Architecture(fit_classes(arch.space, data), arch.blocks)
        config = dataclasses.replace(config, batch_size=resolve_batch_size(
            args, arch.space, data, "train", arch=arch))
        final = train_network(arch, data, config, args.out, resume=args.resume,
                              progress=progress_bars(args))
    if not is_main_rank():
        return 0
    print(f"test top-1 {final.test_top1:.2f}%  params {final.params / 1e6:.3f}M  "
          f"MACs {final.macs / 1e6:.2f}M  -> {Path(args.out) / 'final.json'}")
    return 0
