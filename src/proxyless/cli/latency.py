"""`proxyless profile`, `latency-check` and `cross-latency`: this device's latency table, how
well it predicts, and networks timed on several settings of this machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proxyless.cli.options import (
    min_time,
    nonneg_int,
    positive_int,
    progress_bars,
    seed_int,
    threads_int,
)
from proxyless.cli.settings import add_settings, settings_from_args
from proxyless.engine.memory import check_space_fits
from proxyless.engine.runtime import check_out_file, prepare_out_dir
from proxyless.errors import ProxylessError
from proxyless.latency.calibration import CALIBRATION_NETWORKS
from proxyless.latency.check import latency_check
from proxyless.latency.cost import latency_model
from proxyless.latency.cross import cross_latency
from proxyless.latency.kit import (
    CHECK_NETWORKS,
    KIT_CALIBRATION,
    kit_summary,
    make_kit,
    table_from_kit,
)
from proxyless.latency.profile import ProfileSetting, profile_job
from proxyless.latency.settings import DEFAULT_SETTINGS, NO_SETTINGS, SETTING_FORMAT, Timing
from proxyless.latency.table import LatencyTable
from proxyless.model.space import load_space


def add_latency_parsers(sub) -> None:
    """`profile` and `latency-check`."""
    p = sub.add_parser("profile", help="measure a space's layers on this device (lookup table)")
    p.add_argument("--space", required=True, help="preset or space file")
    p.add_argument("--out", default=None, help="table file to write (.json or .yaml); an "
                                               "unfinished one is resumed")
    p.add_argument("--kit", default=None, metavar="DIR",
                   help="instead of timing here, write a profiling kit for a device without "
                        "PyTorch: every layer as ONNX and profile_kit.py (numpy + onnxruntime "
                        "only); run it there, then --from-kit")
    p.add_argument("--from-kit", default=None, metavar="TIMINGS",
                   help="make the table (--out) from the timings.json a kit wrote on its "
                        "device, calibrated on the kit's networks and checked on others")
    p.add_argument("--kit-check", type=nonneg_int, default=CHECK_NETWORKS, metavar="N",
                   help=f"networks a kit carries for checking the table (default "
                        f"{CHECK_NETWORKS}; --calibration-networks sets those for calibration)")
    # a standalone profile times longer than the one search and run make (10 s)
    add_settings(p, ProfileSetting, ("device", "backend", "threads", "batch", "repeats",
                                     "warmup", "min_time", "calibration_networks"),
                 defaults={"min_time": 20.0, "calibration_networks": None},
                 notes={"calibration_networks": f" (default {CALIBRATION_NETWORKS})"},
                 extra={"threads": {"type": threads_int}, "min_time": {"type": min_time},
                        "calibration_networks": {"metavar": "K", "aliases": ["--calibrate"]}})
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


def add_cross_latency_parser(sub) -> None:
    p = sub.add_parser("cross-latency",
                       help="time networks on several backends, batch sizes and thread counts "
                            "of this machine (and predict them from latency tables)")
    p.add_argument("networks", nargs="+", metavar="NETWORK",
                   help="run, search or train folder, model file, architecture file or "
                        "reference net.config")
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                   metavar=SETTING_FORMAT,
                   help=f"what to measure on this CPU (default: {' '.join(DEFAULT_SETTINGS)}); "
                        f"'{NO_SETTINGS}': measure nothing, only predict from --table")
    p.add_argument("--table", action="append", default=[], metavar="TABLE",
                   help="add a column predicted from this latency table (ours, or the "
                        "reference Pixel 1 table mobile_trim.yaml); repeatable")
    p.add_argument("--out", default="cross-latency",
                   help="folder for matrix.md, matrix.json and architectures.png "
                        "(default: ./cross-latency)")
    p.add_argument("--names", nargs="+", default=None,
                   help="one name per NETWORK (default: folder or file names)")
    p.add_argument("--warmup", type=nonneg_int, default=Timing.warmup,
                   help=f"untimed runs per network and setting (default {Timing.warmup})")
    p.add_argument("--repeats", type=positive_int, default=Timing.repeats,
                   help=f"round-robin rounds per setting, at least (default {Timing.repeats})")
    p.add_argument("--min-time", type=min_time, default=Timing.min_time,
                   help=f"seconds of round-robin timing per setting, at least (default "
                        f"{Timing.min_time:g})")
    p.add_argument("--rounds", type=positive_int, default=Timing.rounds,
                   help="measure each setting this many times, the settings interleaved; a "
                        "cell is the median over the rounds (default 1; 3 or more on a "
                        "shared machine)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cmd_profile(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.kit is not None and args.from_kit is not None:
        raise ProxylessError("--kit writes a kit, --from-kit reads its timings: give one")
    if args.kit is not None:
        return _write_kit(space, args)
    if args.out is None:
        raise ProxylessError("give --out TABLE (or --kit DIR to profile another device)")
    if args.from_kit is not None:
        check_out_file(args.out, "--out")
        table, check = table_from_kit(space, args.from_kit)
        if check:
            table.meta["kit_check"] = {k: check[k] for k in ("samples", "calibrated",
                                                             "table_sum")}
        table.save(args.out)
        print(kit_summary(table, check))
        lo, hi = latency_model(table, space).bounds()
        print(f"predicted latency of {space.name} networks: {lo:.3f} - {hi:.3f} ms -> "
              f"{args.out}")
        return 0
    setting = ProfileSetting(**settings_from_args(ProfileSetting, args)).resolved()
    setting.validate()
    check_space_fits(space, setting.batch)  # every layer gets built and timed
    check_out_file(args.out, "--out")
    table = profile_job(space, setting, args.out, progress=progress_bars(args))
    print(f"{len(table.entries)} entries -> {args.out}")
    lo, hi = latency_model(table, space).bounds()
    print(f"predicted latency of {space.name} networks: {lo:.3f} - {hi:.3f} ms")
    return 0


def _write_kit(space, args: argparse.Namespace) -> int:
    if args.out is not None:
        raise ProxylessError("--kit writes a folder, not a table: drop --out (the table comes "
                             "later, from --from-kit)")
    if (args.backend or "onnxruntime") != "onnxruntime" or args.device != "cpu":
        raise ProxylessError("a kit is timed by ONNX Runtime on the device's CPU: drop "
                             "--backend and --device (the device's threads are "
                             "profile_kit.py's --threads)")
    batch = args.batch or 1
    check_space_fits(space, batch)
    prepare_out_dir(args.kit, "--kit")
    count = KIT_CALIBRATION if args.calibration_networks is None else args.calibration_networks
    manifest = make_kit(space, args.kit, batch, count, args.kit_check,
                        progress=None if args.no_progress else print)
    roles = [w.get("role") for w in manifest["workloads"] if w["kind"] == "network"]
    print(f"kit of {space.name!r} -> {args.kit}: {len(roles)} "
          f"networks ({roles.count('calibration')} to calibrate, {roles.count('check')} to "
          f"check, the anchor), {len(manifest['workloads']) - len(roles)} layers, batch {batch}")
    print(f"on the device: python profile_kit.py --threads 1 --out timings.json\n"
          f"then here:     proxyless profile --space {args.space} --from-kit timings.json "
          "--out TABLE")
    return 0


def cmd_latency_check(args: argparse.Namespace) -> int:
    table = LatencyTable.load(args.table)
    plot = args.plot or str(Path(args.table).with_suffix("")) + "-check.png"
    # before the minutes of measuring, not after them
    check_out_file(plot, "--plot" if args.plot else "the plot (next to --table; set --plot)")
    result = latency_check(table, args.samples, args.seed, plot, progress=progress_bars(args),
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


def cmd_cross_latency(args: argparse.Namespace) -> int:
    timing = Timing(args.warmup, args.repeats, args.min_time, args.rounds)
    text = cross_latency(args.networks, args.out, args.settings, args.table, args.names,
                         timing, progress=progress_bars(args))
    out = Path(args.out)
    print(text, end="")
    print(f"-> {out / 'matrix.md'}, {out / 'matrix.json'}, {out / 'architectures.png'}")
    return 0
