"""Training steps in fp32, bf16 autocast and torch.compile, and what `--precision auto` and
`--compile auto` choose, side by side on this machine (issue #35).

    python bench/training_speed.py                     # fashion b128 28 px, imagenet b32 224 px
    python bench/training_speed.py --spaces imagenet --compiled fp32 bf16

For each network (the space's all-k3e6 network, as the issue measured it) and batch: the
median time of one SGD step (forward, backward, update) over `--rounds` interleaved rounds of
`--steps` steps each, eager fp32, eager bf16 autocast and compiled (`--compiled`: fp32, bf16;
each compile's own time printed apart), their ratios to eager fp32, and what `auto` picks
for a run of the default retraining's length. Writes `training_speed-SPACES.json` to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from proxyless import Architecture, build_network, load_space
from proxyless.engine.precision import Precision
from proxyless.engine.training_speed import (
    choose_cpu_precision,
    compile_pays_back,
    cpu_has_native_bf16,
)

SETTINGS = {"fashion": (128, 28, 1), "imagenet": (32, 224, 3)}


def sgd_step_ms(model: nn.Module, optimizer, x, y, precision: Precision, steps: int) -> float:
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        with precision.autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def measure(space_name: str, rounds: int, steps: int, compiled: tuple[str, ...]) -> dict:
    batch, size, channels = SETTINGS[space_name]
    space = load_space(space_name)
    arch = Architecture.uniform(space, "k3e6")
    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,))
    arms: dict[str, tuple[nn.Module, Precision]] = {}
    for name, precision in (("fp32 eager", "fp32"), ("bf16 eager", "bf16")):
        net = build_network(arch).to(memory_format=torch.channels_last)
        arms[name] = (net, Precision(precision, "cpu"))
    compile_s = {}
    for name in compiled:
        net = build_network(arch).to(memory_format=torch.channels_last)
        model = torch.compile(net)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        started = time.perf_counter()
        sgd_step_ms(model, optimizer, x, y, Precision(name, "cpu"), 2)  # compiles
        compile_s[name] = time.perf_counter() - started
        arms[f"{name} compiled"] = (model, Precision(name, "cpu"))
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                  for name, (model, _) in arms.items()}
    for name, (model, precision) in arms.items():  # warm-up: kernels, caches
        sgd_step_ms(model, optimizers[name], x, y, precision, 2)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name, (model, precision) in arms.items():
            times[name].append(sgd_step_ms(model, optimizers[name], x, y, precision, steps))
        print(f"{space_name} round {r + 1}: "
              + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in times.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    steps_default = 9 * 60000 // batch  # the quick budget's retraining of full Fashion-MNIST
    choice = choose_cpu_precision(arms["fp32 eager"][0], x, y, nn.CrossEntropyLoss())
    step = choice.bf16_ms if choice.precision.name == "bf16" else choice.fp32_ms
    return {"batch": batch, "size": size, "step_ms": times, "median_step_ms": medians,
            "speedup_vs_fp32_eager": {k: medians["fp32 eager"] / v for k, v in medians.items()},
            "compile_s": compile_s,
            "auto_precision": choice.to_dict(),
            "auto_compile": compile_pays_back(step / 1000, steps_default, choice.precision),
            "auto_for_steps": steps_default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spaces", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--compiled", nargs="*", default=["fp32"], choices=("fp32", "bf16"),
                        help="precisions to time compiled too (each compile timed apart)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/training-speed"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"native_bf16": cpu_has_native_bf16(), "threads": args.threads,
              "torch": torch.__version__}
    for space_name in args.spaces:
        report[space_name] = measure(space_name, args.rounds, args.steps,
                                     tuple(args.compiled))
    print(f"\nnative bf16: {report['native_bf16']}, {args.threads} threads, median of "
          f"{args.rounds} interleaved rounds of {args.steps} SGD steps")
    for space_name in args.spaces:
        r = report[space_name]
        print(f"{space_name} all-k3e6, batch {r['batch']}, {r['size']} px: " + ", ".join(
            f"{k} {v:.0f} ms (x{r['speedup_vs_fp32_eager'][k]:.2f})"
            for k, v in r["median_step_ms"].items())
            + "".join(f"; {k} compile {v:.0f} s" for k, v in r["compile_s"].items())
            + f"; auto for {r['auto_for_steps']} steps: {r['auto_precision']['precision']}, "
              f"{'compiled' if r['auto_compile'] else 'not compiled'}")
    (args.out / f"training_speed-{'-'.join(args.spaces)}.json").write_text(
        json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
