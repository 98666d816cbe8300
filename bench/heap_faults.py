"""PyTorch on the CPU with glibc's default heap against the heap kept (`timer.keep_freed_memory`):
imagenet networks timed end to end at batch 1, one thread, twice in one process, with the
minor page faults and kernel time of each pass.

Takes a latency-check JSON of an imagenet PyTorch table measured with the default heap
(`results/latency/imagenet-torch-1.json`) and times the 4 networks it found cheapest and the 4
dearest against their table sum (measured / sum): with the default heap those fell in two
groups by no feature of the networks.

    .venv/bin/python bench/heap_faults.py bench/results/latency/imagenet-torch-1.json --min-time 5

Run it in a fresh process on an idle machine: the heap setting lasts for the process.
"""

from __future__ import annotations

import argparse
import json
import resource

import numpy as np

import proxyless.latency.timer as timer_module
from proxyless.latency.timer import Timer
from proxyless.model.architecture import decode
from proxyless.model.network import build_network
from proxyless.model.space import load_space


def one_pass(archs, plain: np.ndarray, min_time: float) -> str:
    before = resource.getrusage(resource.RUSAGE_SELF)
    timer = Timer("torch", "cpu", 1, 5, 10, min_time)
    entries = timer.time([(build_network(a), (1, 3, 224, 224)) for a in archs])
    after = resource.getrusage(resource.RUSAGE_SELF)
    ratios = np.array([e.ms for e in entries]) / plain
    return (f"measured / table sum {np.round(ratios, 2).tolist()}; minor page faults "
            f"{after.ru_minflt - before.ru_minflt:,}, kernel time "
            f"{after.ru_stime - before.ru_stime:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("check", help="latency-check --json output of an imagenet PyTorch table")
    p.add_argument("--min-time", type=float, default=5.0)
    args = p.parse_args()
    check = json.loads(open(args.check).read())
    space = load_space("imagenet")
    measured, plain = (np.array(check[k]) for k in ("measured_ms", "predicted_uncalibrated_ms"))
    order = np.argsort(measured / plain)
    pick = [*order[:4], *order[-4:]]
    archs = [decode(space, check["architectures"][i]) for i in pick]
    print(f"at the check, measured / table sum: {np.round((measured / plain)[pick], 2).tolist()}")
    keep = timer_module.keep_freed_memory
    timer_module.keep_freed_memory = lambda: None  # the first pass: glibc's default heap
    print("default heap:", one_pass(archs, plain[pick], args.min_time))
    timer_module.keep_freed_memory = keep
    keep()
    print("heap kept:   ", one_pass(archs, plain[pick], args.min_time))


if __name__ == "__main__":
    main()
