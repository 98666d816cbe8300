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
`proxyless.pipeline.run_folders`, the settings timed by `settings.py`, the columns made by
`matrix.py`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from proxyless.engine.runtime import prepare_out_dir
from proxyless.errors import ProxylessError
from proxyless.files import replace_atomically, write_json_atomic
from proxyless.latency.matrix import (
    Column,
    fastest,
    matrix_columns,
    round_disagreement,
    round_winners,
    spreads,
    verdict,
)
from proxyless.latency.settings import (
    DEFAULT_SETTINGS,
    NO_SETTINGS,
    Timing,
    parse_settings,
)
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import cpu_model
from proxyless.pipeline.plots import architectures_side_by_side
from proxyless.pipeline.run_folders import (
    Network,
    cell,
    format_ms,
    load_network,
    name_networks,
    top1_text,
)

HOME_MARK = "†"


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


def write_matrix(out: Path, networks: list[Network], columns: list[Column],
                 timing: Timing) -> str:
    """matrix.md, matrix.json and architectures.png in `out`; returns the markdown."""
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = matrix_markdown(networks, columns, timing, date)
    replace_atomically(out / "matrix.md", lambda f: f.write(text.encode("utf-8")))
    write_json_atomic(out / "matrix.json", matrix_json(networks, columns, timing, date))
    architectures_side_by_side([n.arch for n in networks],
                               [_picture_label(n, columns, i) for i, n in enumerate(networks)],
                               out / "architectures.png",
                               "the networks, block by block (colour: kernel size; box "
                               "size: expansion)")
    return text


def cross_latency(networks: Sequence[str | Path], out: str | Path,
                  settings: Sequence[str] = DEFAULT_SETTINGS, tables: Sequence[str | Path] = (),
                  names: Sequence[str] | None = None, timing: Timing | None = None,
                  progress: bool = True) -> str:
    """Time the `networks` (run, search or train folders, model files, architecture files,
    reference net.config files) on each of `settings` (`BACKEND:bBATCH:tTHREADS`, or
    `["none"]`), add a column predicted from each latency table of `tables`, and write
    matrix.md, matrix.json and architectures.png into `out`; returns the markdown. Everything
    is checked before the minutes of measuring. `timing`: how long each setting is timed
    (default `Timing()`)."""
    timing = timing or Timing()
    # one string is one setting or table, not a sequence of characters
    parsed = parse_settings([settings] if isinstance(settings, str) else list(settings))
    loaded = [(str(path), LatencyTable.load(path))
              for path in ([tables] if isinstance(tables, str | Path) else tables)]
    if not parsed and not loaded:
        raise ProxylessError(f"--settings {NO_SETTINGS} and no --table: nothing to compare; "
                             "give a setting to measure or a table to predict from")
    folder = prepare_out_dir(out, "--out", create=False)  # checked before the measuring
    found = name_networks([load_network(path) for path in networks],
                          None if names is None else list(names))
    columns = matrix_columns(found, parsed, loaded, timing, progress)
    prepare_out_dir(folder)
    return write_matrix(folder, found, columns, timing)
