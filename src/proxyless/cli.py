"""The `proxyless` command line.

    proxyless run [--out DIR]                       # profile, search, retrain, measure, report
    proxyless inspect ARCH_OR_SPACE [--json]
    proxyless train ARCH_FILE [--data NAME_OR_PATH] [--data-dir DIR] --epochs N --out DIR [--resume]
    proxyless profile --space SPACE --out TABLE [--backend torch|onnxruntime] [--threads N]
    proxyless latency-check --table TABLE --samples K [--json]
    proxyless search --space SPACE --table TABLE --target-ms T --out DIR [--resume]
    proxyless export MODEL_OR_RUN_DIR --format onnx|torchscript --out FILE [--int8]
    proxyless evaluate MODEL [--data NAME_OR_PATH]
    proxyless compare RUN_DIR... [--out DIR]        # Pareto picture: top-1 vs latency, MACs
    proxyless cross-latency NETWORK... [--settings torch:b1:t1 ...] [--table TABLE]

Every failure caused by input is printed as one `proxyless: error: ...` line (exit code 2);
an interrupted run keeps its last checkpoint and says how to resume (exit code 130).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from proxyless.config import MAX_SEED, clip
from proxyless.errors import ProxylessError


def _shown(text: str) -> str:
    """The value as typed, quoted, at most ~80 characters: a pasted blob stays one line."""
    return repr(clip(text))


def _number(text: str, kind: type, low: float | None, high: float | None,
            strict_low: bool, what: str) -> float | int:
    """Parse one option value as `kind` within [low, high] ((low, high] when strict_low);
    argparse reports the ArgumentTypeError as `argument --x: <message>`, exit code 2."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
    # inf and nan pass float(): a nan compares false with every bound, so it lands here too
    ok = math.isfinite(value) and (low is None or (value > low if strict_low else value >= low))
    if not ok or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {_shown(text)}")
    return value


def finite_float(text: str) -> float:
    return _number(text, float, None, None, False, "a finite number")


def positive_float(text: str) -> float:
    return _number(text, float, 0, None, True, "a finite number > 0")


def nonneg_float(text: str) -> float:
    return _number(text, float, 0, None, False, "a finite number >= 0")


def min_time(text: str) -> float:
    from proxyless.latency.timer import MAX_MIN_TIME  # one limit for profile and run

    return _number(text, float, 0, MAX_MIN_TIME, False,
                   f"a number of seconds from 0 to {MAX_MIN_TIME:g}")


def positive_min_time(text: str) -> float:
    from proxyless.latency.timer import MAX_MIN_TIME

    return _number(text, float, 0, MAX_MIN_TIME, True,
                   f"a number of seconds above 0, at most {MAX_MIN_TIME:g}")


def positive_int(text: str) -> int:
    return _number(text, int, 1, None, False, "a whole number >= 1")


def nonneg_int(text: str) -> int:
    return _number(text, int, 0, None, False, "a whole number >= 0")


def seed_int(text: str) -> int:
    return _number(text, int, 0, MAX_SEED, False, f"a whole number from 0 to {MAX_SEED}")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="dataset name (auto, builtin, fashion-mnist, cifar10, imagefolder) "
                             "or a path; default: full Fashion-MNIST if installed, else the "
                             "built-in subset")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--val-size", type=nonneg_float, default=None,
                        help="images held out of the training split for validation "
                             "(count, or a fraction below 1)")


def _add_search_args(p: argparse.ArgumentParser, run: bool = False) -> None:
    from proxyless.search.config import (
        CONSTRAINTS,
        ESTIMATORS,
        REWARDS,
        STRATEGIES,
        SearchConfig,
    )
    from proxyless.search.losses import LOSSES
    from proxyless.shared_weights import WEIGHT_SHARING

    d = SearchConfig()
    budget = " (default: from --budget)" if run else ""
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
    p.add_argument("--estimator", default=d.estimator, choices=ESTIMATORS)
    p.add_argument("--constraint", default=d.constraint, choices=CONSTRAINTS,
                   help="dual (default): a Lagrange multiplier makes the target bind the "
                        "derived network; soft: the paper's loss alone")
    p.add_argument("--dual-lr", type=positive_float, default=d.dual_lr,
                   help="the multiplier's step per architecture step")
    p.add_argument("--weight-sharing", default=d.weight_sharing, choices=WEIGHT_SHARING,
                   help="separate: every candidate has its own weights (the paper); "
                        "entangled: a block's candidates are slices of one kernel (centre "
                        "kernels, first channels), so every step trains what every path uses")
    p.add_argument("--warmup-epochs", type=nonneg_int, default=d.warmup_epochs if not run else None,
                   help="weight-only epochs before the search" + budget)
    p.add_argument("--warmup-parent", type=nonneg_float, default=d.warmup_parent,
                   help="share of the warm-up that trains only the largest path, which then "
                        "seeds the other candidates (0: uniform random paths throughout)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs if not run else None,
                   help="search epochs after the warm-up" + budget)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=positive_float, default=d.lr, help="weights' learning rate")
    p.add_argument("--arch-lr", type=positive_float, default=d.arch_lr,
                   help="α's learning rate (Adam)")
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
    p.add_argument("--decide", type=nonneg_float, default=d.decide,
                   help="weight of the entropy term in the architecture loss: it settles "
                        "the blocks the data leaves undecided (default %(default)s; 0: the paper's "
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


def _search_config(args: argparse.Namespace):
    """The search settings from the options (validated where they are used)."""
    from proxyless.search.config import SearchConfig

    if args.target_ms is not None and args.target_mflops is not None:
        raise ProxylessError("give --target-ms or --target-mflops, not both")
    metric = "flops" if args.target_mflops is not None else "latency"
    target = args.target_mflops if metric == "flops" else args.target_ms
    return SearchConfig(
        strategy=args.strategy, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        weight_sharing=args.weight_sharing,
        warmup_parent=args.warmup_parent,
        batch_size=args.batch_size, lr=args.lr, arch_lr=args.arch_lr,
        arch_every=args.arch_every, decide=args.decide, fair_paths=args.fair_paths,
        sandwich=args.sandwich,
        estimator=args.estimator, loss=args.loss,
        constraint=args.constraint, dual_lr=args.dual_lr, metric=metric,
        target=target, train_limit=args.train_limit, seed=args.seed, device=args.device,
        threads=args.threads, reinforce_samples=args.reinforce_samples,
        reinforce_reward=args.reward, reinforce_w=args.reward_w,
        reinforce_measure=args.measure_latency,
        **({} if args.val_size is None else {"val_size": args.val_size}))


def _add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_train_parser(sub) -> None:
    from proxyless.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a network from scratch and evaluate it")
    p.add_argument("arch", help="architecture file (ours or a reference net.config)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, results)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=positive_float, default=d.lr)
    p.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=nonneg_float, default=d.label_smoothing)
    p.add_argument("--dropout", type=nonneg_float, default=d.dropout)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _add_data_args(p)
    _add_runtime_args(p)


def _add_latency_parsers(sub) -> None:
    from proxyless.latency.timer import BACKENDS

    p = sub.add_parser("profile", help="measure a space's layers on this device (lookup table)")
    p.add_argument("--space", required=True, help="preset or space file")
    p.add_argument("--out", required=True, help="table file to write (.json or .yaml); an "
                                                "unfinished one is resumed")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (fixed; default 1)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--repeats", type=positive_int, default=50, help="timed runs per layer")
    p.add_argument("--warmup", type=nonneg_int, default=10, help="untimed runs first")
    p.add_argument("--min-time", type=min_time, default=20.0,
                   help="seconds to keep measuring each group of layers round-robin, so "
                        "that drift in the machine's speed hits all of them alike")
    p.add_argument("--calibrate", type=nonneg_int, default=20, metavar="K",
                   help="measure K architectures end to end and fit the table's correction "
                        "(0: skip)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("latency-check",
                       help="measure random architectures and compare with the table")
    p.add_argument("--table", required=True)
    p.add_argument("--samples", type=positive_int, default=50, help="architectures to measure")
    p.add_argument("--seed", type=seed_int, default=2000)
    p.add_argument("--plot", default=None, help="scatter plot path (default: next to the "
                                                "table, <table>-check.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyless",
        description="Hardware-aware neural architecture search, the ProxylessNAS way.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show an architecture's blocks, parameters and MACs")
    p.add_argument("path", help="architecture file, reference net.config, or a space "
                                "(preset name or file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="input resolution for a reference net.config (default 224)")

    _add_train_parser(sub)
    _add_latency_parsers(sub)

    p = sub.add_parser("search", help="search an architecture on your data and hardware")
    p.add_argument("--space", default="fashion", help="preset or space file (default fashion)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    _add_search_args(p)
    _add_data_args(p)
    _add_runtime_args(p)

    from proxyless.latency.timer import BACKENDS
    from proxyless.pipeline import BUDGETS

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
    p.add_argument("--profile-threads", type=positive_int, default=1,
                   help="threads for latency (default 1: batch-1 inference)")
    p.add_argument("--profile-min-time", type=positive_min_time, default=10.0,
                   help="seconds of round-robin timing per group of layers when profiling")
    p.add_argument("--profile-backend", default="torch", choices=BACKENDS,
                   help="what to search for: PyTorch (default) or ONNX Runtime latency")
    p.add_argument("--profile-batch", type=positive_int, default=1,
                   help="batch size of the latency (default 1; e.g. 64 with "
                        "--profile-threads 2 searches for throughput)")
    p.add_argument("--table", default=None,
                   help="a latency table to search with instead of profiling this device "
                        "(from `proxyless profile`, or the reference code's format)")
    _add_search_args(p, run=True)
    _add_data_args(p)
    _add_runtime_args(p)

    from proxyless.compare import add_compare_parser
    from proxyless.deploy.evaluate import add_evaluate_parser
    from proxyless.deploy.export import add_export_parser
    from proxyless.latency.cross import add_cross_latency_parser

    add_export_parser(sub)
    add_evaluate_parser(sub)
    add_compare_parser(sub)
    add_cross_latency_parser(sub)
    return parser


# -- commands ---------------------------------------------------------------------------
def _load_arch_or_space(path: str, input_size: int | None):
    from proxyless.arch import load_architecture
    from proxyless.config import SPACE, mapping_kind, read_mapping
    from proxyless.space import PRESETS, load_space

    if path in PRESETS:
        return None, load_space(path)
    file = Path(path)
    if not file.exists():
        raise ProxylessError(f"{path}: no such file (and not a preset: {', '.join(PRESETS)})")
    if mapping_kind(read_mapping(file, "file")) == SPACE:
        return None, load_space(file)
    return load_architecture(file, input_size), None


def _inspect_space(space, as_json: bool) -> int:
    from proxyless.walk import candidate_layers, fixed_layers

    slots = space.slots()
    info = {
        "space": space.to_dict(), "input_size": space.input_size,
        "searchable_blocks": len(slots), "num_architectures": space.num_architectures(),
        "supernet_params": sum(f.params for f in fixed_layers(space))
        + sum(c.params for row in candidate_layers(space) for c in row),
        "blocks": [{"index": s.index, "stage": s.stage, "in": s.in_channels,
                    "out": s.out_channels, "stride": s.stride, "in_size": s.in_size,
                    "candidates": list(s.candidates)} for s in slots],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"space {space.name}: {space.input_size}x{space.input_size}x{space.in_channels} "
          f"-> {space.num_classes} classes, {len(slots)} searchable blocks, "
          f"{info['num_architectures']:.3g} architectures, supernet "
          f"{info['supernet_params'] / 1e6:.2f}M params")
    for s in slots:
        print(f"  block{s.index:<3} stage {s.stage}  {s.in_size:>3}x{s.in_size:<3} "
              f"{s.in_channels:>4} -> {s.out_channels:<4} s{s.stride}  "
              f"{' '.join(s.candidates)}")
    return 0


def _inspect_arch(arch, as_json: bool) -> int:
    from proxyless.walk import block_layers, walk

    layers = walk(arch)
    params, macs = sum(x.params for x in layers), sum(x.macs for x in layers)
    if as_json:
        blocks = [{"index": slot.index, "stage": slot.stage, "op": layer.token,
                   "in": slot.in_channels, "out": slot.out_channels, "stride": slot.stride,
                   "in_size": slot.in_size, "params": layer.params, "macs": layer.macs}
                  for slot, layer in zip(arch.space.slots(), block_layers(arch), strict=True)]
        print(json.dumps({
            "space": arch.space.name, "encoding": arch.encode(), "params": params, "macs": macs,
            "input_size": arch.space.input_size, "in_channels": arch.space.in_channels,
            "num_classes": arch.space.num_classes, "blocks": blocks,
            "layers": [{"name": x.name, "op": x.token, "params": x.params, "macs": x.macs}
                       for x in layers],
        }, indent=2))
        return 0
    s = arch.space
    print(f"{s.name}: {s.input_size}x{s.input_size}x{s.in_channels} -> {s.num_classes} classes"
          f"   params {params / 1e6:.2f}M   MACs {macs / 1e6:.1f}M")
    print(f"  {arch.encode()}")
    print(f"  {'layer':<12}{'op':<12}{'shape':<22}{'params':>10}{'MACs':>12}")
    for layer in layers:
        shape = (f"{layer.in_size}x{layer.in_size}x{layer.in_channels}->{layer.out_channels} "
                 f"s{layer.stride}") if layer.searchable else ""
        print(f"  {layer.name:<12}{layer.token:<12}{shape:<22}{layer.params:>10,}"
              f"{layer.macs:>12,}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    arch, space = _load_arch_or_space(args.path, args.input_size)
    return _inspect_space(space, args.json) if arch is None else _inspect_arch(arch, args.json)


def _data_from_args(args: argparse.Namespace, space, val_size: float | int):
    """The dataset of --data/--data-dir, fitted to the space (channels, input size), with
    `val_size` images held out for validation."""
    from proxyless.data import load_data

    return load_data(args.data, args.data_dir, val_size=val_size, seed=args.seed,
                     image_size=space.input_size, channels=space.in_channels)


@contextlib.contextmanager
def _run_folder(out: str | Path) -> Iterator[None]:
    """Check --out before any work (a file there or above it, a folder that cannot be made);
    and when this command made the folder and fails with a ProxylessError before writing a
    file into it, remove it again: a failed command leaves no empty folder behind."""
    from proxyless.runtime import prepare_out_dir, remove_if_empty

    path = prepare_out_dir(out, "--out", create=False)
    existed = path.exists()
    try:
        yield
    except ProxylessError:
        if not existed:
            remove_if_empty(path)
        raise


def cmd_train(args: argparse.Namespace) -> int:
    from proxyless.arch import load_architecture
    from proxyless.space import check_space_fits
    from proxyless.train import TrainConfig, train_network

    arch = load_architecture(args.arch)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                         dropout=args.dropout, augment=not args.no_augment, seed=args.seed,
                         device=args.device, threads=args.threads)
    config.validate()
    check_space_fits(arch.space, config.batch_size, supernet=False)
    with _run_folder(args.out):
        data = _data_from_args(args, arch.space, args.val_size or 0)
        final = train_network(arch, data, config, args.out, resume=args.resume,
                              progress=not args.no_progress)
    if not _is_main_rank():
        return 0
    print(f"test top-1 {final['test_top1']:.2f}%  params {final['params'] / 1e6:.3f}M  "
          f"MACs {final['macs'] / 1e6:.2f}M  -> {Path(args.out) / 'final.json'}")
    return 0


def _is_main_rank() -> bool:
    from proxyless import distributed

    return distributed.is_main()


def cmd_search(args: argparse.Namespace) -> int:
    from proxyless.latency.table import LatencyTable
    from proxyless.search.costs import search_costs
    from proxyless.search.loop import search
    from proxyless.search.outputs import write_search_outputs
    from proxyless.space import check_space_fits, load_space

    space = load_space(args.space)
    table = LatencyTable.load(args.table) if args.table else None
    config = _search_config(args)
    config.validate()
    check_space_fits(space, config.batch_size)
    with _run_folder(args.out):
        costs = search_costs(space, config, table, log=lambda m: print(m, file=sys.stderr))
        data = _data_from_args(args, space, config.val_size)
        result = search(space, data, costs.constrained, config, args.out, resume=args.resume,
                        progress=not args.no_progress, latency_fn=costs.measured,
                        also_log=costs.also_log)
        if not _is_main_rank():
            return 0
        summary = write_search_outputs(result, args.out, config, costs.latency, table)
    out = Path(args.out)
    line = f"searched: {summary['arch']}\n  params {summary['params'] / 1e6:.3f}M  MACs " \
           f"{summary['macs'] / 1e6:.2f}M  val(argmax) {summary['val_top1']:.2f}%"
    if summary["predicted_ms"] is not None:
        line += f"  predicted {summary['predicted_ms']:.3f} ms"
    if summary["measured_ms"] is not None:
        line += f"  measured {summary['measured_ms']:.3f} ms"
    print(line + f"\n  -> {out / 'arch.json'}, {out / 'summary.json'}, {out / 'probs.png'}, "
                 f"{out / 'arch.png'}")
    return 0


def _apply_budget(args: argparse.Namespace) -> set[str]:
    """Fill the search and retraining lengths that were not given from `--budget`; returns
    the names it filled."""
    from proxyless.pipeline import BUDGETS

    budget, filled = BUDGETS[args.budget], set()
    for name in ("warmup_epochs", "epochs", "train_limit", "arch_every"):
        if getattr(args, name) is None:  # an option given wins over the budget
            setattr(args, name, getattr(budget, name))
            filled.add(name)
    return filled


def cmd_run(args: argparse.Namespace) -> int:
    from proxyless.pipeline import BUDGETS, RunConfig, run_pipeline
    from proxyless.space import check_space_fits, load_space
    from proxyless.train import TrainConfig

    space = load_space(args.space)
    if args.out is None:
        if args.resume:
            raise ProxylessError("--resume needs --out: the run folder to continue")
        args.out = f"runs/{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from proxyless import distributed

    distributed.setup(args.device)
    args.out = distributed.broadcast_object(args.out)  # ranks may start a second apart
    from_budget = _apply_budget(args)
    search_config = _search_config(args)
    search_config.validate()
    check_space_fits(space, search_config.batch_size)
    if args.table is not None:  # a bad table is refused before the data is read
        from proxyless.latency.cost import latency_model
        from proxyless.latency.table import LatencyTable

        latency_model(LatencyTable.load(args.table), space)
    with _run_folder(args.out):
        data = _data_from_args(args, space, search_config.val_size)
        budget = BUDGETS[args.budget]
        epochs = (args.retrain_epochs if args.retrain_epochs is not None
                  else budget.retrain_epochs(len(data.train)))
        warmup, search_epochs = budget.search_epochs(len(data.train))
        search_config = dataclasses.replace(
            search_config,
            warmup_epochs=warmup if "warmup_epochs" in from_budget else args.warmup_epochs,
            epochs=search_epochs if "epochs" in from_budget else args.epochs)
        train_config = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                                   device=args.device, threads=args.threads)
        config = RunConfig(search_config, train_config, profile_threads=args.profile_threads,
                           profile_min_time=args.profile_min_time,
                           profile_backend=args.profile_backend,
                           profile_batch=args.profile_batch, table=args.table,
                           budget=args.budget)
        config.validate()
        results = run_pipeline(space, data, config, args.out, resume=args.resume,
                               progress=not args.no_progress)
    if not _is_main_rank():
        return 0
    measured = (f"{results['measured_ms']:.3f} ms" if results["measured_ms"] is not None
                else "n/a")
    print(f"\n{results['arch']}\n  test top-1 {results['test_top1']:.2f}%  latency target "
          f"{results['target_ms']} ms, predicted {results['predicted_ms']:.3f} ms, measured "
          f"{measured}\n  report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from proxyless.latency.calibration import calibrate
    from proxyless.latency.cost import latency_model
    from proxyless.latency.profile import profile_space
    from proxyless.latency.timer import Timer
    from proxyless.runtime import check_out_file
    from proxyless.space import check_space_fits, load_space

    space = load_space(args.space)
    check_space_fits(space, args.batch)  # every layer gets built and timed
    check_out_file(args.out, "--out")
    timer = Timer(args.backend, args.device, args.threads, args.warmup, args.repeats,
                  args.min_time)
    table = profile_space(space, args.out, timer, args.batch, progress=not args.no_progress)
    print(f"{len(table.entries)} entries -> {args.out}")
    if args.calibrate > 0:
        fit = calibrate(table, args.calibrate, progress=not args.no_progress).fit
        table.save(args.out)
        print(f"calibration on {fit['architectures']} architectures: MAPE "
              f"{fit['mape_plain_sum']:.1f}% (table sum) -> {fit['mape_fitted']:.1f}% (fitted)")
    lo, hi = latency_model(table, space).bounds()
    print(f"predicted latency of {space.name} networks: {lo:.3f} - {hi:.3f} ms")
    return 0


def cmd_latency_check(args: argparse.Namespace) -> int:
    from proxyless.latency.check import latency_check
    from proxyless.latency.table import LatencyTable
    from proxyless.runtime import check_out_file

    table = LatencyTable.load(args.table)
    plot = args.plot or str(Path(args.table).with_suffix("")) + "-check.png"
    # before the minutes of measuring, not after them
    check_out_file(plot, "--plot" if args.plot else "the plot (next to --table; set --plot)")
    result = latency_check(table, args.samples, args.seed, plot, progress=not args.no_progress,
                           log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['samples']} architectures of {result['space']} on {result['device']} "
          f"({result['backend']}, {result['threads']} thread(s), batch {result['batch']})")
    print(f"{'':<14}{'MAPE':>8}{'Spearman':>10}{'within 10%':>12}")
    print(f"{'table sum':<14}{result['mape_uncalibrated']:>7.2f}%"
          f"{result['spearman_uncalibrated']:>10.3f}{result['within_10pct_uncalibrated']:>11.1f}%")
    print(f"{'calibrated':<14}{result['mape']:>7.2f}%{result['spearman']:>10.3f}"
          f"{result['within_10pct']:>11.1f}%")
    print(f"machine speed vs the table's time: x{result['speed_factor']:.3f} (predictions "
          f"scaled by it; without: MAPE {result['mape_without_drift_correction']:.2f}%, "
          f"{result['within_10pct_without_drift_correction']:.1f}% within 10%)")
    print(f"plot: {result['plot']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from proxyless.deploy.export import cmd_export as export

    return export(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from proxyless.deploy.evaluate import cmd_evaluate as evaluate

    return evaluate(args)


def cmd_compare(args: argparse.Namespace) -> int:
    from proxyless.compare import cmd_compare as compare

    return compare(args)


def cmd_cross_latency(args: argparse.Namespace) -> int:
    from proxyless.latency.cross import cmd_cross_latency as cross_latency

    return cross_latency(args)


COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "profile": cmd_profile,
            "latency-check": cmd_latency_check, "search": cmd_search, "run": cmd_run,
            "export": cmd_export, "evaluate": cmd_evaluate, "compare": cmd_compare,
            "cross-latency": cmd_cross_latency}
# commands that continue an interrupted run with --resume
RESUMABLE = {"train", "search", "run"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        from proxyless import distributed

        distributed.finish()  # not on errors: the other ranks may never arrive
        return code
    except ProxylessError as err:
        print(f"proxyless: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `proxyless inspect ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = (f"; continue with the same command plus --resume (run folder {out})"
                if out and args.command in RESUMABLE else "")
        print(f"proxyless: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        from proxyless import distributed

        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
