"""What TensorBoard logging costs a search on this CPU: side by side with `--no-tensorboard`,
and timed from inside.

    .venv/bin/python bench/tensorboard_overhead.py --rounds 5 --out bench/results/tensorboard

1. Side by side: each round runs the same `proxyless search` (fashion space, built-in data,
   4,000 training images per epoch at batch 64: 62 weight steps per epoch, an α step every 2
   from the second search epoch, no target) once with event files and once with
   `--no-tensorboard`, in alternating order; the figure is the milliseconds per training batch
   of the epochs with architecture steps (their `epoch_time_s`, the epoch-end evaluation and
   pictures included). Prints medians, the ratio and the rounds' spread: this machine's noise
   is several percent, so this shows only that nothing large is hidden.
2. From inside: one more run in this process with every call into the logging timed (the
   step values, the architecture step's figures, the epoch's, p's picture, opening with the
   hparams), as a share of the run's wall time. This resolves what (1) cannot.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
STEPS = 4000 // 64
ARGS = ["search", "--space", "fashion", "--data", "builtin", "--train-limit", "4000",
        "--batch-size", "64", "--warmup-epochs", "1", "--epochs", "3", "--arch-every", "2",
        "--val-size", "500", "--threads", "2", "--no-progress"]


def one_run(out: Path, tensorboard: bool) -> tuple[float, float]:
    """Milliseconds per training batch of the search epochs with architecture steps, and the
    CPU seconds the whole command used (user + system: what other tenants' load on a shared
    VM changes less than wall time)."""
    env = {**os.environ, "PYTHONPATH": str(HERE / "src"), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "proxyless.cli", *ARGS, "--out", str(out),
               *([] if tensorboard else ["--no-tensorboard"])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["epoch_time_s"] for r in records[2:]) / STEPS * 1e3, cpu


def timed_from_inside(out: Path) -> dict[str, float]:
    """Seconds spent in each logging call of one search run in this process, and its wall
    time."""
    sys.path.insert(0, str(HERE / "src"))
    from proxyless.cli import main
    from proxyless.engine.tensorboard_log import RunBoard
    from proxyless.search.loop import SearchEpoch

    spent: dict[str, float] = {"all logging": 0.0}
    depth = [0]  # log_arch_step calls add: the total counts outermost calls only

    def timed(owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1
                seconds = time.perf_counter() - started
                spent[label] = spent.get(label, 0.0) + seconds
                if depth[0] == 0:
                    spent["all logging"] += seconds
        setattr(owner, name, wrapper)

    timed(RunBoard, "add", "step values (add, read)")
    timed(SearchEpoch, "log_arch_step", "architecture step figures")
    timed(RunBoard, "epoch", "epoch figures")
    timed(RunBoard, "figure", "p's picture")
    timed(RunBoard, "open", "open + hparams")
    timed(RunBoard, "close", "close")
    started = time.perf_counter()
    main([*ARGS, "--out", str(out)])
    spent["wall"] = time.perf_counter() - started
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    names = {True: "event files", False: "--no-tensorboard"}
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for tensorboard in ((True, False) if r % 2 == 0 else (False, True)):
                ms, seconds = one_run(Path(tmp) / f"{tensorboard}-{r}", tensorboard)
                times[tensorboard].append(ms)
                cpu[tensorboard].append(seconds)
                say(f"round {r + 1}: {names[tensorboard]} {ms:.1f} ms per batch, "
                    f"{seconds:.1f} CPU s in all")
        on, off = (statistics.median(times[k]) for k in (True, False))
        ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
        say(f"median ms per search batch: event files {on:.1f} (rounds {min(times[True]):.1f}-"
            f"{max(times[True]):.1f}), --no-tensorboard {off:.1f} ({min(times[False]):.1f}-"
            f"{max(times[False]):.1f})")
        say(f"ratio event files / --no-tensorboard: x{on / off:.3f} (per round "
            f"x{min(ratios):.3f} to x{max(ratios):.3f}, sd {statistics.stdev(ratios):.3f})")
        cpu_ratios = [a / b for a, b in zip(cpu[True], cpu[False], strict=True)]
        say(f"CPU seconds per run: event files {statistics.median(cpu[True]):.1f}, "
            f"--no-tensorboard {statistics.median(cpu[False]):.1f}: x"
            f"{statistics.median(cpu[True]) / statistics.median(cpu[False]):.3f} (per round "
            f"x{min(cpu_ratios):.3f} to x{max(cpu_ratios):.3f}, sd "
            f"{statistics.stdev(cpu_ratios):.3f})")
        spent = timed_from_inside(Path(tmp) / "inside")
    wall = spent.pop("wall")
    say(f"timed from inside, one run of {wall:.1f} s (4 epochs, {4 * STEPS} weight steps; the "
        "architecture step's figures include their add, counted once in the total):")
    for label, seconds in spent.items():
        say(f"  {label:<28} {seconds * 1e3:9.1f} ms  {100 * seconds / wall:6.3f}% of the run")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tensorboard_overhead.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
