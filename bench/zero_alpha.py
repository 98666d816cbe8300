"""Does skipping the α step of a block whose active path is zero (the reference code's
mix_op.py; `--zero-alpha skip`) change what the search finds, against updating it (ours)?

    python bench/zero_alpha.py                        # 3 seeds, the quick budget's search
    python bench/zero_alpha.py --seeds 5 --out bench/results/zero-alpha-5

Each seed searches twice on full Fashion-MNIST (the `fashion` space, this device's cached
table, the target `proxyless run` would choose), once per mode, with the quick budget's
schedule (2 warm-up + 3 search epochs of 20,000 images, an α step every 2 weight steps).
Printed per seed and mode: the derived network, its predicted latency against the target,
the argmax validation top-1, the number of zero blocks and the mean p(zero). Then the
differences *between modes* (same seed) beside those *between seeds* (same mode), which are
the noise: the distance between final p (total variation, mean over blocks) and the number
of blocks whose argmax op differs. A mode matters only where the first clearly exceeds the
second. Searches already done (their `bench_search.json`) are read back, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from proxyless import load_space
from proxyless.data import load_data
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import latency_model
from proxyless.latency.profile import ProfileSetting
from proxyless.pipeline.run import RunConfig
from proxyless.search.config import ZERO_ALPHA, SearchConfig
from proxyless.search.loop import search


def tv_distance(p: list[list[float]], q: list[list[float]]) -> float:
    """Total variation between two searches' final p, averaged over blocks."""
    return statistics.fmean(0.5 * sum(abs(a - b) for a, b in zip(pb, qb, strict=True))
                            for pb, qb in zip(p, q, strict=True))


def differing_blocks(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a.split("|"), b.split("|"), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/zero-alpha")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    space = load_space("fashion")
    data = load_data(None, val_size=0.1, seed=0, image_size=28, channels=1)
    table, _ = cached_table(space, ProfileSetting(), progress=False)
    model = latency_model(table, space)
    fastest, slowest = model.bounds()
    target = round(fastest + RunConfig.target_fraction * (slowest - fastest), 3)
    print(f"data {data.name}: {len(data.train):,} train / {len(data.val):,} val; target "
          f"{target} ms ({table.meta.get('backend')}, batch {table.meta.get('batch', 1)})")
    zero_slots = [i for i, slot in enumerate(space.slots()) if "zero" in slot.candidates]

    def searched(seed: int, mode: str) -> dict:
        run_dir = out / f"seed{seed}-{mode}"
        done = run_dir / "bench_search.json"
        if done.exists():
            return json.loads(done.read_text())
        config = SearchConfig(warmup_epochs=2, epochs=3, train_limit=20000, arch_every=2,
                              target=target, seed=seed, zero_alpha=mode,
                              threads=args.threads)
        started = time.perf_counter()
        result = search(space, data, model, config, run_dir, progress=False,
                        log=lambda m: None)
        probs = result.probs_history[-1]
        record = {"arch": result.arch.encode(), "probs": probs,
                  "predicted_ms": model.predict(result.arch),
                  "val_top1": result.metrics[-1]["val_top1"],
                  "zero_blocks": sum(op == "zero" for op in result.arch.blocks),
                  "p_zero": statistics.fmean(
                      probs[i][space.slots()[i].candidates.index("zero")]
                      for i in zero_slots),
                  "search_s": time.perf_counter() - started}
        done.write_text(json.dumps(record))
        return record

    runs = {(seed, mode): searched(seed, mode)
            for seed in range(args.seeds) for mode in ZERO_ALPHA}
    print(f"\n{'seed':>4} {'mode':>6} {'pred ms':>8} {'vs T':>7} {'val top1':>8} "
          f"{'zero blocks':>11} {'mean p(zero)':>12}  arch")
    for (seed, mode), r in runs.items():
        print(f"{seed:>4} {mode:>6} {r['predicted_ms']:>8.3f} "
              f"{100 * (r['predicted_ms'] / target - 1):>+6.1f}% {r['val_top1']:>8.2f} "
              f"{r['zero_blocks']:>11} {r['p_zero']:>12.3f}  {r['arch']}")

    def summary(pairs: list[tuple[dict, dict]]) -> tuple[float, float, float, float]:
        tv = [tv_distance(a["probs"], b["probs"]) for a, b in pairs]
        blocks = [differing_blocks(a["arch"], b["arch"]) for a, b in pairs]
        sd = statistics.stdev if len(pairs) > 1 else (lambda v: 0.0)
        return statistics.fmean(tv), sd(tv), statistics.fmean(blocks), sd(blocks)

    between_modes = [(runs[s, "update"], runs[s, "skip"]) for s in range(args.seeds)]
    between_seeds = [(runs[a, m], runs[b, m]) for m in ZERO_ALPHA
                     for a, b in itertools.combinations(range(args.seeds), 2)]
    print(f"\n{'pairs':<28} {'n':>3} {'TV(final p)':>16} {'blocks differing':>18}")
    for name, pairs in (("update vs skip, same seed", between_modes),
                        ("seed vs seed, same mode", between_seeds)):
        tv, tv_sd, blocks, blocks_sd = summary(pairs)
        print(f"{name:<28} {len(pairs):>3} {tv:>9.3f} ± {tv_sd:.3f} "
              f"{blocks:>10.1f} ± {blocks_sd:.1f}")
    for mode in ZERO_ALPHA:
        values = [runs[s, mode] for s in range(args.seeds)]
        for key in ("predicted_ms", "val_top1", "zero_blocks", "p_zero"):
            numbers = [v[key] for v in values]
            spread = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
            print(f"  {mode:>6} {key:<13} mean {statistics.fmean(numbers):.3f} "
                  f"sd {spread:.3f}")
    (out / "summary.json").write_text(json.dumps(
        {"target_ms": target, "runs": {f"{s}-{m}": r for (s, m), r in runs.items()}},
        indent=1))


if __name__ == "__main__":
    main()
