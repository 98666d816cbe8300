"""Search once, deploy on many devices: is a re-targeted supernet (`proxyless retarget`) as
good as a fresh search for the same target, and how much cheaper (issue #36)?

    python bench/retarget.py --profile                 # tables first (once, cached)
    python bench/retarget.py --seed 0 & python bench/retarget.py --seed 1 & ...
    python bench/retarget.py --report                  # the table over every seed done

Per seed, on the `fashion` space with the quick budget's search (what `proxyless run` does on
this data): one *base* search for the target `run` would choose (35% of the way from the
fastest network of this device's ONNX Runtime batch-1 table to its slowest), then for each
setting below the base supernet re-targeted (`--from final`, the default epochs) and a fresh
search for the same target, and every derived network retrained `--retrain-epochs` epochs
from scratch on all the training images and tested:

    ort-0.20, ort-0.35, ort-0.60   ONNX Runtime batch 1 (the base's table), targets at 20%,
                                   35% (the base's own: its fresh search is the base) and 60%
    torch64-0.35                   PyTorch batch 64 (throughput), 35% of its range

Printed (--report): per setting, the predicted and measured latency against the target (the
share within ±10%; measured again then, every network on an idle machine on its table's time
base, unless --no-remeasure), retrained top-1 mean and seed sd of both, the difference with
its standard error ("inside the noise" within two), and re-targeting's wall time as a share
of the base search's. Each unit writes its folder under --out and is read back on a rerun
(resumable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from noise import seed_difference
from proxyless import load_space
from proxyless.data import load_data
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter
from proxyless.latency.profile import ProfileSetting
from proxyless.model.architecture import decode
from proxyless.pipeline.budgets import BUDGETS
from proxyless.pipeline.run import default_target
from proxyless.search.config import SearchConfig
from proxyless.search.costs import search_costs
from proxyless.search.loop import search
from proxyless.search.outputs import SearchSummary, write_search_outputs
from proxyless.search.retarget import finished_search, retarget, retarget_config
from proxyless.training.trainer import TrainConfig, train_network

PROFILES = {"ort": ProfileSetting(), "torch64": ProfileSetting(backend="torch", batch=64)}
SETTINGS = (("ort", 0.20), ("ort", 0.35), ("ort", 0.60), ("torch64", 0.35))
BASE = ("ort", 0.35)


def quiet(_: str) -> None:
    pass


def tables(space) -> dict:
    return {name: cached_table(space, setting, False, print)[0]
            for name, setting in PROFILES.items()}


def searched(space, data, table, target: float, seed: int, threads: int, folder: Path,
             source: Path | None) -> SearchSummary:
    """A fresh search (source None) or a re-targeting of `source`, or its summary if done."""
    if (folder / "summary.json").exists():
        return SearchSummary.read(folder / "summary.json")
    warmup, epochs = BUDGETS["quick"].search_epochs(len(data.train))
    if source is None:
        config = SearchConfig(warmup_epochs=warmup, epochs=epochs, train_limit=20000,
                              arch_every=2, target=target, seed=seed, threads=threads,
                              tensorboard=False)
    else:
        base = finished_search(source)
        config = retarget_config(base.config, target=target, tensorboard=False)
    costs = search_costs(space, config, table, log=quiet)
    started = time.perf_counter()
    if source is None:
        result = search(space, data, costs.constrained, config, folder, resume=False,
                        progress=False, log=quiet)
    else:
        result = retarget(base, data, costs.constrained, config, folder, progress=False,
                          log=quiet)
    wall = time.perf_counter() - started
    summary = write_search_outputs(result, folder, config, costs.latency, table, quiet,
                                   runtimes=False,
                                   retargeted={"search": str(source), "from": "final"}
                                   if source else None)
    (folder / "bench_wall.json").write_text(json.dumps({"wall_s": wall}))
    return summary


def retrained(space, data, arch_text: str, seed: int, epochs: int, threads: int,
              folder: Path) -> float:
    if not (folder / "final.json").exists():
        train_network(decode(space, arch_text), data.for_retraining(),
                      TrainConfig(epochs=epochs, seed=seed, threads=threads), folder,
                      progress=False, log=quiet)
    return json.loads((folder / "final.json").read_text())["test_top1"]


def run_seed(args, space, data, by_name) -> None:
    root = Path(args.out) / f"seed{args.seed}"
    base_table = by_name[BASE[0]]
    base_target = default_target(latency_model(base_table, space), BASE[1])
    base_dir = root / "base"
    searched(space, data, base_table, base_target, args.seed, args.threads, base_dir, None)
    print(f"seed {args.seed}: base search done", flush=True)
    for name, fraction in SETTINGS:
        table = by_name[name]
        target = default_target(latency_model(table, space), fraction)
        label = f"{name}-{fraction:.2f}"
        units = {"retarget": searched(space, data, table, target, args.seed, args.threads,
                                      root / label / "retarget", base_dir)}
        units["fresh"] = (SearchSummary.read(base_dir / "summary.json")
                          if (name, fraction) == BASE else
                          searched(space, data, table, target, args.seed, args.threads,
                                   root / label / "fresh", None))
        for how, summary in units.items():
            top1 = retrained(space, data, summary.arch, args.seed, args.retrain_epochs,
                             args.threads, root / label / f"{how}-train")
            record = {"setting": label, "how": how, "seed": args.seed, "target": target,
                      "arch": summary.arch, "predicted_ms": summary.predicted_ms,
                      "measured_ms": summary.measured_ms, "val_top1": summary.val_top1,
                      "search_time_s": summary.search_time_s, "test_top1": top1}
            (root / label / f"{how}.json").write_text(json.dumps(record, indent=1))
            print(json.dumps(record), flush=True)


def remeasure(records: list[dict], by_name: dict, space) -> None:
    """Every network measured again now, on an idle machine, on its table's time base (the
    seeds ran side by side, so what their summaries measured shared the cores)."""
    for name, table in by_name.items():
        mine = [r for r in records if r["setting"].startswith(name + "-")]
        archs = sorted({r["arch"] for r in mine})
        if not archs:
            continue
        measured, speed = Meter.for_table(table).measure([decode(space, a) for a in archs])
        ms = dict(zip(archs, measured, strict=True))
        for r in mine:
            r["measured_now_ms"] = ms[r["arch"]]
        print(f"{name}: {len(archs)} networks measured now (machine x{speed:.2f} the table's "
              "speed, corrected)", flush=True)


def report(out: Path, remeasured: bool) -> None:
    records = [json.loads(p.read_text()) for p in sorted(out.glob("seed*/*/*.json"))
               if p.name in ("retarget.json", "fresh.json")]
    if remeasured:
        space = load_space("fashion")
        remeasure(records, tables(space), space)
    bases = {int(p.parts[-3][4:]): SearchSummary.read(p).search_time_s
             for p in out.glob("seed*/base/summary.json")}
    print(f"{'setting':>13} {'how':>8} {'seeds':>5} {'target':>7} {'predicted':>15} "
          f"{'measured':>15} {'in ±10%':>7} {'top-1 mean±sd':>14} {'time s':>7}")
    by_setting: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_setting.setdefault(r["setting"], {}).setdefault(r["how"], []).append(r)
    summary = {}
    for setting, hows in by_setting.items():
        for how in ("fresh", "retarget"):
            rs = sorted(hows.get(how, []), key=lambda r: r["seed"])
            if not rs:
                continue
            pred = [r["predicted_ms"] for r in rs]
            key = "measured_now_ms" if remeasured else "measured_ms"
            meas = [r[key] for r in rs if r.get(key) is not None]
            inside = sum(abs(m / r["target"] - 1) <= 0.10 for r, m in
                         zip(rs, [r.get(key) or r["predicted_ms"] for r in rs],
                             strict=True))
            top1 = [r["test_top1"] for r in rs]
            sd = statistics.stdev(top1) if len(top1) > 1 else float("nan")
            print(f"{setting:>13} {how:>8} {len(rs):>5} {rs[0]['target']:>7.3f} "
                  f"{statistics.fmean(pred):>8.3f}-{max(pred):.3f} "
                  f"{statistics.fmean(meas) if meas else float('nan'):>8.3f}-"
                  f"{max(meas) if meas else float('nan'):.3f} {inside:>4}/{len(rs)} "
                  f"{statistics.fmean(top1):>7.2f}±{sd:.2f} "
                  f"{statistics.median(r['search_time_s'] for r in rs):>7.0f}")
            summary.setdefault(setting, {})[how] = rs
    print()
    for setting, hows in summary.items():
        if "fresh" in hows and "retarget" in hows and min(len(v) for v in hows.values()) > 1:
            a = [r["test_top1"] for r in hows["retarget"]]
            b = [r["test_top1"] for r in hows["fresh"]]
            diff, se, verdict = seed_difference(a, b)
            share = [r["search_time_s"] / bases[r["seed"]] for r in hows["retarget"]
                     if r["seed"] in bases]
            print(f"{setting}: re-targeted - fresh {diff:+.2f} points (se {se:.2f}): "
                  f"{verdict}; re-targeting took {100 * statistics.median(share):.0f}% of "
                  f"the base search's time (median over seeds)")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="profile the tables, exit")
    parser.add_argument("--report", action="store_true", help="print the table, exit")
    parser.add_argument("--no-remeasure", action="store_true",
                        help="--report with the latencies the searches measured, side by side")
    parser.add_argument("--retrain-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/retarget")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        return report(out, not args.no_remeasure)
    torch.set_num_threads(args.threads)
    space = load_space("fashion")
    by_name = tables(space)
    if args.profile:
        return None
    data = load_data(None, val_size=0.1, seed=args.seed, image_size=28, channels=1)
    run_seed(args, space, data, by_name)
    return None


if __name__ == "__main__":
    main()
