"""How long `import proxyless.cli` takes (what every `proxyless` command, `--help` included,
pays before it does anything), for this tree and optionally another checkout side by side.

    python bench/import_time.py --runs 15
    git worktree add /tmp/base <ref> && python bench/import_time.py --against /tmp/base/src

Runs alternate between the trees (the machine's drift hits both alike); each run is a fresh
interpreter timed by `python -X importtime` (the cumulative microseconds of the package) and by
the wall clock of the whole process. Prints medians, interquartile ranges and the ratio.
Bytecode is cached (`PYTHONDONTWRITEBYTECODE` is unset for the runs, and the first, untimed
run of each tree writes the .pyc files), as in an installed package: without it every run
compiles every module's source, and the figure measures the source's length.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def one_run(src: Path, module: str, preload: str = "") -> tuple[float, float]:
    """(ms of `import MODULE` by -X importtime, ms of the whole process); `preload`: modules
    imported first, so that the figure leaves them out (e.g. "torch,numpy,yaml": the
    package's own share)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           (f"import {preload}; " if preload else "") + f"import {module}"],
                          env=env, capture_output=True, text=True, check=True)
    wall = (time.perf_counter() - start) * 1000
    line = [x for x in proc.stderr.splitlines() if x.rstrip().endswith(f"| {module}")][-1]
    cumulative = int(re.split(r"\s*\|\s*", line)[1])
    return cumulative / 1000, wall


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"median {statistics.median(values):7.1f} ms  IQR {q[2] - q[0]:6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--preload", default="",
                        help="modules to import first and leave out of the figure, e.g. "
                             "torch,numpy,yaml")
    parser.add_argument("--module", default="proxyless.cli",
                        help="what to import (default proxyless.cli; e.g. proxyless)")
    parser.add_argument("--against", type=Path, default=None,
                        help="the src/ folder of another checkout to time beside this one")
    args = parser.parse_args()
    trees = {"this tree": SRC, **({"against": args.against} if args.against else {})}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for src in trees.values():  # warm the file cache and write the bytecode
        one_run(src, args.module, args.preload)
    for _ in range(args.runs):
        for name, src in trees.items():
            figures[name].append(one_run(src, args.module, args.preload))
    for name, runs in figures.items():
        print(f"{name:<10} import {args.module}: {summary([r[0] for r in runs])}   "
              f"process: {summary([r[1] for r in runs])}")
    if args.against:
        mine = statistics.median(r[0] for r in figures["this tree"])
        theirs = statistics.median(r[0] for r in figures["against"])
        print(f"ratio this/against (import): x{mine / theirs:.3f}")


if __name__ == "__main__":
    main()
