"""`proxyless compare`: a Pareto picture for any set of finished folders.

    proxyless compare runs/a runs/b runs/c/search trained/d --out compare [--measure]

Each folder is a `proxyless run` (results.json), a `proxyless train` (final.json) or a
`proxyless search` (summary.json), told apart by the files in it. For each network: test
top-1, end-to-end latency, predicted latency, MACs, parameters. Latency is what each folder
recorded (measured on its table's device, divided by the speed factor of the moment: the
table's time base), or with `--measure` all networks timed now on this CPU together (torch,
batch 1, one thread), so that runs from different days or machines compare. Writes
`compare.png` (top-1 against latency and against MACs, the Pareto front as a step line) and
`compare.md` (the table, also printed).

Networks of different spaces may be compared (a space column says which is which); networks
trained on different data sets are compared with a warning, since their accuracies do not
measure the same thing. A search folder has no test top-1 (only its supernet's validation
top-1), so it is left off the accuracy plots but listed.

`load_network` (folders, model files, architecture files) and `name_networks` serve
`proxyless cross-latency` too.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from proxyless.arch import Architecture, load_architecture
from proxyless.config import clip, excerpt, read_mapping, shorten
from proxyless.errors import ProxylessError
from proxyless.walk import count_macs, count_params

RUN, TRAIN, SEARCH = "run folder", "train folder", "search folder"
MODEL_FILE, ARCH_FILE = "model file", "architecture file"
MODEL_SUFFIXES = (".pt", ".pth")
_TABLE_FIELDS = ("backend", "threads", "batch")


@dataclass(frozen=True)
class Network:
    """One network to compare, with what its folder or file recorded about it."""

    name: str
    source: Path
    kind: str                           # RUN, TRAIN, SEARCH, MODEL_FILE or ARCH_FILE
    arch: Architecture
    test_top1: float | None = None
    val_top1: float | None = None       # a search's supernet (argmax) validation top-1
    data: str | None = None             # the data set it was trained or searched on
    recorded_ms: float | None = None    # end to end, on its latency table's time base
    predicted_ms: float | None = None
    table_meta: dict[str, Any] | None = None  # the latency table it was searched with


# -- reading folders and files ------------------------------------------------------------
def _number(data: dict, key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ProxylessError(f"{where}: {key} must be a number, got {excerpt(value)}; the "
                             "file is damaged (redo the step that wrote it)")
    return float(value)


def _on_time_base(data: dict, where: str) -> float | None:
    """measured_ms divided by the speed factor of the moment: the latency at the speed the
    table was measured at, so figures from different moments compare."""
    measured, speed = _number(data, "measured_ms", where), _number(data, "speed_factor", where)
    if measured is None:
        return None
    return measured / speed if speed and speed > 0 else measured


def _data_name(value: Any) -> str | None:
    if isinstance(value, dict):  # a search's config.json: {"name": ..., "source": ...}
        value = value.get("name")
    return value if isinstance(value, str) else None


def _recorded_arch(folder: Path, files: tuple[str, ...], encoding: Any,
                   where: str) -> Architecture:
    """The network with its space, from the first of `files` the folder holds; it must be
    the one the results name (`encoding`), or the folder mixes two runs."""
    for name in files:
        path = folder / name
        if path.is_file():
            arch = load_architecture(path)
            if encoding is not None and arch.encode() != encoding:
                raise ProxylessError(f"{where}: arch {excerpt(encoding)} is not the network of "
                                     f"{path} ({arch.encode()}); the folder mixes two runs")
            return arch
    raise ProxylessError(f"{clip(folder)} lacks {' and '.join(files)}, which hold its "
                         "network's space; give the whole folder its command wrote")


def _table_meta(path: Path) -> dict[str, Any] | None:
    from proxyless.latency.table import LatencyTable

    return LatencyTable.load(path).meta if path.is_file() else None


def _read_run(folder: Path) -> Network:
    path = folder / "results.json"
    results, where = read_mapping(path, "run results"), f"run results {path}"
    arch = _recorded_arch(folder, ("search/arch.json", "retrain/config.json"),
                          results.get("arch"), where)
    meta = _table_meta(folder / "latency_table.json") or {
        **{key: results[key] for key in _TABLE_FIELDS if key in results},
        "device_name": results.get("device")}  # results name the CPU model, not cpu/cuda
    return Network(_default_name(folder), folder, RUN, arch,
                   test_top1=_number(results, "test_top1", where),
                   val_top1=_number(results, "search_val_top1", where),
                   data=_data_name(results.get("data")),
                   recorded_ms=_on_time_base(results, where),
                   predicted_ms=_number(results, "predicted_ms", where), table_meta=meta)


def _read_train(folder: Path) -> Network:
    path = folder / "final.json"
    final, where = read_mapping(path, "training results"), f"training results {path}"
    arch = _recorded_arch(folder, ("config.json",), final.get("arch"), where)
    return Network(_default_name(folder), folder, TRAIN, arch,
                   test_top1=_number(final, "test_top1", where),
                   data=_data_name(final.get("data")))


def _read_search(folder: Path) -> Network:
    path = folder / "summary.json"
    summary, where = read_mapping(path, "search summary"), f"search summary {path}"
    arch = _recorded_arch(folder, ("arch.json",), summary.get("arch"), where)
    config = folder / "config.json"
    data = read_mapping(config, "search config").get("data") if config.is_file() else None
    # inside a run folder the search's table is the run's; alone, only its device is known
    meta = _table_meta(folder.parent / "latency_table.json")
    if meta is None and isinstance(summary.get("table_device"), str):
        meta = {"device_name": summary["table_device"]}
    return Network(_default_name(folder), folder, SEARCH, arch,
                   val_top1=_number(summary, "val_top1", where), data=_data_name(data),
                   recorded_ms=_on_time_base(summary, where),
                   predicted_ms=_number(summary, "predicted_ms", where), table_meta=meta)


_FOLDER_KINDS = (("results.json", _read_run), ("final.json", _read_train),
                 ("summary.json", _read_search))


def read_folder(path: str | Path) -> Network:
    """A finished run, train or search folder, told apart by the files in it."""
    folder = Path(path)
    if folder.is_file():
        raise ProxylessError(f"{clip(folder)} is a file; give the run, train or search folder "
                             "that holds it (`proxyless cross-latency` also takes files)")
    if not folder.is_dir():
        raise ProxylessError(f"{clip(folder)}: no such folder")
    for marker, read in _FOLDER_KINDS:
        if (folder / marker).is_file():
            return read(folder)
    hint = ""
    if (folder / "search" / "summary.json").is_file():
        hint = f" (its search has finished: give {clip(folder / 'search')})"
    raise ProxylessError(f"{clip(folder)} holds none of results.json (a finished `proxyless "
                         "run`), final.json (`proxyless train`) or summary.json (`proxyless "
                         f"search`); give a finished run, train or search folder{hint}")


def _read_file(file: Path) -> Network:
    """A model file (its test top-1 and data set come along) or an architecture file."""
    if file.suffix in MODEL_SUFFIXES:
        from proxyless.deploy.model_file import read_model_file

        info = read_model_file(file)[0]
        return Network(_default_name(file), file, MODEL_FILE, info.arch,
                       test_top1=_number(info.metrics, "test_top1", f"model file {file}"),
                       data=_data_name(info.data))
    return Network(_default_name(file), file, ARCH_FILE, load_architecture(file))


def load_network(path: str | Path) -> Network:
    """A network from a run, train or search folder, a model file or an architecture file
    (ours or a reference net.config)."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise ProxylessError(f"{clip(path)}: no such folder or file; give a run, train or "
                             "search folder, a model file or an architecture file")
    return _read_file(path)


def _default_name(path: Path) -> str:
    """The folder's or file's name; a run's inner `search`/`retrain` and a `model.pt` take
    their parent's name too, which tells more."""
    path = path.resolve()
    if path.name in ("search", "retrain"):
        return f"{path.parent.name}/{path.name}"
    return path.parent.name if path.stem == "model" else (path.stem or path.name)


def name_networks(networks: list[Network], names: list[str] | None) -> list[Network]:
    """The networks under `--names` (one each, distinct), or under their default names made
    distinct (a repeated name gets #2, #3, ...)."""
    if names is not None:
        if len(names) != len(networks):
            raise ProxylessError(f"--names gives {len(names)} names for {len(networks)} "
                                 "networks; give one per network")
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ProxylessError(f"--names {excerpt(names)}: names must be distinct and not "
                                 "empty")
        chosen = list(names)
    else:
        chosen, used = [], set()
        for network in networks:
            name, count = network.name, 1
            while name in used:
                count += 1
                name = f"{network.name}#{count}"
            used.add(name)
            chosen.append(name)
    return [replace(n, name=name) for n, name in zip(networks, chosen, strict=True)]


# -- the comparison -----------------------------------------------------------------------
def pareto_front(points: list[tuple[float | None, float | None]]) -> list[bool | None]:
    """For each (cost, accuracy): whether no other point is at least as cheap and at least as
    accurate, and better in one of them; None where a figure is missing."""
    known = [(i, cost, acc) for i, (cost, acc) in enumerate(points)
             if cost is not None and acc is not None]
    flags: list[bool | None] = [None] * len(points)
    for i, cost, acc in known:
        flags[i] = not any(c <= cost and a >= acc and (c < cost or a > acc)
                           for _, c, a in known)
    return flags


@dataclass(frozen=True)
class Row:
    network: Network
    latency_ms: float | None
    macs: int
    params: int
    front_latency: bool | None  # on the Pareto front of top-1 against latency
    front_macs: bool | None     # ... against MACs


def compare_rows(networks: list[Network], latencies: list[float | None]) -> list[Row]:
    """One row per network, sorted by latency (networks without one last)."""
    macs = [count_macs(n.arch) for n in networks]
    by_latency = pareto_front([(ms, n.test_top1) for ms, n in zip(latencies, networks,
                                                                   strict=True)])
    by_macs = pareto_front([(m, n.test_top1) for m, n in zip(macs, networks, strict=True)])
    rows = [Row(n, ms, m, count_params(n.arch), fl, fm) for n, ms, m, fl, fm
            in zip(networks, latencies, macs, by_latency, by_macs, strict=True)]
    return sorted(rows, key=lambda r: (r.latency_ms is None, r.latency_ms or 0.0, r.network.name))


def table_text(meta: dict[str, Any] | None) -> str:
    """The setting a recorded latency was measured with, in short."""
    from proxyless.latency.cross import Setting

    setting = Setting.of_table(meta)
    if setting is not None:
        return setting.label
    device = (meta or {}).get("device_name") or (meta or {}).get("device")
    return shorten(device, 40) if isinstance(device, str) else "n/a"


def compare_notes(networks: list[Network], measured_now: bool) -> list[str]:
    """What the reader must know before trusting the table: mixed data sets, spaces or
    measuring settings, and the search folders left off the accuracy plots."""
    notes = []
    data = {n.data for n in networks if n.data}
    if len(data) > 1:
        notes.append(f"warning: the networks were trained on different data sets ("
                     f"{', '.join(sorted(data))}): their accuracies do not compare")
    spaces = {n.arch.space.name for n in networks}
    if len(spaces) > 1:
        notes.append(f"the networks come from {len(spaces)} spaces ({', '.join(sorted(spaces))}"
                     "): see the space column")
    recorded = {(table_text(n.table_meta), (n.table_meta or {}).get("cpu"))
                for n in networks if n.recorded_ms is not None}
    if not measured_now and len(recorded) > 1:
        notes.append("warning: the recorded latencies were measured with different settings "
                     "or machines; they do not compare: --measure times all networks now")
    searches = [n.name for n in networks if n.kind == SEARCH]
    if searches:
        notes.append(f"{', '.join(searches)}: search folder(s), without a retrained test top-1 "
                     "(their supernet's validation top-1 is shown); left off the plots' "
                     "accuracy axes")
    if not measured_now and any(n.recorded_ms is None for n in networks):
        notes.append("networks without a recorded latency (train folders) are left off the "
                     "latency plot: --measure times all of them now")
    return notes


def format_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def cell(text: str) -> str:
    """Text for a markdown table cell: a bare | would split it."""
    return text.replace("|", "\\|")


def top1_text(network: Network) -> str:
    if network.test_top1 is not None:
        return f"{network.test_top1:.2f}%"
    if network.val_top1 is not None:
        return f"n/a (supernet val {network.val_top1:.2f}%)"
    return "n/a"


def _flag(value: bool | None) -> str:
    return "n/a" if value is None else "**yes**" if value else "no"


def _optional_ms(ms: float | None) -> str:
    return "n/a" if ms is None else format_ms(ms)


def compare_markdown(rows: list[Row], latency_how: str, notes: list[str],
                     measured_now: bool) -> str:
    spaces = len({r.network.arch.space.name for r in rows}) > 1
    head = ["network", *(["space"] if spaces else []), "test top-1", "latency (ms)",
            "predicted (ms)", "MACs (M)", "params (M)", *([] if measured_now else
                                                         ["recorded on"]),
            "Pareto (latency)", "Pareto (MACs)", "architecture"]
    lines = [f"# Comparing {len(rows)} networks", "", f"Latency: {latency_how}. Pareto: no "
             "other network is both at least as fast (or as small) and at least as accurate.",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        n = r.network
        cells = [cell(n.name), *([cell(n.arch.space.name)] if spaces else []), top1_text(n),
                 _optional_ms(r.latency_ms), _optional_ms(n.predicted_ms),
                 f"{r.macs / 1e6:.2f}", f"{r.params / 1e6:.3f}",
                 *([] if measured_now else [cell(table_text(n.table_meta))]),
                 _flag(r.front_latency), _flag(r.front_macs), f"`{cell(n.arch.encode())}`"]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _latencies(networks: list[Network], measure: bool, min_time: float,
               progress: bool) -> tuple[list[float | None], str]:
    """Each network's latency and how it was obtained: measured now, all together on this
    CPU, or as each folder recorded it."""
    if not measure:
        return ([n.recorded_ms for n in networks],
                "as each folder recorded it (end to end on its latency table's device, at the "
                "table's speed)")
    from proxyless.latency.cross import Setting, Timing, measure_setting
    from proxyless.latency.timer import cpu_model

    entries = measure_setting([n.arch for n in networks], Setting("torch", 1, 1),
                              Timing(min_time=min_time), progress)
    return ([e.ms for e in entries],
            f"measured now on {cpu_model()}, torch, batch 1, 1 thread, all networks timed "
            "together round-robin (10th percentile)")


def plot_compare(rows: list[Row], path: Path, measured_now: bool) -> Path:
    from proxyless.report import pareto_panels

    names = [r.network.name for r in rows]
    top1 = [r.network.test_top1 for r in rows]
    panels = [("latency (ms)", [r.latency_ms for r in rows], [r.front_latency for r in rows]),
              ("MACs (M)", [r.macs / 1e6 for r in rows], [r.front_macs for r in rows])]
    how = "measured now on this CPU (torch, batch 1, 1 thread)" if measured_now \
        else "as each folder recorded it"
    return pareto_panels(names, top1, panels, path, f"{len(rows)} networks: test top-1 against "
                         f"latency ({how}) and MACs")


def add_compare_parser(sub) -> None:
    from proxyless.cli import min_time

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
    from proxyless.runtime import prepare_out_dir

    out = prepare_out_dir(args.out, "--out", create=False)  # checked before the measuring
    networks = name_networks([read_folder(folder) for folder in args.folders], args.names)
    latencies, how = _latencies(networks, args.measure, args.min_time, not args.no_progress)
    rows = compare_rows(networks, latencies)
    notes = compare_notes(networks, args.measure)
    for note in notes:
        if note.startswith("warning:"):
            print(f"proxyless: {note}", file=sys.stderr)
    prepare_out_dir(out)
    text = compare_markdown(rows, how, notes, args.measure)
    (out / "compare.md").write_text(text, encoding="utf-8")
    plot_compare(rows, out / "compare.png", args.measure)
    print(text + f"-> {out / 'compare.md'}, {out / 'compare.png'}")
    return 0
