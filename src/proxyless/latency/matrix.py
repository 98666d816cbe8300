"""The cross-latency matrix's columns: a setting measured on this machine (the median over
its rounds) or a latency table's predictions; and per column, which network is fastest and
whether it is the one found for that setting.

A network whose folder holds the latency table it was searched with was *found for* that
table's setting (on this machine's CPU: a table of another CPU is another setting).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.settings import Setting, Timing, found_here, measure_setting, table_text
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture
from proxyless.model.layers import walk
from proxyless.pipeline.run_folders import Network

SAME_WITHIN = 0.05    # networks within 5% of each other on a setting "do not differ" there
ROUNDS_AGREE = 0.10   # a round that has another network fastest by more than this: a note


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


def matrix_columns(networks: list[Network], settings: list[Setting],
                   tables: list[tuple[str, LatencyTable]], timing: Timing,
                   progress: bool = True) -> list[Column]:
    """The matrix's columns: each setting measured here, then each table's predictions."""
    labels = distinct_labels([path for path, _ in tables])
    return (measured_columns(networks, settings, timing, progress)
            + [predicted_column(networks, label, path, table)
               for label, (path, table) in zip(labels, tables, strict=True)])
