"""`proxyless train`: train a network from scratch and evaluate it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from proxyless.cli.config_file import add_config_arg, print_config, save_config
from proxyless.cli.options import (
    AUTO,
    add_data_args,
    add_runtime_args,
    batch_size_arg,
    data_from_args,
    fit_classes,
    is_main_rank,
    nonneg_float,
    positive_float,
    positive_int,
    require_out,
    resolve_batch_size,
    run_folder,
    runtime_settings,
)
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
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=batch_size_arg, default=d.batch_size,
                   help=f"per process (default {d.batch_size}); auto: the largest that fits in "
                        "memory (probed on a GPU, estimated on the CPU) and the data")
    p.add_argument("--lr", type=positive_float, default=d.lr)
    p.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=nonneg_float, default=d.label_smoothing)
    p.add_argument("--dropout", type=nonneg_float, default=d.dropout)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_data_args(p)
    add_runtime_args(p)
    add_config_arg(p)


def cmd_train(args: argparse.Namespace) -> int:
    if args.arch is None and not args.print_config:  # printed, a template to fill in
        raise ProxylessError("give the architecture file to train (or --config with one)")
    arch = load_architecture(args.arch) if args.arch is not None else None
    auto = args.batch_size == AUTO
    config = TrainConfig(epochs=args.epochs, batch_size=1 if auto else args.batch_size,
                         lr=args.lr,
                         weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                         dropout=args.dropout, augment=not args.no_augment,
                         **runtime_settings(args))
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
                              progress=not args.no_progress)
    if not is_main_rank():
        return 0
    print(f"test top-1 {final.test_top1:.2f}%  params {final.params / 1e6:.3f}M  "
          f"MACs {final.macs / 1e6:.2f}M  -> {Path(args.out) / 'final.json'}")
    return 0
