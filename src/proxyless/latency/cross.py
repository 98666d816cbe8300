"""`proxyless cross-latency`: the same networks timed on several settings of this machine.

The paper's point is that the best network depends on the hardware: its GPU model is fast on
a GPU and slow on a phone, its mobile model the other way round. This command shows it for
any set of networks (run, search or train folders, model files, architecture files, the
authors' `net.config` files):

    proxyless cross-latency runs/a runs/b --settings torch:b1:t1 onnxruntime:b1:t1 \\
        torch:b64:t2 --table src/proxyless/reference/mobile_trim.yaml --out cross

A setting is `BACKEND:bBATCH:tTHREADS` on this machine's CPU. Per setting, all networks are
timed together, round-robin by one Timer, so the machine's drift hits them alike; with
`--rounds K` every setting is measured K times, the settings interleaved, and a cell is the
median over its rounds (a note says when the rounds disagree about the fastest network).
Each `--table` adds a column predicted from a lookup table (e.g. the authors' Pixel 1 table).
A network whose folder holds the latency table it was searched with was *found for* that
table's setting (on this machine's CPU: a table of another CPU is another setting): the
matrix marks it, and says per setting whether it is the fastest there. Writes `matrix.md`,
`matrix.json` and `architectures.png` into `--out`. The networks are read by
`proxyless.networks`.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from proxyless.arch import Architecture
from proxyless.config import clip, shorten, write_json_atomic
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.table import Entry, LatencyTable
from proxyless.latency.timer import BACKENDS, Timer, cpu_model
from proxyless.net import build_network
from proxyless.networks import (
    Network,
    cell,
    format_ms,
    load_network,
    name_networks,
    top1_text,
)
from proxyless.runtime import prepare_out_dir
from proxyless.walk import walk

SETTING_FORMAT = "BACKEND:bBATCH:tTHREADS"
NO_SETTINGS = "none"  # `--settings none`: predicted columns only (no measuring at all)
DEFAULT_SETTINGS = ("torch:b1:t1", "onnxruntime:b1:t1", "torch:b64:t2")
SAME_WITHIN = 0.05    # networks within 5% of each other on a setting "do not differ" there
ROUNDS_AGREE = 0.10   # a round that has another network fastest by more than this: a note
HOME_MARK = "†"
MAX_BATCH, MAX_THREADS = 10**6, 4096  # what a latency table's meta accepts
_SETTING = re.compile(r"([a-z]+):b(\d+):t(\d+)")


@dataclass(frozen=True)
class Setting:
    """One way of running networks on this machine's CPU: backend, batch size, threads."""

    backend: str
    batch: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.backend}:b{self.batch}:t{self.threads}"

    @classmethod
    def of_table(cls, meta: dict[str, Any] | None) -> Setting | None:
        """The setting a latency table was measured with, where it was measured on a CPU
        with one of our backends (the reference Pixel 1 table has none). Which CPU is not
        part of it: `found_here` asks whether it was this machine's."""
        if not meta or meta.get("device", "cpu") != "cpu" or meta.get("backend") not in BACKENDS:
            return None
        threads, batch = meta.get("threads"), meta.get("batch", 1)
        if not isinstance(threads, int) or not isinstance(batch, int):
            return None
        return cls(meta["backend"], batch, threads)


def table_text(meta: dict[str, Any] | None) -> str:
    """The setting a latency table (or a folder's recorded latency) was measured with, in
    short: backend, batch, threads and the machine, as far as its meta says. Two figures
    compare only where this text is the same."""
    meta = meta or {}
    machine = next((shorten(meta[key], 64) for key in ("gpu", "cpu", "device_name", "device")
                    if isinstance(meta.get(key), str)), None)
    setting = Setting.of_table(meta)
    if setting is not None:
        head = setting.label
    elif meta.get("backend") in BACKENDS and isinstance(meta.get("device"), str):
        head = f"{meta['backend']}:b{meta.get('batch', 1)} ({meta['device']})"  # a GPU's
    else:
        return machine or "n/a"
    return f"{head} on {machine}" if machine else head


def found_here(meta: dict[str, Any] | None, setting: Setting) -> bool:
    """Whether a network's latency table was measured with `setting` on this very CPU: the
    same backend, batch and threads on another machine (or on one the table does not name)
    is another setting, not the one the network was found for."""
    return (meta is not None and meta.get("device") == "cpu"
            and meta.get("cpu") == cpu_model() and Setting.of_table(meta) == setting)


def parse_setting(text: str) -> Setting:
    """`torch:b1:t1` -> Setting; anything else is an error that says what is wrong."""
    match = _SETTING.fullmatch(text)
    if match is None:
        raise ProxylessError(f"--settings {clip(text)!r}: expected {SETTING_FORMAT}, e.g. "
                             f"torch:b1:t1 or onnxruntime:b64:t2 (or '{NO_SETTINGS}' to only "
                             "predict from --table)")
    backend, batch, threads = match.group(1), int(match.group(2)), int(match.group(3))
    if backend not in BACKENDS:
        raise ProxylessError(f"--settings {text!r}: unknown backend {backend!r}; expected one "
                             f"of {', '.join(BACKENDS)}")
    if not (1 <= batch <= MAX_BATCH and 1 <= threads <= MAX_THREADS):
        raise ProxylessError(f"--settings {text!r}: batch (b) must be a whole number from 1 to "
                             f"{MAX_BATCH:,} and threads (t) from 1 to {MAX_THREADS}")
    return Setting(backend, batch, threads)


def parse_settings(texts: list[str]) -> list[Setting]:
    """The settings of `--settings` in order; `none` (alone) gives none; repeats refused."""
    if texts == [NO_SETTINGS]:
        return []
    settings = [parse_setting(text) for text in texts]
    labels = [s.label for s in settings]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ProxylessError(f"--settings names {', '.join(repeated)} more than once; give "
                             "each setting once")
    return settings


@dataclass(frozen=True)
class Timing:
    """How long each setting measures (see `Timer`), and how many times (`rounds`): a shared
    machine's speed moves by tens of percent between minutes, which one round cannot tell
    from a difference between the networks."""

    warmup: int = 5
    repeats: int = 20
    min_time: float = 3.0
    rounds: int = 1


def measure_setting(archs: list[Architecture], setting: Setting, timing: Timing,
                    progress: bool = False, desc: str | None = None) -> list[Entry]:
    """End-to-end latency (ms per batch) of each network on `setting`, all timed together
    round-robin by one Timer, so that the machine's drift hits them alike."""
    timer = Timer(setting.backend, "cpu", setting.threads, timing.warmup, timing.repeats,
                  timing.min_time)
    torch.manual_seed(0)  # the weights do not change the latency; fixed all the same
    workloads = [(build_network(arch).eval(), arch.space.input_shape(setting.batch))
                 for arch in archs]
    return timer.time(workloads, progress, desc=desc or setting.label)


@dataclass
class Column:
    """One column of the matrix: a setting measured here, or a table's predictions."""

    label: str
    kind: str                   # "measured" or "predicted"
    describe: str               # what the column is, for the legend
    ms: list[float | None]      # per network; None: no figure (see notes)
    notes: list[str | None]     # why a cell is empty
    home: list[bool]            # the network was found for this setting / table
    rounds: list[list[float]] = field(default_factory=list)  # measured: per round, network


def measured_column(networks: list[Network], setting: Setting,
                    rounds: list[list[float]]) -> Column:
    """A setting's column from its rounds (per round, ms per network): each cell the median
    over the rounds, which one slow minute of the machine does not move."""
    per = "" if setting.batch == 1 else f" (ms per batch of {setting.batch})"
    describe = (f"measured here: {setting.backend}, batch {setting.batch}{per}, "
                f"{setting.threads} thread(s)")
    medians: list[float | None] = [statistics.median(figures)
                                   for figures in zip(*rounds, strict=True)]
    return Column(setting.label, "measured", describe, medians, [None] * len(networks),
                  [found_here(n.table_meta, setting) for n in networks], rounds)


def measured_columns(networks: list[Network], settings: list[Setting], timing: Timing,
                     progress: bool) -> list[Column]:
    """Each setting measured `timing.rounds` times, the settings interleaved (A, B, C, then
    A, B, C again): a slow spell of the shared machine then falls on several settings'
    rounds rather than on all of one setting's."""
    archs = [n.arch for n in networks]
    rounds: dict[Setting, list[list[float]]] = {setting: [] for setting in settings}
    for number in range(1, timing.rounds + 1):
        for setting in settings:
            desc = setting.label if timing.rounds == 1 else \
                f"{setting.label} round {number}/{timing.rounds}"
            entries = measure_setting(archs, setting, timing, progress, desc)
            rounds[setting].append([e.ms for e in entries])
    return [measured_column(networks, setting, rounds[setting]) for setting in settings]


def spreads(column: Column) -> list[float | None]:
    """Per network, its slowest round over its fastest (1.0: the rounds agree); None for a
    predicted column."""
    if not column.rounds:
        return [None] * len(column.ms)
    return [max(figures) / min(figures) for figures in zip(*column.rounds, strict=True)]


def round_winners(column: Column) -> list[int]:
    """The fastest network of each round."""
    return [min(range(len(figures)), key=figures.__getitem__) for figures in column.rounds]


def _missing_layers(table: LatencyTable, arch: Architecture) -> str | None:
    """Why `table` cannot predict `arch`, or None when it holds every layer of it."""
    keys = [layer.key for layer in walk(arch) if layer.key]
    missing = [key for key in keys if key not in table.entries]
    if not missing:
        return None
    return (f"the table lacks {len(missing)} of its {len(keys)} layers (e.g. {missing[0]}): "
            "another space")


def _same_table(meta: dict[str, Any] | None, table: LatencyTable) -> bool:
    """Whether a network's own table is `table` (a run keeps a copy: compared without paths)."""
    def plain(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if k != "path"}
    return meta is not None and plain(meta) == plain(table.meta)


def predicted_column(networks: list[Network], label: str, path: str,
                     table: LatencyTable) -> Column:
    """A table's prediction for every network whose layers it holds (n/a, with the reason,
    for the others: a table of another space)."""
    ms: list[float | None] = []
    notes: list[str | None] = []
    for network in networks:
        problem = _missing_layers(table, network.arch)
        if problem is None:
            try:
                ms.append(latency_model(table, network.arch.space).predict(network.arch))
            except ProxylessError as err:  # a candidate of its space the table lacks
                problem = str(err)
        if problem is not None:
            ms.append(None)
        notes.append(problem)
    describe = f"predicted from the latency table {path} ({table_text(table.meta)})"
    return Column(label, "predicted", describe, ms, notes,
                  [_same_table(n.table_meta, table) for n in networks])


def distinct_labels(paths: list[str]) -> list[str]:
    """Table columns by file name; the full path where two tables share a name."""
    names = [Path(p).name for p in paths]
    return [name if names.count(name) == 1 else p for name, p in zip(names, paths, strict=True)]


def fastest(column: Column) -> int | None:
    known = [(ms, i) for i, ms in enumerate(column.ms) if ms is not None]
    return min(known)[1] if known else None


def verdict(column: Column, names: list[str]) -> str:
    """One line: which network is fastest on this column, and whether it is the one found
    for it; or, plainly, that the networks do not differ there."""
    best = fastest(column)
    if best is None:
        return f"- `{column.label}`: no network has a figure here (see the notes)"
    known = [ms for ms in column.ms if ms is not None]
    if len(known) == 1:
        return f"- `{column.label}`: only **{names[best]}** has a figure here (see the notes)"
    if max(known) <= (1 + SAME_WITHIN) * min(known):
        return (f"- `{column.label}`: the networks do not differ on {column.label} (all within "
                f"{SAME_WITHIN:.0%} of each other)")
    line = f"- `{column.label}`: fastest is **{names[best]}**"
    homes = [i for i, home in enumerate(column.home) if home]
    if best in homes:
        return line + ", the network found for this setting"
    if not homes:
        return line + "; none of these networks was found for this setting"
    others = ", ".join(f"{names[i]} (x{column.ms[i] / column.ms[best]:.2f})" for i in homes
                       if column.ms[i] is not None)
    return line + f", not the one found for this setting: {others or 'n/a'}"


def round_disagreement(column: Column, names: list[str]) -> str | None:
    """A note when a round had another network fastest by more than `ROUNDS_AGREE`: the
    column's verdict (on the medians) then rests on a machine that changed its mind."""
    best = fastest(column)
    if best is None or len(column.rounds) < 2:
        return None
    against = [f"round {number}: **{names[winner]}** fastest, {names[best]} "
               f"x{figures[best] / figures[winner]:.2f}"
               for number, (figures, winner) in enumerate(
                   zip(column.rounds, round_winners(column), strict=True), start=1)
               if figures[best] > (1 + ROUNDS_AGREE) * figures[winner]]
    if not against:
        return None
    return (f"- note: the rounds of `{column.label}` disagree by more than "
            f"{ROUNDS_AGREE:.0%} about the fastest network ({'; '.join(against)}); its "
            "verdict (on the medians) is not firm: more --rounds or a quieter machine")


def _cell(column: Column, index: int) -> str:
    ms = column.ms[index]
    home = f" {HOME_MARK}" if column.home[index] else ""
    if ms is None:
        return "n/a" + home
    text = f"{format_ms(ms)} ms x{ms / column.ms[fastest(column)]:.2f}"
    return (f"**{text}**" if index == fastest(column) else text) + home


def _intro(columns: list[Column], timing: Timing, date: str) -> str:
    """How the figures were obtained and how to read a cell."""
    how = ""
    if any(c.kind == "measured" for c in columns):
        how = (f"Measured on this machine ({cpu_model()}), {date}: per setting, all networks "
               f"timed together round-robin (warm-up {timing.warmup}, at least "
               f"{timing.repeats} rounds and {timing.min_time:g} s), 10th percentile. ")
        if timing.rounds > 1:
            how += (f"Each setting measured {timing.rounds} times, the settings interleaved; "
                    "a cell is the median over those rounds (each round and the spread: "
                    "matrix.json). ")
    if any(c.kind == "predicted" for c in columns):
        how += "Predicted columns: sums of a latency table's entries (see Columns). "
    return (how + "Each cell: ms and the ratio to the fastest in its column (bold). "
            f"{HOME_MARK}: the setting the network was found for (the latency table it was "
            "searched with; a measured setting only where that table is of this CPU).")


def matrix_markdown(networks: list[Network], columns: list[Column], timing: Timing,
                    date: str) -> str:
    names = [n.name for n in networks]
    lines = [f"# Latency of {len(networks)} networks across settings", "",
             _intro(columns, timing, date), "",
             "| network | test top-1 | " + " | ".join(c.label for c in columns) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    for i, network in enumerate(networks):
        cells = [cell(network.name), top1_text(network), *(_cell(c, i) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    disagreements = [round_disagreement(c, names) for c in columns]
    lines += ["", "## Which network is fastest where", "",
              *(verdict(c, names) for c in columns), *filter(None, disagreements),
              "", "## Columns", "",
              *(f"- `{c.label}`: {c.describe}" for c in columns), "", "## Networks", "",
              *(f"- {n.name}: {n.kind} {n.source}, space {n.arch.space.name} "
                f"({n.arch.space.input_size}x{n.arch.space.input_size}), `{cell(n.arch.encode())}`"
                for n in networks)]
    empty = [f"- {names[i]} on `{c.label}`: {note}" for c in columns
             for i, note in enumerate(c.notes) if note]
    if empty:
        lines += ["", "## Cells without a figure", "", *empty]
    return "\n".join(lines) + "\n"


def matrix_json(networks: list[Network], columns: list[Column], timing: Timing,
                date: str) -> dict[str, Any]:
    """Every figure of the matrix, as plain data."""
    return {
        "machine": cpu_model(), "date": date, "timing": asdict(timing),
        "columns": [{"label": c.label, "kind": c.kind, "describe": c.describe,
                     "fastest": None if fastest(c) is None else networks[fastest(c)].name,
                     "fastest_per_round": [networks[i].name for i in round_winners(c)]}
                    for c in columns],
        "networks": [{"name": n.name, "kind": n.kind, "source": str(n.source),
                      "arch": n.arch.encode(), "space": n.arch.space.name,
                      "test_top1": n.test_top1,
                      "found_for": [c.label for c in columns if c.home[i]],
                      "ms": {c.label: c.ms[i] for c in columns},
                      "rounds_ms": {c.label: [r[i] for r in c.rounds] for c in columns
                                    if c.rounds},
                      "spread": {c.label: spreads(c)[i] for c in columns if c.rounds},
                      "notes": {c.label: c.notes[i] for c in columns if c.notes[i]}}
                     for i, n in enumerate(networks)],
    }


def _picture_label(network: Network, columns: list[Column], index: int) -> str:
    figures = ", ".join(f"{c.label} {format_ms(c.ms[index])} ms" for c in columns
                        if c.ms[index] is not None)
    return f"{network.name}: {figures}" if figures else network.name


def cross_latency(networks: list[Network], settings: list[Setting],
                  tables: list[tuple[str, LatencyTable]], timing: Timing,
                  progress: bool = True) -> list[Column]:
    """The matrix's columns: each setting measured here, then each table's predictions."""
    labels = distinct_labels([path for path, _ in tables])
    return (measured_columns(networks, settings, timing, progress)
            + [predicted_column(networks, label, path, table)
               for label, (path, table) in zip(labels, tables, strict=True)])


def write_matrix(out: Path, networks: list[Network], columns: list[Column],
                 timing: Timing) -> str:
    """matrix.md, matrix.json and architectures.png in `out`; returns the markdown."""
    from proxyless.report import architectures_side_by_side

    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = matrix_markdown(networks, columns, timing, date)
    (out / "matrix.md").write_text(text, encoding="utf-8")
    write_json_atomic(out / "matrix.json", matrix_json(networks, columns, timing, date))
    architectures_side_by_side([n.arch for n in networks],
                               [_picture_label(n, columns, i) for i, n in enumerate(networks)],
                               out / "architectures.png",
                               "the networks, block by block (colour: kernel size; box "
                               "size: expansion)")
    return text


def add_cross_latency_parser(sub) -> None:
    from proxyless.cli import min_time, nonneg_int, positive_int

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


def cmd_cross_latency(args: argparse.Namespace) -> int:
    settings = parse_settings(args.settings)
    tables = [(path, LatencyTable.load(path)) for path in args.table]
    if not settings and not tables:
        raise ProxylessError(f"--settings {NO_SETTINGS} and no --table: nothing to compare; "
                             "give a setting to measure or a table to predict from")
    out = prepare_out_dir(args.out, "--out", create=False)  # checked before the measuring
    networks = name_networks([load_network(path) for path in args.networks], args.names)
    timing = Timing(args.warmup, args.repeats, args.min_time, args.rounds)
    columns = cross_latency(networks, settings, tables, timing, not args.no_progress)
    prepare_out_dir(out)
    print(write_matrix(out, networks, columns, timing), end="")
    print(f"-> {out / 'matrix.md'}, {out / 'matrix.json'}, {out / 'architectures.png'}")
    return 0
