"""Where the latency model's error lives (issue: ONNX Runtime tables predict 75-95% within 10%).

Profiles the space `--rounds` times as `run` does (a fresh table each round, calibrated as
`calibrate` does), measures one fixed set of `--samples` fresh networks once per round beside
the anchor, and prints, for every (table, measurement) pair, MAPE / Spearman / share within 10%
of the calibrated and plain predictions, with and without the anchor's speed correction; then
what each piece contributes:

- run-to-run spread of one network's latency (the same networks, measured in each round),
  of one layer's table entry (the same key, profiled in each round), and of the anchor;
- the per-chunk speed factors a profile divides its entries by, and how far the entries of
  one chunk move together between rounds (a shared error: the anchor's, not the layers');
- ONNX Runtime's per-call overhead (an Identity graph's session.run) beside the smallest
  layers' entries;
- a few layers timed in context (a network with the layer, minus the same network with the
  block `zero`) beside their table entries;
- the timer's statistic (min, p10, median) on the same raw runs of the check networks;
- calibrations of other forms (blocks grouped by kernel, kernel x expansion, resolution; with
  and without the per-op term; one scale with the weights term, the form calibrations now
  take) fitted leave-one-out on the check networks themselves
  (`--groupings-only`: from a finished run's files, without measuring).

    .venv/bin/python bench/latency_error.py --space fashion --rounds 3 \
        --out bench/results/latency-error

Keep the machine otherwise idle (~4 minutes a round for fashion at --min-time 10).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from proxyless import Architecture, build_network, load_space
from proxyless.latency.calibration import CALIBRATION_NETWORKS, calibrate
from proxyless.latency.check import CHECK_SEED, prediction_metrics
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter, anchor_architecture, spread_architectures
from proxyless.latency.profile import profile_space
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import Timer, _time_ms
from proxyless.model.space import ZERO


def metrics(predicted, measured) -> str:
    m = prediction_metrics(np.asarray(predicted), np.asarray(measured))
    return (f"MAPE {m['mape']:5.2f}%  Spearman {m['spearman']:.3f}  "
            f"within 10% {m['within_10pct']:5.1f}%")


def raw_runs(timer: Timer, modules, shape, min_time: float) -> list[list[float]]:
    """Raw milliseconds of each module, round-robin as Timer does, for the statistics."""
    torch.set_num_threads(timer.threads)
    runners = [timer.runner(m, shape) for m in modules]
    for run in runners:
        for _ in range(timer.warmup):
            run()
    times = [[] for _ in runners]
    started, rounds = time.perf_counter(), 0
    while rounds < timer.repeats or time.perf_counter() - started < min_time:
        for run, record in zip(runners, times, strict=True):
            run()
            record.extend(_time_ms(run) for _ in range(2))
        rounds += 1
    return times


def identity_overhead(timer: Timer, shape) -> float:
    """p10 ms of session.run on an Identity graph of `shape`: ONNX Runtime's per-call cost."""
    class Same(torch.nn.Module):
        def forward(self, x):
            return x + 0.0
    (times,) = raw_runs(timer, [Same()], shape, 2.0)
    return float(np.percentile(times, 10))


def in_context(timer: Timer, space, table: LatencyTable, count: int, min_time: float,
               seed: int = 7) -> list[tuple[str, float, float]]:
    """(key, table entry ms, in-context ms) of `count` (block, candidate) layers: a network
    with that block set to the candidate minus the same network with the block zero."""
    rng = np.random.default_rng(seed)
    base = anchor_architecture(space)
    slots = [i for i, s in enumerate(space.slots()) if ZERO in s.candidates]
    picks = []
    for _ in range(count):
        i = int(rng.choice(slots))
        token = str(rng.choice([t for t in space.slots()[i].candidates if t != ZERO]))
        picks.append((i, token))
    networks = []
    for i, token in picks:
        blocks = list(base.blocks)
        blocks[i] = token
        with_it = Architecture(space, tuple(blocks))
        blocks[i] = ZERO
        networks += [build_network(with_it), build_network(Architecture(space, tuple(blocks)))]
    times = raw_runs(timer, networks, space.input_shape(1), min_time)
    p10 = [float(np.percentile(t, 10)) for t in times]
    from proxyless.model.layers import walk
    out = []
    for n, (i, token) in enumerate(picks):
        blocks = list(base.blocks)
        blocks[i] = token
        layer = [x for x in walk(Architecture(space, tuple(blocks))) if x.searchable][i]
        out.append((layer.key, table.ms(layer.key), p10[2 * n] - p10[2 * n + 1]))
    return out


def groupings(out: Path, space, backend: str) -> None:
    """From a finished run's files alone (its tables and summary.json, no measuring): how well
    calibrations of other forms would have predicted the 40 check networks, each fitted
    leave-one-out on the other 39 against the same table and measurement round."""
    from scipy.optimize import nnls
    from scipy.stats import spearmanr

    from proxyless.model.architecture import decode
    from proxyless.model.layers import walk

    saved = json.loads((out / "summary.json").read_text())
    check = [decode(space, a) for a in saved["check"]]

    def group(layer, form: str) -> str:
        if not layer.searchable:
            return "all" if form == "single" else "fixed"
        return {"kernel": f"k{layer.kernel}", "kernel x expansion":
                f"k{layer.kernel}e{layer.expand}", "resolution": f"r{layer.in_size}",
                "single": "all"}[form]

    print("\n== calibration forms, leave-one-out on the check networks (table r, round r)")
    for r in range(len(saved["measured"])):
        table = LatencyTable.load(out / f"{space.name}-{backend}-{r}.json")
        anchor_now, _ = saved["anchors"][r]
        truth = np.array(saved["measured"][r]) / (anchor_now / float(table.meta["anchor_ms"]))
        cells = []
        # (scales by, per-op term, weights term and an offset of either sign)
        for form, per_op, weights in [(f, op, False) for f in ("kernel", "kernel x expansion",
                                                                "resolution")
                                      for op in (True, False)] + [("single", True, True),
                                                                  ("resolution", True, True)]:
            rows = []
            for arch in check:
                parts, ops, mweights = {}, 0, 0.0
                for layer in walk(arch):
                    if not layer.key:
                        continue
                    ops += layer.searchable
                    mweights += layer.params / 1e6 if layer.searchable else 0.0
                    key = group(layer, form)
                    parts[key] = parts.get(key, 0.0) + table.ms(layer.key)
                rows.append((parts, ops, mweights))
            keys = sorted({k for parts, _, _ in rows for k in parts})
            x = np.array([[1.0] + ([-1.0] if weights else []) + [parts.get(k, 0.0) for k in keys]
                          + ([ops, -ops] if per_op else []) + ([mw] if weights else [])
                          for parts, ops, mw in rows])
            # all networks, and (for the forms calibrations took) the first 20 only: what 20
            # calibration networks would have given instead of 40
            for n in ((len(truth), 20) if per_op and form in ("resolution", "single")
                      else (len(truth),)):
                predicted = np.empty(n)
                for i in range(n):
                    keep = np.arange(n) != i
                    predicted[i] = x[i] @ nnls(x[:n][keep], truth[:n][keep])[0]
                error = np.abs(predicted - truth[:n]) / truth[:n]
                cells.append(f"{form}{'' if per_op else ', no per-op'}"
                             f"{' + weights' if weights else ''}"
                             f"{'' if n == len(truth) else f' on {n}'}: MAPE "
                             f"{error.mean() * 100:.1f}% {np.mean(error <= 0.1) * 100:.0f}% "
                             f"max {error.max() * 100:.0f}% "
                             f"rho {spearmanr(predicted, truth[:n]).statistic:.3f}")
        print(f"round {r}: " + " | ".join(cells))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--space", default="fashion")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--min-time", type=float, default=10.0)
    p.add_argument("--context", type=int, default=8, help="layers timed in context")
    p.add_argument("--chunk", type=int, default=None,
                   help="layers per profiling group (default: profile_space's)")
    p.add_argument("--out", default="bench/results/latency-error")
    p.add_argument("--groupings-only", action="store_true",
                   help="only compare calibration forms on the tables and measurements "
                        "already in --out (no measuring)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(args.space)
    if args.groupings_only:
        groupings(out, space, args.backend)
        return
    timer = Timer(args.backend, "cpu", 1, 10, 50, args.min_time)
    check = spread_architectures(space, args.samples, CHECK_SEED)
    tables, measured, anchors, raw = [], [], [], []
    for r in range(args.rounds):
        path = out / f"{args.space}-{args.backend}-{r}.json"
        path.unlink(missing_ok=True)
        t0 = time.time()
        chunk = {} if args.chunk is None else {"chunk": args.chunk}
        table = profile_space(space, path, timer, 1, progress=False, log=lambda m: None,
                              **chunk)
        calibrate(table, CALIBRATION_NETWORKS, progress=False)
        table.save(path)
        tables.append(table)
        meter = Meter.for_table(table)
        # the check networks, measured now beside the anchor (raw runs kept for statistics)
        nets = [build_network(a) for a in check] + [build_network(anchor_architecture(space))]
        times = raw_runs(meter.timer, nets, space.input_shape(1), args.min_time)
        raw.append(times)
        p10 = [float(np.percentile(t, 10)) for t in times]
        measured.append(p10[:-1])
        anchors.append((p10[-1], float(table.meta["anchor_ms"])))
        print(f"round {r}: profiled + measured in {time.time() - t0:.0f} s; anchor now "
              f"{p10[-1]:.4f} ms, at profile {table.meta['anchor_ms']:.4f} ms", flush=True)

    print("\n== each table against each round's measurements (calibrated | plain; "
          "speed-corrected | not)")
    for i, table in enumerate(tables):
        cal, plain = latency_model(table, space), latency_model(table, space, calibrated=False)
        pc = np.array([cal.predict(a) for a in check])
        pp = np.array([plain.predict(a) for a in check])
        for j, ms in enumerate(measured):
            speed = anchors[j][0] / float(table.meta["anchor_ms"])
            print(f"table {i} vs round {j}: calibrated {metrics(pc * speed, ms)} | "
                  f"unscaled {metrics(pc, ms)} | plain {metrics(pp * speed, ms)}  "
                  f"(speed x{speed:.3f})")

    print("\n== run-to-run spread (coefficient of variation over rounds, median over items)")
    nets = np.array(measured)
    print(f"one network's end-to-end p10: {np.median(nets.std(0) / nets.mean(0)) * 100:.2f}%")
    keys = sorted(set.intersection(*(set(t.entries) for t in tables)))
    layers = np.array([[t.ms(k) for k in keys] for t in tables])
    print(f"one layer's table entry: {np.median(layers.std(0) / layers.mean(0)) * 100:.2f}%")
    a = np.array([x[0] for x in anchors])
    print(f"the anchor's p10 at check time: {a.std() / a.mean() * 100:.2f}% "
          f"({', '.join(f'{x:.4f}' for x in a)} ms)")
    net_sums = np.array([[latency_model(t, space).predict(x) for x in check] for t in tables])
    print(f"one network's calibrated prediction across tables: "
          f"{np.median(net_sums.std(0) / net_sums.mean(0)) * 100:.2f}%")

    print("\n== chunk effects: entries of round r / round 0, per profiling chunk of 24 keys")
    order = list(tables[0].entries)  # the order profile_space timed them in
    for r in range(1, len(tables)):
        ratios = [tables[r].ms(k) / tables[0].ms(k) for k in order]
        chunks = [ratios[i:i + 24] for i in range(0, len(ratios), 24)]
        print(f"round {r}: " + "  ".join(
            f"chunk {c}: median x{statistics.median(x):.3f} "
            f"(IQR {np.subtract(*np.percentile(x, [75, 25])):.3f})"
            for c, x in enumerate(chunks)))

    print("\n== ONNX Runtime's per-call overhead vs the layers")
    if args.backend == "onnxruntime":
        small = sorted(tables[-1].entries.items(), key=lambda kv: kv[1].ms)[:5]
        over = identity_overhead(timer, space.input_shape(1))
        print(f"Identity graph session.run: {over * 1000:.1f} us; smallest entries: " +
              ", ".join(f"{e.ms * 1000:.1f} us" for _, e in small))
        cal = tables[-1].calibration
        print(f"the calibration's per-op term: {cal.get('per_op', 0) * 1000:.1f} us; "
              f"scales {cal.get('scales')}, offset {cal.get('offset', 0) * 1000:.1f} us")

    print("\n== layers in context (network with the block minus the network without)")
    rows = in_context(timer, space, tables[-1], args.context, args.min_time)
    for key, table_ms, context_ms in rows:
        print(f"{key[:70]:<70} table {table_ms * 1000:7.1f} us  in context "
              f"{context_ms * 1000:7.1f} us  ratio {context_ms / table_ms:.2f}")

    print("\n== the timer's statistic on the same runs (last round, calibrated table 0)")
    cal = latency_model(tables[0], space)
    pc = np.array([cal.predict(x) for x in check])
    for name, stat in (("min", np.min), ("p10", lambda v: np.percentile(v, 10)),
                       ("median", np.median)):
        ms = np.array([float(stat(t)) for t in raw[-1][:-1]])
        anchor = float(stat(raw[-1][-1]))
        print(f"{name:>6}: {metrics(pc * anchor / float(tables[0].meta['anchor_ms']), ms)}")
    (out / "summary.json").write_text(json.dumps({
        "measured": measured, "anchors": anchors,
        "check": [x.encode() for x in check]}, indent=1))
    groupings(out, space, args.backend)


if __name__ == "__main__":
    main()
