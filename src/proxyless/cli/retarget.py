"""`proxyless retarget`: a finished search's trained supernet searched again, by architecture
steps alone, for other latency targets, devices or runtimes (`proxyless.search.retarget`).

    proxyless retarget runs/a/search --target-ms 0.15 0.2 0.3 --out runs/a-targets
    proxyless retarget runs/a --profile-backend torch --profile-batch 64 --out runs/a-torch64
    proxyless retarget runs/a --table phone.json --target-ms 20 --out runs/a-phone

With several targets or tables, each pair gets a folder under --out and `compare.png` /
`compare.md` set them side by side (latency against the supernet's validation top-1).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from proxyless.cli.options import (
    positive_float,
    progress_bars,
    require_out,
    run_folder,
    workers_int,
)
from proxyless.cli.search import add_profile_args, profile_setting, summary_text
from proxyless.cli.settings import add_runtime_args, add_settings, settings_from_args
from proxyless.data import load_data
from proxyless.data.decode import DEFAULT_SCALE
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import latency_model
from proxyless.latency.table import LatencyTable
from proxyless.pipeline.plots import retarget_picture
from proxyless.pipeline.run import default_target
from proxyless.search.config import SearchConfig
from proxyless.search.outputs import SearchSummary
from proxyless.search.retarget import (
    ALPHA_STARTS,
    FinishedSearch,
    finished_search,
    retarget_config,
    retarget_job,
)

ARCH_STEP_SETTINGS = ("strategy", "loss", "estimator", "constraint", "dual_lr", "target_floor",
                      "arch_lr", "arch_every", "decide", "zero_alpha", "reinforce_samples",
                      "reward", "reward_w", "measure_latency", "epochs")
TARGET_FRACTION = 0.35  # without a target: as `run` chooses one (RunConfig.target_fraction)


def add_retarget_parser(sub) -> None:
    p = sub.add_parser("retarget", help="re-target a finished search's trained supernet to "
                                        "other latency targets, devices or runtimes, in "
                                        "minutes (architecture steps only)")
    p.add_argument("search_dir", metavar="SEARCH_DIR",
                   help="a finished `proxyless search` folder, or a `proxyless run` folder "
                        "(its search/)")
    p.add_argument("--out", default=None,
                   help="folder (required); with several targets or tables, one folder per "
                        "target in it, and compare.png")
    p.add_argument("--resume", action="store_true",
                   help="continue in --out (finished targets are kept)")
    p.add_argument("--from", dest="alpha_start", choices=ALPHA_STARTS, default="final",
                   help="α starts from the search's final α (default) or uniform")
    g = p.add_argument_group("targets", "what the network is re-targeted to")
    g.add_argument("--table", nargs="+", default=None, metavar="TABLE",
                   help="latency table(s) of the supernet's space (default: this device's, "
                        "profiled or cached as --profile-* say)")
    g.add_argument("--target-ms", nargs="+", type=positive_float, default=None,
                   metavar="MS", help="latency target(s) in ms; with several tables, one "
                                      "per table or one for all (default: each table's "
                                      f"fastest network + {TARGET_FRACTION:g} of its range, "
                                      "as `run` chooses)")
    g.add_argument("--target-mflops", nargs="+", type=positive_float, default=None,
                   metavar="MFLOPS", help="multiply-add target(s) in millions, instead")
    a = p.add_argument_group("architecture steps", "as the search's unless given")
    add_settings(a, SearchConfig, ARCH_STEP_SETTINGS, dict.fromkeys(ARCH_STEP_SETTINGS),
                 {name: " (default: the search's)" for name in ARCH_STEP_SETTINGS}
                 | {"epochs": " (default: as many as the search's epochs with α steps)"})
    add_profile_args(p)
    d = p.add_argument_group("data", "the search's (its validation split) unless given")
    d.add_argument("--data", default=None, help="dataset name or path (default: the search's)")
    d.add_argument("--data-dir", default=None, help="folder holding the dataset files "
                                                    "(default: the search's)")
    d.add_argument("--workers", type=workers_int, default=None,
                   help="processes decoding a streamed image folder (default: the search's)")
    add_runtime_args(p)
    p.set_defaults(seed=None)


def search_options(folder: Path) -> dict:
    """Where a search folder's data came from: a re-targeting's config.json records it; a
    search's (or a run's, for its search/) config.yaml holds its options; empty where
    neither does (a search made from Python)."""
    try:
        recorded = read_mapping(folder / "config.json", "search config").get("data", {})
    except ProxylessError:
        recorded = {}
    if isinstance(recorded, dict) and isinstance(recorded.get("options"), dict):
        return recorded["options"]
    candidates = [folder / "config.yaml"]
    if folder.name == "search":
        candidates.append(folder.parent / "config.yaml")
    for candidate in candidates:
        if candidate.is_file():
            options = read_mapping(candidate, "configuration").get("options", {})
            return options if isinstance(options, dict) else {}
    return {}


def retarget_data(args: argparse.Namespace, searched: FinishedSearch) -> tuple[object, dict]:
    """The search's data, as its folder recorded it, split as it was (its seed and
    validation size); --data/--data-dir/--workers where given. Also the options it was
    read with, for the re-targeting's folder to record."""
    recorded = search_options(searched.folder)
    transform = searched.transform
    options = {"data": args.data or recorded.get("data"),
               "data_dir": args.data_dir or recorded.get("data_dir"),
               "data_mode": recorded.get("data_mode", transform.get("mode", "auto")),
               "crop_scale": list(recorded.get("crop_scale",
                                               transform.get("crop_scale", DEFAULT_SCALE))),
               "workers": args.workers if args.workers is not None
               else recorded.get("workers")}
    config, space = searched.config, searched.space
    data = load_data(options["data"], options["data_dir"], val_size=config.val_size,
                     seed=config.seed, image_size=space.input_size,
                     channels=space.in_channels, data_mode=options["data_mode"],
                     crop_scale=tuple(options["crop_scale"]), workers=options["workers"])
    try:
        name = read_mapping(searched.folder / "config.json", "search config")["data"]["name"]
    except (ProxylessError, KeyError, TypeError):
        name = None
    if name and name != data.name and args.data is None:
        raise ProxylessError(f"the supernet of {searched.folder} was trained on {name!r}, "
                             f"but {data.name!r} was found; give its --data and --data-dir")
    return data, options


def _pairs(args: argparse.Namespace) -> list[tuple[str | None, float | None]]:
    """(table, target) pairs: every target for one table, one target for every table, or
    one target per table."""
    tables = args.table or [None]
    targets = args.target_ms or args.target_mflops or [None]
    if len(tables) == 1 or len(targets) == 1:
        return list(itertools.product(tables, targets))
    if len(tables) == len(targets):
        return list(zip(tables, targets, strict=True))
    raise ProxylessError(f"{len(tables)} tables and {len(targets)} targets: give one target "
                         "per table, one for all, or one table")


def _jobs(args: argparse.Namespace) -> list[tuple[str | None, float | None]]:
    """(table, target) pairs, each once and each to its own folder."""
    jobs = _pairs(args)
    if len(set(jobs)) < len(jobs):
        raise ProxylessError("a table and target given twice: each pair once")
    stems = [Path(t).stem for t in {t for t, _ in jobs if t}]
    if len(set(stems)) < len(stems):
        raise ProxylessError("two --table files of the same name: their folders would be one; "
                             "rename one")
    return jobs


def _checked_tables(args: argparse.Namespace, searched: FinishedSearch,
                    jobs: list[tuple[str | None, float | None]]) -> dict[str, LatencyTable]:
    """The tables given, each of the supernet's space; and --out not the search's folder."""
    own = searched.folder
    if Path(args.out).resolve() in (own, own.parent if own.name == "search" else own):
        raise ProxylessError(f"--out {args.out} is the search's own folder; re-target into "
                             "another one (the search's outputs stay as they are)")
    tables = {path: LatencyTable.load(path) for path in {t for t, _ in jobs if t}}
    for path, table in tables.items():
        try:
            latency_model(table, searched.space)
        except ProxylessError as err:
            raise ProxylessError(f"--table {path}: {err}") from None
    return tables


def _label(table: str | None, target: float, unit: str, several_tables: bool,
           setting: str) -> str:
    where = (Path(table).stem if table else setting) + "-" if several_tables else ""
    return f"{where}{target:g}{unit}"


def cmd_retarget(args: argparse.Namespace) -> int:
    require_out(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ProxylessError("retarget runs in one process (its architecture steps take "
                             "minutes); run it without torchrun")
    if args.target_ms is not None and args.target_mflops is not None:
        raise ProxylessError("give --target-ms or --target-mflops, not both")
    jobs = _jobs(args)
    metric = "flops" if args.target_mflops is not None else "latency"
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731 - stdout holds the results
    searched = finished_search(args.search_dir)
    tables = _checked_tables(args, searched, jobs)
    settings = {k: v for k, v in settings_from_args(SearchConfig, args).items()
                if k in ARCH_STEP_SETTINGS or k in SearchConfig.RESUMABLE or k == "seed"}
    # every setting checked before any data is read or anything profiled
    retarget_config(searched.config, searched.retargeted, **settings, metric=metric,
                    target=1.0).validate()
    profile = profile_setting(args)
    out = Path(args.out)
    several = len(jobs) > 1
    summaries: list[tuple[str, SearchSummary]] = []
    with run_folder(args.out):
        data, data_options = retarget_data(args, searched)
        for table_path, target in jobs:
            table = tables.get(table_path) if table_path else None
            if table is None and metric == "latency":
                table, _ = cached_table(searched.space, profile, progress_bars(args), log)
            if target is None and args.resume and not several:
                target = _earlier_target(out)  # the one it began with, whatever the cache
            if target is None:
                if table is None:
                    raise ProxylessError("give --target-ms or --target-mflops")
                target = default_target(latency_model(table, searched.space), TARGET_FRACTION)
                log(f"latency target: {target} ms (chosen from the table's range)")
            unit = "ms" if metric == "latency" else "mflops"
            name = _label(table_path, target, unit, len(tables) > 1,
                          f"{profile.backend}-b{profile.batch}")
            folder = out / name if several else out
            config = retarget_config(searched.config, searched.retargeted, **settings,
                                     metric=metric, target=target)
            log(f"re-targeting {searched.folder} to {target:g} {unit}"
                + (f" ({table_path})" if table_path else "") + f" -> {folder}")
            summary = retarget_job(searched, data, config, folder, table, profile,
                                   args.alpha_start, args.resume, progress_bars(args), log,
                                   data_options)
            print(summary_text(summary, folder))
            summaries.append((name, summary))
    if several:
        text = compare_text(summaries)
        (out / "compare.md").write_text(text, encoding="utf-8")
        retarget_picture([s for _, s in summaries], [n for n, _ in summaries],
                         out / "compare.png", f"re-targeted from {searched.folder}")
        print(text + f"-> {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


def _earlier_target(out: Path) -> float | None:
    """The target a re-targeting in `out` began with (its config.json), if any."""
    try:
        target = read_mapping(out / "config.json", "retarget config")["search"]["target"]
    except (ProxylessError, KeyError, TypeError):
        return None
    return target if isinstance(target, (int, float)) and target > 0 else None


def compare_text(summaries: list[tuple[str, SearchSummary]]) -> str:
    """The re-targeted networks side by side, as markdown."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["| folder | target | predicted ms | measured ms | val top-1 (supernet) | "
             "MMACs | network |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summaries:
        target = (f"{s.target_ms:g} ms" if s.target_ms is not None
                  else f"{s.target_mflops:g} MFLOPs")
        lines.append(f"| {name} | {target} | {ms(s.predicted_ms)} | {ms(s.measured_ms)} | "
                     f"{s.val_top1:.2f}% | {s.macs / 1e6:.1f} | {s.arch} |")
    return "\n".join(lines) + "\n"

