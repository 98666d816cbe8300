"""The `proxyless` command line.

    proxyless inspect ARCH_OR_SPACE [--json]
    proxyless train ARCH_FILE [--data NAME_OR_PATH] [--data-dir DIR] --epochs N --out DIR [--resume]

Every failure caused by input is printed as one `proxyless: error: ...` line (exit code 2);
an interrupted run keeps its last checkpoint and says how to resume (exit code 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proxyless.errors import ProxylessError


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="dataset name (auto, builtin, fashion-mnist, cifar10, imagefolder) "
                             "or a path; default: full Fashion-MNIST if installed, else the "
                             "built-in subset")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--val-size", type=float, default=None,
                        help="images held out of the training split for validation "
                             "(count, or a fraction below 1)")


def _add_runtime_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyless",
        description="Hardware-aware neural architecture search, the ProxylessNAS way.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="show an architecture's blocks, parameters and MACs")
    p.add_argument("path", help="architecture file, reference net.config, or a space "
                                "(preset name or file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input-size", type=int, default=None,
                   help="input resolution for a reference net.config (default 224)")

    p = sub.add_parser("train", help="train a network from scratch and evaluate it")
    p.add_argument("arch", help="architecture file (ours or a reference net.config)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics, results)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _add_data_args(p)
    _add_runtime_args(p)

    p = sub.add_parser("profile", help="measure a space's layers on this device (lookup table)")
    p.add_argument("--space", required=True, help="preset or space file")
    p.add_argument("--out", required=True, help="table file to write (.json or .yaml); an "
                                                "unfinished one is resumed")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (fixed; default 1)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per layer")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--min-time", type=float, default=20.0,
                   help="seconds to keep measuring each group of layers round-robin, so "
                        "that drift in the machine's speed hits all of them alike")
    p.add_argument("--calibrate", type=int, default=20, metavar="K",
                   help="measure K architectures end to end and fit the table's correction "
                        "(0: skip)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("latency-check",
                       help="measure random architectures and compare with the table")
    p.add_argument("--table", required=True)
    p.add_argument("--samples", type=int, default=50, help="architectures to measure")
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--plot", default=None, help="scatter plot path (default: next to the "
                                                "table, <table>-check.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("run", help="the whole job in one command")
    p.add_argument("--out", default="runs/latest", help="run folder (default runs/latest)")
    p.add_argument("--space", default="fashion", help="preset or space file (default fashion)")
    p.add_argument("--arch", default=None,
                   help="architecture to train (default: uniform k3e6 of the space)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resume", action="store_true")
    _add_data_args(p)
    _add_runtime_args(p)
    return parser


# -- commands ---------------------------------------------------------------------------
def _load_arch_or_space(path: str, input_size: int | None):
    from proxyless.arch import import_reference_config, load_architecture
    from proxyless.config import read_mapping
    from proxyless.space import PRESETS, load_space

    if path in PRESETS:
        return None, load_space(path)
    file = Path(path)
    if not file.exists():
        raise ProxylessError(f"{path}: no such file (and not a preset: {', '.join(PRESETS)})")
    data = read_mapping(file, "file")
    if "first_conv" in data:
        return import_reference_config(data, file.stem, input_size or 224), None
    if "blocks" in data or "arch" in data:
        return load_architecture(file), None
    return None, load_space(file)


def cmd_inspect(args: argparse.Namespace) -> int:
    from proxyless.walk import candidate_layers, fixed_layers, walk

    arch, space = _load_arch_or_space(args.path, args.input_size)
    if arch is None:
        slots = space.slots()
        cand = candidate_layers(space)
        fixed = fixed_layers(space)
        info = {
            "space": space.to_dict(), "input_size": space.input_size,
            "searchable_blocks": len(slots), "num_architectures": space.num_architectures(),
            "supernet_params": sum(f.params for f in fixed)
            + sum(c.params for row in cand for c in row),
            "blocks": [{"index": s.index, "stage": s.stage, "in": s.in_channels,
                        "out": s.out_channels, "stride": s.stride, "in_size": s.in_size,
                        "candidates": list(s.candidates)} for s in slots],
        }
        if args.json:
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

    layers = walk(arch)
    slots = arch.space.slots()
    params, macs = sum(x.params for x in layers), sum(x.macs for x in layers)
    blocks = []
    for slot, layer in zip(slots, layers[2:-2], strict=True):
        blocks.append({"index": slot.index, "stage": slot.stage, "op": layer.token,
                       "in": slot.in_channels, "out": slot.out_channels, "stride": slot.stride,
                       "in_size": slot.in_size, "params": layer.params, "macs": layer.macs})
    if args.json:
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
        shape = ""
        if layer.name.startswith("block"):
            b = blocks[int(layer.name[5:])]
            shape = f"{b['in_size']}x{b['in_size']}x{b['in']}->{b['out']} s{b['stride']}"
        print(f"  {layer.name:<12}{layer.token:<12}{shape:<22}{layer.params:>10,}"
              f"{layer.macs:>12,}")
    return 0


def _data_from_args(args: argparse.Namespace, space, val_size: float | int = 0):
    from proxyless.data import load_data

    if args.val_size is not None:
        val_size = int(args.val_size) if args.val_size >= 1 else args.val_size
    return load_data(args.data, args.data_dir, val_size=val_size, seed=args.seed,
                     image_size=space.input_size, channels=space.in_channels)


def cmd_train(args: argparse.Namespace) -> int:
    from proxyless.arch import load_architecture
    from proxyless.train import TrainConfig, train_network

    arch = load_architecture(args.arch)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                         dropout=args.dropout, augment=not args.no_augment, seed=args.seed,
                         device=args.device, threads=args.threads)
    config.validate()
    data = _data_from_args(args, arch.space)
    final = train_network(arch, data, config, args.out, resume=args.resume,
                          progress=not args.no_progress)
    print(f"test top-1 {final['test_top1']:.2f}%  params {final['params'] / 1e6:.3f}M  "
          f"MACs {final['macs'] / 1e6:.2f}M  -> {Path(args.out) / 'final.json'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from proxyless.arch import Architecture, load_architecture
    from proxyless.space import load_space
    from proxyless.train import TrainConfig, train_network

    space = load_space(args.space)
    arch = load_architecture(args.arch) if args.arch else Architecture.uniform(space, "k3e6")
    out = Path(args.out)
    if (out / "checkpoint.pt").exists() and not args.resume:
        raise ProxylessError(f"{out} already holds a run; pass --resume or another --out")
    out.mkdir(parents=True, exist_ok=True)
    arch.save(out / "arch.json")
    data = _data_from_args(args, space)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         device=args.device, threads=args.threads)
    final = train_network(arch, data, config, out, resume=args.resume,
                          progress=not args.no_progress)
    print(f"test top-1 {final['test_top1']:.2f}%  -> {out / 'final.json'}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from proxyless.latency.check import calibrate
    from proxyless.latency.model import latency_model
    from proxyless.latency.profile import Timer, profile_space
    from proxyless.space import load_space

    space = load_space(args.space)
    timer = Timer(args.backend, args.device, args.threads, args.warmup, args.repeats,
                  args.min_time)
    if args.batch < 1:
        raise ProxylessError(f"--batch must be >= 1, got {args.batch}")
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

    table = LatencyTable.load(args.table)
    plot = args.plot or str(Path(args.table).with_suffix("")) + "-check.png"
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


COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "profile": cmd_profile,
            "latency-check": cmd_latency_check, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ProxylessError as err:
        print(f"proxyless: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `proxyless inspect ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f"; continue with the same command plus --resume (run folder {out})" if out else ""
        print(f"proxyless: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        from proxyless import distributed

        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
