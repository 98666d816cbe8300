"""`proxyless compare`: a Pareto picture for any set of finished folders.

    proxyless compare runs/a runs/b runs/c/search trained/d --out compare [--measure]

Each folder is a `proxyless run` (results.json), a `proxyless train` (final.json) or a
`proxyless search` (summary.json), told apart by the files in it. For each network: test
top-1, end-to-end latency, predicted latency, MACs, parameters, and the setting of the
folder's latency table. Latency is what each folder recorded (measured on its table's
device, divided by the speed factor of the moment: the table's time base), or with
`--measure` all networks timed now on this CPU together (torch, batch 1, one thread), so that
runs from different days or machines compare; the predicted figures stay each table's, and
the table's setting is shown beside them ("predicted on"). Writes
`compare.png` (top-1 against latency and against MACs, the Pareto front as a step line) and
`compare.md` (the table, also printed).

Networks of different spaces may be compared (a space column says which is which); networks
trained on different data sets are compared with a warning, since their accuracies do not
measure the same thing. A search folder has no test top-1 (only its supernet's validation
top-1), so it is left off the accuracy plots but listed.

The folders are read by `proxyless.pipeline.run_folders` (as for `proxyless cross-latency`), and
`--measure` times through `latency.settings.measure_setting`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxyless.engine.runtime import prepare_out_dir
from proxyless.files import replace_atomically
from proxyless.latency.settings import Setting, Timing, measure_setting, table_text
from proxyless.latency.timer import cpu_model
from proxyless.model.layers import count_macs, count_params
from proxyless.pipeline.plots import pareto_panels
from proxyless.pipeline.run_folders import (
    SEARCH,
    Network,
    cell,
    format_ms,
    name_networks,
    read_folder,
    top1_text,
)

MEASURED_ON = Setting("torch", 1, 1)  # --measure: what a deployment on one core runs


def print_warning(note: str) -> None:
    print(f"proxyless: {note}", file=sys.stderr)

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
    recorded = {table_text(n.table_meta) for n in networks if n.recorded_ms is not None}
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


def _flag(value: bool | None) -> str:
    return "n/a" if value is None else "**yes**" if value else "no"


def _optional_ms(ms: float | None) -> str:
    return "n/a" if ms is None else format_ms(ms)


def _predictions_how(measured_now: bool) -> str:
    """Where the predicted figures come from, and the column that says it: with --measure
    they stay each folder's own table's (its setting, not the one measured now)."""
    if measured_now:
        return ("Predicted: each folder's own latency table's sum, for the setting in "
                "\"predicted on\" (its table's, not the setting measured now)")
    return ("Latency and predicted: each folder's own, on the setting in \"recorded on\" "
            "(its latency table's)")


def compare_markdown(rows: list[Row], latency_how: str, notes: list[str],
                     measured_now: bool) -> str:
    """The table, one row per network, with how its latencies were obtained."""
    spaces = len({r.network.arch.space.name for r in rows}) > 1
    head = ["network", *(["space"] if spaces else []), "test top-1", "latency (ms)",
            "predicted (ms)", "MACs (M)", "params (M)",
            "predicted on" if measured_now else "recorded on",
            "Pareto (latency)", "Pareto (MACs)", "architecture"]
    lines = [f"# Comparing {len(rows)} networks", "", f"Latency: {latency_how}. "
             f"{_predictions_how(measured_now)}. Pareto: no other network is both at least as "
             "fast (or as small) and at least as accurate.",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        n = r.network
        cells = [cell(n.name), *([cell(n.arch.space.name)] if spaces else []), top1_text(n),
                 _optional_ms(r.latency_ms), _optional_ms(n.predicted_ms),
                 f"{r.macs / 1e6:.2f}", f"{r.params / 1e6:.3f}", cell(table_text(n.table_meta)),
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
    entries = measure_setting([n.arch for n in networks], MEASURED_ON,
                              Timing(min_time=min_time), progress)
    return ([e.ms for e in entries],
            f"measured now, {MEASURED_ON.label} on {cpu_model()}, all networks timed "
            "together round-robin (10th percentile)")


def plot_compare(rows: list[Row], path: Path, measured_now: bool) -> Path:
    names = [r.network.name for r in rows]
    top1 = [r.network.test_top1 for r in rows]
    panels = [("latency (ms)", [r.latency_ms for r in rows], [r.front_latency for r in rows]),
              ("MACs (M)", [r.macs / 1e6 for r in rows], [r.front_macs for r in rows])]
    how = f"measured now on this CPU, {MEASURED_ON.label}" if measured_now \
        else "as each folder recorded it"
    return pareto_panels(names, top1, panels, path, f"{len(rows)} networks: test top-1 against "
                         f"latency ({how}) and MACs")


def compare_folders(folders: Sequence[str | Path], out: str | Path,
                    names: Sequence[str] | None = None, measure: bool = False,
                    min_time: float = 3.0, progress: bool = True,
                    warn: Callable[[str], None] | None = print_warning) -> str:
    """Compare finished run, train or search `folders`: write compare.md and compare.png into
    `out` and return the markdown. `measure`: time all networks now on this CPU (`min_time`
    seconds at least) instead of using the latencies the folders recorded. `warn` receives
    each warning (mixed data sets, latencies that do not compare) before the files are
    written (default: printed to stderr; None: kept to compare.md)."""
    folder = prepare_out_dir(out, "--out", create=False)  # checked before the measuring
    networks = name_networks([read_folder(path) for path in folders],
                             None if names is None else list(names))
    latencies, how = _latencies(networks, measure, min_time, progress)
    rows = compare_rows(networks, latencies)
    notes = compare_notes(networks, measure)
    for note in notes:
        if warn is not None and note.startswith("warning:"):
            warn(note)
    prepare_out_dir(folder)
    text = compare_markdown(rows, how, notes, measure)
    replace_atomically(folder / "compare.md", lambda f: f.write(text.encode("utf-8")))
    plot_compare(rows, folder / "compare.png", measure)
    return text
