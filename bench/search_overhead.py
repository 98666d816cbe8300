"""The CPU cost of a search batch (fp32) in this tree against another checkout, side by side.

    git worktree add /tmp/baseline <commit>
    .venv/bin/python bench/search_overhead.py --baseline /tmp/baseline --rounds 5

Each round runs the same `proxyless search` (fashion space, built-in data, 2,000 training
images per epoch at batch 64: 31 weight steps per epoch, an architecture step every 2 from
the second search epoch) once with this tree's `src/` and once with the baseline's, in
alternating order, and takes the milliseconds per training batch of the epochs that have
architecture steps (their `epoch_time_s`: evaluation of 500 images included on both sides).
No target: a target's constraint steers α, so the two trees would train other paths and
the comparison would be of architectures, not of machinery. Prints medians, the ratio and
the rounds' spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def one_run(src: Path, out: Path) -> float:
    """Milliseconds per training batch of the search epochs with architecture steps."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "proxyless.cli", "search", "--space", "fashion",
               "--data", "builtin", "--train-limit", "2000", "--batch-size", "64",
               "--warmup-epochs", "1", "--epochs", "3", "--arch-every", "2",
               "--val-size", "500", "--threads", "2",
               "--out", str(out), "--no-progress"]
    subprocess.run(command, check=True, env=env, capture_output=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    batches = 2000 // 64
    return statistics.mean(r["epoch_time_s"] for r in records[2:]) / batches * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"this tree": HERE / "src", "baseline": Path(args.baseline).resolve() / "src"}
    times: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                ms = one_run(trees[name], Path(tmp) / f"{name.replace(' ', '-')}-{r}")
                times[name].append(ms)
                print(f"round {r + 1}: {name} {ms:.1f} ms per batch", flush=True)
    ours, base = (statistics.median(times[n]) for n in trees)
    ratios = [a / b for a, b in zip(times["this tree"], times["baseline"], strict=True)]
    print(f"median ms per search batch: this tree {ours:.1f} (rounds "
          f"{min(times['this tree']):.1f}-{max(times['this tree']):.1f}), baseline "
          f"{base:.1f} ({min(times['baseline']):.1f}-{max(times['baseline']):.1f})")
    print(f"ratio this tree / baseline: x{ours / base:.3f} (per round x{min(ratios):.3f} to "
          f"x{max(ratios):.3f}, sd {statistics.stdev(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
