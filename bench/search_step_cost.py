"""What one search batch costs against training the same path alone, in fp32 and bf16
autocast, side by side (issue #35, item 3: the search on a CPU at 224 px).

    python bench/search_step_cost.py                         # imagenet, batch 32, 224 px
    python bench/search_step_cost.py --space fashion --batch 128

For one path drawn from uniform p (seeded), timed in interleaved rounds, medians:
  standalone   an SGD step of that path built as a plain network (`derived_network`)
  weight step  the search's weight step: the supernet with that path's gates, forward,
               backward and an SGD step over the supernet's weights (`SearchEpoch`'s)
  arch step    the gradient strategy's architecture step (`two`: two paths, weights frozen)
The search's cost per training batch is a weight step plus one architecture step every
`--arch-every` batches; its ratio to the standalone step is the search's overhead over
training one network (the paper's claim: the memory and about the compute of one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from proxyless import load_space
from proxyless.engine.precision import Precision
from proxyless.engine.training_speed import cpu_has_native_bf16
from proxyless.model.architecture import Architecture
from proxyless.model.supernet import SuperNet
from proxyless.search.config import SearchConfig
from proxyless.search.gradient import GradientStrategy


def timed_ms(step, steps: int) -> float:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def arms(space_name: str, batch: int, precision_name: str, seed: int) -> dict:
    space = load_space(space_name)
    torch.manual_seed(seed)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed)
    net.sample_gates("sample", g)
    path = Architecture.from_indices(space, [op.active for op in net.mixed_ops])
    x = torch.randn(batch, space.in_channels, space.input_size, space.input_size
                    ).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,))
    precision = Precision(precision_name, "cpu")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    plain = net.derived_network(path).to(memory_format=torch.channels_last)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    net_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9, nesterov=True)
    strategy = GradientStrategy(net, None, SearchConfig(), precision)
    gates = torch.Generator().manual_seed(seed + 1)

    def sgd(model, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()

    def weight_step() -> None:
        net.sample_gates("sample", gates, fixed=path)
        sgd(net, net_opt)

    return {"standalone": lambda: sgd(plain, plain_opt), "weight step": weight_step,
            "arch step": lambda: strategy.step(x, y, gates), "path": path.encode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="imagenet")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--arch-every", type=int, default=5, help="the paper's 5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/search-step-cost"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {p: arms(args.space, args.batch, p, args.seed) for p in args.precisions}
    print(f"{args.space}, batch {args.batch}, path {steps[args.precisions[0]]['path']}")
    names = ("standalone", "weight step", "arch step")
    for p in args.precisions:  # warm-up: kernels, caches, first allocations
        for name in names:
            timed_ms(steps[p][name], 1)
    times = {p: {name: [] for name in names} for p in args.precisions}
    for r in range(args.rounds):
        for p in args.precisions:
            for name in names:
                times[p][name].append(timed_ms(steps[p][name], args.steps))
        print(f"round {r + 1}: " + "; ".join(
            f"{p} " + ", ".join(f"{n} {times[p][n][-1]:.0f} ms" for n in names)
            for p in args.precisions), flush=True)
    report = {"space": args.space, "batch": args.batch, "arch_every": args.arch_every,
              "threads": args.threads, "native_bf16": cpu_has_native_bf16(),
              "torch": torch.__version__, "step_ms": times, "results": {}}
    base = statistics.median(times["fp32"]["standalone"]) if "fp32" in times else None
    print(f"\nmedians of {args.rounds} interleaved rounds of {args.steps} steps, "
          f"{args.threads} threads (native bf16: {report['native_bf16']}):")
    for p in args.precisions:
        m = {n: statistics.median(v) for n, v in times[p].items()}
        per_batch = m["weight step"] + m["arch step"] / args.arch_every
        result = {**{f"{n} ms": v for n, v in m.items()}, "search batch ms": per_batch,
                  "search / standalone": per_batch / m["standalone"]}
        if base:
            result["search batch vs fp32 standalone"] = per_batch / base
        report["results"][p] = result
        print(f"{p}: standalone {m['standalone']:.0f} ms, weight step {m['weight step']:.0f} "
              f"ms, arch step {m['arch step']:.0f} ms -> search batch (arch step every "
              f"{args.arch_every}) {per_batch:.0f} ms = x{per_batch / m['standalone']:.2f} "
              "the standalone step"
              + (f", x{per_batch / base:.2f} fp32's standalone" if base else ""))
    (args.out / f"search_step_cost-{args.space}-b{args.batch}.json").write_text(
        json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
