"""Does the search find better networks than random ones and a uniform MobileNetV2-style one?

    python bench/search_vs_baselines.py                     # full Fashion-MNIST, 2 targets
    python bench/search_vs_baselines.py --reinforce         # add a ProxylessNAS-R row

For each latency target T (ms on this CPU, torch, batch 1, 1 thread; chosen from the table's
range unless given), on the `fashion` space:
  - searched: ProxylessNAS-G (and -R with --reinforce) under T;
  - unconstrained: ProxylessNAS-G with no target (accuracy only), once: the targets must bind,
    i.e. the searched networks must be faster than it, within 10% of T or under it;
  - random: `--random` architectures drawn uniformly, kept when their predicted latency is
    within [0.85 T, T] (they meet the target and use most of it);
  - uniform: k3e6 everywhere, blocks cut (zero, from the end of each stage) and then
    expansion cut to 3 until it meets T.
Every network is retrained from scratch with the same budget and seeds (`--seeds`, mean
reported), evaluated on the test split, and all are measured end to end together
(round-robin) on this CPU. The table prints test top-1, measured latency, params, MACs,
and the search's own cost (wall time, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from proxyless import Architecture, load_space
from proxyless.data import DataSplits, load_data
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter
from proxyless.latency.profile import ProfileSetting
from proxyless.model.architecture import decode
from proxyless.model.layers import count_macs, count_params
from proxyless.search import SearchConfig, search
from proxyless.training.trainer import TrainConfig, TrainResult, train_network


def random_meeting(space, model, target: float, count: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    found: list[Architecture] = []
    for _ in range(200_000):
        arch = Architecture.random(space, rng)
        if 0.85 * target <= model.predict(arch) <= target and arch not in found:
            found.append(arch)
            if len(found) == count:
                return found
    sys.exit(f"could not draw {count} random architectures within [0.85T, T] for T={target}")


def uniform_meeting(space, model, target: float) -> Architecture:
    """k3e6 everywhere; cut depth (zero from the end of each stage), then expansion."""
    slots = space.slots()
    tokens = ["k3e6"] * len(slots)
    order = []  # removable blocks: last of each stage first, round-robin over stages
    by_stage: dict[int, list[int]] = {}
    for slot in slots:
        if "zero" in slot.candidates:
            by_stage.setdefault(slot.stage, []).append(slot.index)
    while any(by_stage.values()):
        for stage in sorted(by_stage):
            if by_stage[stage]:
                order.append(by_stage[stage].pop())
    for index in [None, *order]:
        if index is not None:
            tokens[index] = "zero"
        if model.predict(Architecture(space, tuple(tokens))) <= target:
            return Architecture(space, tuple(tokens))
    for i, token in enumerate(tokens):
        if token == "k3e6":
            tokens[i] = "k3e3"
            if model.predict(Architecture(space, tuple(tokens))) <= target:
                return Architecture(space, tuple(tokens))
    return Architecture(space, tuple(tokens))


def subset(data: DataSplits, limit: int | None) -> DataSplits:
    if not limit or limit >= len(data.train):
        return data
    g = torch.Generator().manual_seed(0)
    train = data.train.subset(torch.randperm(len(data.train), generator=g)[:limit])
    return DataSplits(train, data.val, data.test, data.name, data.source, data.mean, data.std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/search")
    parser.add_argument("--targets", type=float, nargs="*", default=None)
    parser.add_argument("--target-fractions", type=float, nargs="*", default=[0.2, 0.45])
    parser.add_argument("--random", type=int, default=5)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--arch-every", type=int, default=2)
    parser.add_argument("--search-train-limit", type=int, default=20000)
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument("--retrain-limit", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3,
                        help="retrain every network with this many seeds; report the mean")
    parser.add_argument("--reinforce", action="store_true")
    parser.add_argument("--no-unconstrained", dest="unconstrained", action="store_false",
                        help="skip the search without a target (the targets-bind check)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    space = load_space("fashion")
    data = load_data(None, val_size=0.1, seed=0, image_size=28, channels=1)
    table, _ = cached_table(space, ProfileSetting(min_time=10.0, calibration_networks=20),
                              progress=False)
    model = latency_model(table, space)
    fastest, slowest = model.bounds()
    targets = args.targets or [round(fastest + f * (slowest - fastest), 3)
                               for f in args.target_fractions]
    retrain_data = subset(data, args.retrain_limit)
    train_configs = [TrainConfig(epochs=args.retrain_epochs, batch_size=128, seed=seed,
                                 threads=args.threads) for seed in range(args.seeds)]

    def searched(strategy: str, target: float | None) -> tuple[Architecture, dict]:
        config = SearchConfig(strategy=strategy, epochs=args.search_epochs,
                              warmup_epochs=args.warmup_epochs, target=target,
                              train_limit=args.search_train_limit, seed=0,
                              arch_every=args.arch_every, threads=args.threads)
        run_dir = out / (f"T{target}-{strategy}" if target else f"unconstrained-{strategy}")
        done = run_dir / "bench_search.json"
        if done.exists():  # a rerun picks up where an interrupted one stopped
            saved = json.loads(done.read_text())
            return decode(space, saved["arch"]), saved["cost"]
        started = time.perf_counter()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        arch = search(space, data, model, config, run_dir, progress=False,
                      log=lambda m: None).arch
        cost = {"search_s": time.perf_counter() - started,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mib": rss_before}
        done.write_text(json.dumps({"arch": arch.encode(), "cost": cost}))
        return arch, cost

    free = searched("gradient", None) if args.unconstrained else None
    rows = []
    for target in targets:
        candidates: list[tuple[str, Architecture, dict]] = []
        strategies = ["gradient"] + (["reinforce"] if args.reinforce else [])
        for strategy in strategies:
            arch, cost = searched(strategy, target)
            candidates.append((f"searched ({strategy})", arch, cost))
        if free is not None:
            candidates.append(("searched (no target)", *free))
        for i, arch in enumerate(random_meeting(space, model, target, args.random, seed=7)):
            candidates.append((f"random {i + 1}", arch, {}))
        candidates.append(("uniform k3e6 (cut)", uniform_meeting(space, model, target), {}))
        measured, speed = Meter.for_table(table).measure([a for _, a, _ in candidates])
        for (name, arch, cost), ms in zip(candidates, measured, strict=True):
            slug = re.sub(r'[^a-z0-9]+', '_', name).strip('_')
            # the unconstrained network is the same for every target: trained once
            base = out / (slug if "no target" in name else f"T{target}-{slug}")
            accuracies = []
            for train_config in train_configs:
                seed = train_config.seed
                train_dir = base if seed == 0 else base.with_name(f"{base.name}-seed{seed}")
                if (train_dir / "final.json").exists():
                    final = TrainResult.read(train_dir / "final.json")
                else:
                    final = train_network(arch, retrain_data, train_config, train_dir,
                                          progress=False, log=lambda m: None)
                accuracies.append(final.test_top1)
            row = {"target_ms": target, "network": name,
                   "test_top1": statistics.mean(accuracies),
                   "test_top1_std": statistics.pstdev(accuracies), "test_top1_seeds": accuracies,
                   "measured_ms": ms, "speed_factor": speed,
                   # on the table's time base: the machine's speed of the moment taken out
                   "measured_table_ms": ms / speed, "predicted_ms": model.predict(arch),
                   "params_m": count_params(arch) / 1e6, "macs_m": count_macs(arch) / 1e6,
                   "arch": arch.encode(), **cost}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))

    print(f"\nfashion space, full Fashion-MNIST ({len(data.train)} train, {len(data.val)} val, "
          f"{len(data.test)} test); retrained {args.retrain_epochs} epochs on "
          f"{len(retrain_data.train)} images, {args.seeds} seed(s) each; latency: torch, "
          f"batch 1, 1 thread, "
          f"{table.meta.get('cpu')}")
    print("measured: end to end now; table-time: the same divided by the machine's speed "
          "factor of the moment (anchor network), comparable with T and the predictions")
    print(f"{'target':>7} {'network':<20}{'top-1 (mean ± sd)':>18}{'measured':>10}"
          f"{'table-time':>11}{'predicted':>10}{'params':>8}{'MACs':>7}  search cost")
    for r in rows:
        cost = (f"{r['search_s']:.0f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
                if "search_s" in r else "")
        print(f"{r['target_ms']:>7.2f} {r['network']:<20}"
              f"{r['test_top1']:>10.2f} ± {r.get('test_top1_std', 0):.2f}%"
              f"{r['measured_ms']:>8.2f}ms{r['measured_table_ms']:>9.2f}ms"
              f"{r['predicted_ms']:>8.2f}ms{r['params_m']:>7.2f}M"
              f"{r['macs_m']:>6.1f}M  {cost}")
    print_verdicts(rows)


def print_verdicts(rows: list[dict]) -> None:
    """Do the targets bind, and does the search beat the baselines at equal latency?"""
    print()
    for target in sorted({r["target_ms"] for r in rows}):
        group = [r for r in rows if r["target_ms"] == target]
        free = [r for r in group if r["network"] == "searched (no target)"]
        baselines = [r for r in group if not r["network"].startswith("searched")]
        best = max(baselines, key=lambda r: r["test_top1"])
        for r in (r for r in group if r["network"].startswith("searched (")
                  and r not in free):
            ratio = r["measured_table_ms"] / target
            verdict = "meets" if ratio <= 1.1 else "MISSES"
            faster = (f", {free[0]['measured_ms'] / r['measured_ms']:.2f}x faster than the "
                      "unconstrained search" if free else "")
            print(f"T={target:.2f} ms {r['network']}: measured (table-time)/T = {ratio:.2f} "
                  f"({verdict})"
                  f"{faster}; top-1 {r['test_top1'] - best['test_top1']:+.2f} pts vs the best "
                  f"baseline ({best['network']}, {best['test_top1']:.2f}%, "
                  f"{best['measured_ms']:.2f} ms); seed sd {r.get('test_top1_std', 0):.2f} / "
                  f"{best.get('test_top1_std', 0):.2f}")


if __name__ == "__main__":
    main()
