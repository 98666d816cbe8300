"""Population benchmark: does the search find networks that picked ones do not? (issue 11)

1. A population of the `fashion` space: `--random` architectures spread over the latency range,
   the uniform family (all-k3e3 ... all-k7e6) and uniform k3e6 networks cut to several depths.
2. Every network retrained from scratch with one protocol (`--epochs` x `--train-images`, on
   full Fashion-MNIST, test top-1), `--seed-archs` of them with `--seeds` seeds to measure
   seed noise. Results are cached by (architecture, protocol, seed) in `OUT/runs.jsonl`
   (committed with the figures), so a rerun trains only what is missing; an interrupted
   training resumes from its checkpoint in the cache folder.
3. The latency of every network measured together, on the latency table's time base.
4. Searches (`--fractions` of the table's latency range x `--strategies`, run as
   `proxyless search` processes into OUT/searches/, skipped when done) and any other search
   folders (`--search DIR ...`): each searched network retrained alike with `--seeds` seeds,
   and each search's supernet ranking: every population network scored on the final supernet
   (BatchNorm re-estimated) against its retrained accuracy, Kendall's tau over the population
   and within +-15% of the search's target.
5. `OUT/population.png` (accuracy vs measured latency, the population's Pareto front, the
   searched networks) and `OUT/table.txt`.

    .venv/bin/python bench/population.py --fractions 0.2 0.45 0.7 \
        --strategies gradient reinforce --weight-sharing entangled
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from proxyless import Architecture, load_space
from proxyless.data import Batches, DataSplits, load_data
from proxyless.engine.runtime import load_checkpoint
from proxyless.latency.cache import cache_dir, cached_table
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import Meter, spread_architectures
from proxyless.latency.profile import ProfileSetting
from proxyless.model.architecture import decode
from proxyless.model.batchnorm import recalibrate_batchnorm
from proxyless.model.space import SearchSpace
from proxyless.model.supernet import SuperNet
from proxyless.training.trainer import TrainConfig, train_network

sys.path.insert(0, str(Path(__file__).parent))
from search_vs_baselines import uniform_meeting  # noqa: E402


def population(space: SearchSpace, model, count: int) -> list[tuple[str, Architecture]]:
    fastest, slowest = model.bounds()
    members = [(f"random {i + 1}", a)
               for i, a in enumerate(spread_architectures(space, count, seed=3000))]
    members += [(f"all-{t}", Architecture.uniform(space, t))
                for t in space.candidates if t != "zero"]
    for fraction in (0.15, 0.35, 0.6):
        target = fastest + fraction * (slowest - fastest)
        members.append((f"k3e6 cut to {fraction:.0%}", uniform_meeting(space, model, target)))
    unique, seen = [], set()
    for name, arch in members:
        if arch.encode() not in seen:
            seen.add(arch.encode())
            unique.append((name, arch))
    return unique


def subset(data: DataSplits, limit: int) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    train = data.train.subset(torch.randperm(len(data.train), generator=g)[:limit])
    return DataSplits(train, None, data.test, data.name, data.source, data.mean, data.std)


class Runs:
    """Retrained results by (architecture, protocol, seed), kept in OUT/runs.jsonl."""

    def __init__(self, path: Path, protocol: dict, data: DataSplits, threads: int) -> None:
        self.path, self.protocol, self.data, self.threads = path, protocol, data, threads
        self.done: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.done[row["key"]] = row

    def key(self, arch: Architecture, seed: int) -> str:
        text = json.dumps({"arch": arch.encode(), "protocol": self.protocol, "seed": seed},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cached(self, arch: Architecture, seeds: range) -> list[float]:
        """The results already held of `arch` for `seeds` (no training)."""
        keys = [self.key(arch, s) for s in seeds]
        return [self.done[k]["test_top1"] for k in keys if k in self.done]

    def top1(self, arch: Architecture, seed: int) -> float:
        key = self.key(arch, seed)
        if key not in self.done:
            work = cache_dir() / "bench" / "population" / key
            config = TrainConfig(epochs=self.protocol["epochs"], seed=seed, threads=self.threads)
            resume = (work / "checkpoint.pt").exists()
            final = train_network(arch, self.data, config, work, resume=resume, progress=False,
                                  log=lambda m: None)
            row = {"key": key, "arch": arch.encode(), "seed": seed, "protocol": self.protocol,
                   "test_top1": final.test_top1, "train_time_s": final.train_time_s}
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.done[key] = row
            print(f"  trained {arch.encode()} seed {seed}: {final.test_top1:.2f}% "
                  f"({final.train_time_s:.0f} s)", flush=True)
        return self.done[key]["test_top1"]


def run_searches(out: Path, args, model, table_path: Path) -> list[Path]:
    """`proxyless search` at each target and strategy, one process each (so that summary.json's
    peak memory is the search's own); a finished one is kept."""
    fastest, slowest = model.bounds()
    folders = []
    for fraction in args.fractions:
        target = round(fastest + fraction * (slowest - fastest), 3)
        for strategy in args.strategies:
            folder = out / "searches" / f"T{target}-{strategy}-{args.weight_sharing}"
            folders.append(folder)
            if (folder / "summary.json").exists():
                continue
            command = [sys.executable, "-m", "proxyless.cli", "search", "--space", "fashion",
                       "--table", str(table_path), "--target-ms", str(target), "--strategy",
                       strategy, "--weight-sharing", args.weight_sharing, "--out", str(folder),
                       "--no-progress", *args.search_args.split()]
            if (folder / "checkpoint.pt").exists():
                command.append("--resume")
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, check=True)
    return folders


def supernet_scores(search_dir: Path, archs: list[Architecture], data: DataSplits,
                    images: int) -> tuple[list[float], list[float], dict]:
    """Val top-1 and loss of each architecture on the search's final supernet, BN
    re-estimated."""
    checkpoint = load_checkpoint(search_dir / "checkpoint.pt")
    config = checkpoint["config"]
    space = SearchSpace.from_dict(checkpoint["space"])
    net = SuperNet(space, weight_sharing=config.get("weight_sharing", "separate"))
    net.load_state_dict(checkpoint["supernet"])
    held = load_data(None, val_size=config["val_size"], seed=config["seed"],
                     image_size=space.input_size, channels=space.in_channels, notify=None)
    common = dict(mean=held.mean, std=held.std, augment=False)
    val = Batches(held.val.subset(torch.arange(min(images, len(held.val)))), 500,
                  shuffle=False, pad=False, **common)
    calibration = Batches(held.train, 128, shuffle=True, **common)
    scores, losses = [], []
    for arch in archs:
        model = net.derived_network(arch)
        recalibrate_batchnorm(model, calibration, 20)
        model.eval()
        correct = count = 0
        loss = 0.0
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                correct += (logits.argmax(1) == y).sum().item()
                loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                count += y.numel()
        scores.append(100 * correct / count)
        losses.append(loss / count)
    return scores, losses, config


def tau(xs: list[float], ys: list[float]) -> float | None:
    return float(kendalltau(xs, ys).statistic) if len(xs) >= 3 else None


def tau_sd(n: int) -> float:
    """Kendall tau's standard deviation over n pairs under no association."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))


def agreement_ceiling(twice: float, seeds: float) -> float:
    """A perfect predictor's tau against means of `seeds` retrainings, from the tau of two
    single retrainings (`twice`): Greiner's relation gives their correlation, Spearman-Brown
    that of a mean of `seeds`, whose square root is the truth's correlation with it."""
    single = max(math.sin(math.pi / 2 * twice), 0.0)
    mean = seeds * single / (1 + (seeds - 1) * single)
    return 2 / math.pi * math.asin(math.sqrt(mean))


def tau_ceiling(rows: list[dict], seed_sd: float, draws: int = 2000) -> float:
    """The Kendall tau a perfect predictor would reach against these retrained means: the
    networks' true accuracies drawn with the population's spread less the seed noise, each
    measured as the mean of its own number of seeds (Monte Carlo)."""
    rng = np.random.default_rng(0)
    means = np.array([r["mean"] for r in rows])
    noise = seed_sd / np.sqrt([len(r["top1"]) for r in rows])
    true_sd = np.sqrt(max(means.var(ddof=1) - np.mean(noise ** 2), 0.0))
    taus = []
    for _ in range(draws):
        true = rng.normal(0.0, true_sd, len(rows))
        taus.append(kendalltau(true, true + rng.normal(0.0, noise)).statistic)
    return float(np.mean(taus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/population")
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reseed", nargs="*", default=[], metavar="NAME",
                        help="population networks (e.g. 'random 7') also retrained with "
                             "--seeds seeds, where a verdict hinges on them")
    parser.add_argument("--seed-archs", type=int, default=3,
                        help="population networks retrained with --seeds seeds (seed noise)")
    parser.add_argument("--all-seeds", type=int, default=1,
                        help="seeds of every other population network; with 2 or more the "
                             "table gives the tau between two retrainings of the population "
                             "(how well any predictor can rank it with this protocol)")
    parser.add_argument("--search", nargs="*", default=[], help="folders of `proxyless search`")
    parser.add_argument("--rank", nargs="*", default=[], metavar="DIR",
                        help="search folders whose supernet ranks the population, without "
                             "retraining their networks (a cheap look at a supernet variant)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[],
                        help="search at these fractions of the latency range (0 fastest)")
    parser.add_argument("--strategies", nargs="*", default=["gradient"])
    parser.add_argument("--weight-sharing", default="separate")
    parser.add_argument("--search-args", default="--warmup-epochs 2 --epochs 3 "
                        "--train-limit 20000 --arch-every 2",
                        help="the searches' other options (default: run's quick budget)")
    parser.add_argument("--rank-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing: report the networks runs.jsonl already holds "
                             "(all their seeds), e.g. while a long protocol is under way")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space("fashion")
    table, table_path = cached_table(space, ProfileSetting(min_time=10.0, calibration_networks=20),
                                     progress=False)
    model = latency_model(table, space)
    data = load_data(None, val_size=0, image_size=28, channels=1)
    protocol = {"epochs": args.epochs, "train_images": args.train_images, "data": data.name}
    runs = Runs(out / "runs.jsonl", protocol, subset(data, args.train_images), args.threads)

    members = population(space, model, args.random)
    seeded = {arch.encode() for _, arch in members[:args.seed_archs]}
    seeded |= {arch.encode() for name, arch in members if name in args.reseed}
    def results(arch: Architecture, seeds: range) -> list[float]:
        return runs.cached(arch, seeds) if args.cached_only else [runs.top1(arch, s)
                                                                 for s in seeds]

    rows = []
    for name, arch in members:
        seeds = range(args.seeds) if arch.encode() in seeded else range(args.all_seeds)
        rows.append({"name": name, "arch": arch, "top1": results(arch, seeds)})
    folders = [Path(f) for f in args.search]
    if not args.cached_only:
        folders += run_searches(out, args, model, table_path)
    searched = []
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        arch = decode(space, summary["arch"])
        searched.append({"name": f"searched: {folder.name}", "arch": arch, "summary": summary,
                         "top1": results(arch, range(args.seeds)), "folder": folder})
    rows = [r for r in rows if r["top1"]]  # --cached-only: what is held so far
    searched = [s for s in searched if s["top1"]]
    args.search = [str(s["folder"]) for s in searched]
    everyone = rows + searched
    measured, speed = Meter.for_table(table).measure([r["arch"] for r in everyone])
    for r, ms in zip(everyone, measured, strict=True):
        r["latency_ms"] = ms / speed
        r["mean"] = statistics.mean(r["top1"])
        r["sd"] = statistics.stdev(r["top1"]) if len(r["top1"]) > 1 else None
    report(out, rows, searched, args, runs, data)


def report(out: Path, rows: list[dict], searched: list[dict], args, runs: Runs,
           data: DataSplits) -> None:
    sds = [r["sd"] for r in rows if r["sd"] is not None]
    seed_sd = statistics.mean(sds) if sds else float("nan")
    spread = statistics.stdev([r["mean"] for r in rows])
    lines = [f"protocol: retrain {args.epochs} epochs on {args.train_images} images of "
             f"{data.name}, test top-1 on {len(data.test)}; latency on the table's time base",
             f"seed sd (mean over {len(sds)} networks x {args.seeds} seeds): {seed_sd:.2f} "
             f"points; sd of accuracy across the population: {spread:.2f} points; "
             f"resolution: differences under ~{2 * seed_sd:.2f} points are inside the noise"]
    ceiling = tau_ceiling(rows, seed_sd)
    args.ceiling = f"~{ceiling:.2f}"
    if all(len(r["top1"]) >= 2 for r in rows):
        twice = tau([r["top1"][0] for r in rows], [r["top1"][1] for r in rows])
        observed = agreement_ceiling(twice, statistics.mean(len(r["top1"]) for r in rows))
        args.ceiling = f"~{observed:.2f}-{ceiling:.2f}"
        lines += [f"two retrainings of the population (seed 0 against seed 1) rank it alike "
                  f"with Kendall tau {twice:.3f} (sd of a tau over {len(rows)} networks: "
                  f"~{tau_sd(len(rows)):.2f})",
                  f"a perfect predictor would reach Kendall tau ~{observed:.2f} against these "
                  f"retrained means judging by that agreement, ~{ceiling:.2f} judging by the "
                  f"variances; their seed noise alone keeps it below 1", ""]
    else:
        lines += [f"a perfect predictor would reach Kendall tau ~{ceiling:.2f} against these "
                  f"retrained means (judging by the variances); their seed noise alone keeps "
                  f"it below 1", ""]
    lines.append(f"{'network':<26}{'top-1 (mean ± sd)':>20}{'latency':>10}  architecture")
    for r in sorted(rows + searched, key=lambda r: r["latency_ms"]):
        sd = f" ± {r['sd']:.2f}" if r["sd"] is not None else ""
        lines.append(f"{r['name']:<26}{r['mean']:>13.2f}{sd:<7}{r['latency_ms']:>8.2f}ms  "
                     f"{r['arch'].encode()}")
    lines.append("")
    for s in searched:
        lines += verdict(s, rows, seed_sd)
        lines += ranking(Path(args.search[searched.index(s)]), rows, args, data)
    for folder in args.rank:
        lines += [f"supernet of {folder} (its network not retrained):"]
        lines += ranking(Path(folder), rows, args, data)
    text = "\n".join(lines)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    plot(out / "population.png", rows, searched, args)


def verdict(s: dict, rows: list[dict], seed_sd: float) -> list[str]:
    """Does any population network at equal or lower latency beat the searched one?"""
    sd = max(s["sd"] or 0.0, seed_sd)
    faster = [r for r in rows if r["latency_ms"] <= s["latency_ms"]]
    best = max(faster, key=lambda r: r["mean"]) if faster else None
    summary = s["summary"]
    head = (f"{s['name']}: {s['mean']:.2f}% at {s['latency_ms']:.2f} ms (target "
            f"{summary.get('target_ms')}, search {summary['search_time_s']:.0f} s, peak RSS "
            f"{summary.get('peak_rss_mib', float('nan')):.0f} MiB)")
    if best is None:
        return [head, "  no population network is as fast: none dominates it"]
    gap = s["mean"] - best["mean"]
    if gap >= 2 * sd:
        word = "beats every population network at equal or lower latency by >= 2 sd"
    elif gap > -2 * sd:
        word = "ties the best population network at equal or lower latency (inside 2 sd)"
    else:
        word = "is dominated"
    return [head, f"  {word}: best such is {best['name']} {best['mean']:.2f}% at "
                  f"{best['latency_ms']:.2f} ms (difference {gap:+.2f}, 2 sd = {2 * sd:.2f})"]


def ranking(folder: Path, rows: list[dict], args, data) -> list[str]:
    if not (folder / "checkpoint.pt").exists():
        return ["  supernet ranking: no checkpoint.pt"]
    scores, losses, config = supernet_scores(folder, [r["arch"] for r in rows], data,
                                             args.rank_images)
    retrained = [r["mean"] for r in rows]
    by_loss = tau([-x for x in losses], retrained)
    lines = [f"  supernet ranking ({config.get('weight_sharing', 'separate')} weights"
             f"{', sandwich' if config.get('sandwich') else ''}): Kendall tau "
             f"{tau(scores, retrained):.3f} by val top-1, {by_loss:.3f} by val loss, over "
             f"{len(rows)} networks (a perfect predictor: {args.ceiling})"]
    target = config.get("target")
    if target:
        near = [i for i, r in enumerate(rows) if abs(r["latency_ms"] / target - 1) <= 0.15]
        value = tau([scores[i] for i in near], [retrained[i] for i in near])
        lines.append(f"    within ±15% of T={target}: {len(near)} networks, tau "
                     + (f"{value:.3f}" if value is not None else "n/a"))
    return lines


def plot(path: Path, rows: list[dict], searched: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.errorbar([r["latency_ms"] for r in rows], [r["mean"] for r in rows],
                yerr=[r["sd"] or 0 for r in rows], fmt="o", color="0.5", label="population")
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        if r["mean"] > best:
            front.append(r)
            best = r["mean"]
    right = max(r["latency_ms"] for r in rows + searched)  # the front holds to the right edge
    ax.step([r["latency_ms"] for r in front] + [right], [r["mean"] for r in front]
            + [front[-1]["mean"]], where="post", color="0.3", label="population Pareto front")
    for s in searched:
        ax.errorbar(s["latency_ms"], s["mean"], yerr=s["sd"] or 0, fmt="*", ms=14,
                    label=s["name"])
    ax.set_xlabel("measured latency (ms, torch batch 1, 1 thread, table time base)")
    ax.set_ylabel(f"test top-1 (%), retrained {args.epochs} epochs on {args.train_images} images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
