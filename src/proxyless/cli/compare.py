"""`proxyless compare`: a Pareto picture and table of finished run, train or search folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxyless.cli.options import min_time, progress_bars
from proxyless.pipeline.pareto import compare_folders


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="a Pareto picture (top-1 against latency and MACs) of "
                                       "finished run, train or search folders")
    p.add_argument("folders", nargs="+", metavar="RUN_DIR",
                   help="a `proxyless run`, `train` or `search` folder")
    p.add_argument("--out", default="compare",
                   help="folder for compare.png and compare.md (default: ./compare)")
    p.add_argument("--names", nargs="+", default=None,
                   help="one name per folder (default: the folder names)")
    p.add_argument("--measure", action="store_true",
                   help="time all networks now on this CPU, together (torch, batch 1, 1 "
                        "thread), instead of using the latencies the folders recorded")
    p.add_argument("--min-time", type=min_time, default=3.0,
                   help="with --measure: seconds of round-robin timing, at least (default 3)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cmd_compare(args: argparse.Namespace) -> int:
    text = compare_folders(args.folders, args.out, args.names, args.measure, args.min_time,
                           progress=progress_bars(args))
    print(text + f"-> {Path(args.out) / 'compare.md'}, {Path(args.out) / 'compare.png'}")
    return 0
