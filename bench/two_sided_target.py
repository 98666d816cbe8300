"""Does a latency target hold from both sides? (issue 20) The batch-64 throughput search of
`results/devices/` (torch, batch 64, 2 threads: candidates differ tenfold) run with the
two-sided constraint (`--target-floor 0.95`, the default) and one-sided (`--target-floor 0`)
at the same target, then both found networks measured together on the table's time base.

    .venv/bin/python bench/two_sided_target.py --out bench/results/devices   # ~25 min

1. `proxyless run --budget quick --retrain-epochs 1 --profile-backend torch --profile-batch 64
   --profile-threads 2 --threads 2` into OUT/torch-b64-t2-floor (the default target: 35% of
   the table's range), then the same with `--target-ms <that target> --target-floor 0` into
   OUT/torch-b64-t2-onesided (the table is cached: the same one). Finished runs are kept.
2. Both networks measured `--rounds` times beside the table's anchor network (`Meter`): each
   round's ms divided by the anchor's speed factor of the moment puts it on the table's time
   base, where the target is; medians and spread, and the ratio to the target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from proxyless.latency.measure import Meter
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import decode

RUN = ["run", "--budget", "quick", "--retrain-epochs", "1", "--profile-backend", "torch",
       "--profile-batch", "64", "--profile-threads", "2", "--threads", "2", "--no-progress"]


def run(folder: Path, *extra: str) -> dict:
    if not (folder / "results.json").exists():
        command = [sys.executable, "-m", "proxyless.cli", *RUN, "--out", str(folder), *extra]
        if folder.exists():
            command.append("--resume")
        print("$ proxyless " + " ".join(command[3:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads((folder / "results.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/devices")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    out = Path(args.out)
    floor = run(out / "torch-b64-t2-floor")
    target = floor["target_ms"]
    onesided = run(out / "torch-b64-t2-onesided", "--target-ms", str(target),
                   "--target-floor", "0")
    table = LatencyTable.load(out / "torch-b64-t2-floor" / "latency_table.json")
    archs = {"two-sided (floor 0.95)": decode(table.space, floor["arch"]),
             "one-sided": decode(table.space, onesided["arch"])}
    meter = Meter.for_table(table)
    rounds: dict[str, list[float]] = {name: [] for name in archs}
    speeds = []
    for r in range(args.rounds):
        ms, speed = meter.measure(list(archs.values()))
        speeds.append(speed)
        for name, value in zip(archs, ms, strict=True):
            rounds[name].append(value / speed)
        print(f"round {r + 1}: machine speed x{speed:.3f} of the table's; " + ", ".join(
            f"{n} {v / speed:.1f} ms" for n, v in zip(archs, ms, strict=True)), flush=True)
    lines = [f"target {target:.3f} ms (table's time base); {args.rounds} rounds, machine speed "
             f"x{min(speeds):.2f}-x{max(speeds):.2f} of the table's"]
    summary = {"target_ms": target, "speed_factors": speeds, "networks": {}}
    for name, result in zip(archs, (floor, onesided), strict=True):
        median = statistics.median(rounds[name])
        summary["networks"][name] = {"arch": result["arch"], "predicted_ms":
                                     result["predicted_ms"], "measured_ms_rounds": rounds[name],
                                     "measured_ms": median, "test_top1": result["test_top1"]}
        lines.append(f"{name:<24} predicted {result['predicted_ms']:.1f} ms "
                     f"({result['predicted_ms'] / target:.0%} of T), measured {median:.1f} ms "
                     f"({median / target:.0%} of T; rounds {min(rounds[name]):.1f}-"
                     f"{max(rounds[name]):.1f}), top-1 {result['test_top1']:.2f}% after 1 "
                     "retraining epoch")
    text = "\n".join(lines) + "\n"
    (out / "two_sided_target.txt").write_text(text)
    (out / "two_sided_target.json").write_text(json.dumps(summary, indent=2))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
