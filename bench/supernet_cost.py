"""Peak memory and time of one training step: supernet modes versus standalone networks.

    python bench/supernet_cost.py                 # both presets (imagenet 224 b16, fashion b256)
    python bench/supernet_cost.py --preset fashion --steps 20

Every configuration runs in a fresh process. Memory method: on the CPU, the process's peak
resident set (VmHWM from /proc/self/status) minus its resident set just before the first step
(model, optimizer and batch already built), i.e. what the step itself adds: activations,
gradients, optimizer state. On CUDA, torch.cuda.max_memory_allocated over the steps minus the
allocation before them. Time: median over the timed steps, after warm-up steps.

Configurations (X = a seeded random architecture of the space):
  standalone k7e6 / k3e3 / X  -- a weight step of the standalone network
  sample                      -- supernet weight step, gates held to X (one path)
  two / recompute / full      -- supernet architecture step, active paths held to X
  search                      -- the default schedule: per batch one weight step on freshly
                                 sampled gates, and every 5th batch a `two` architecture step
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import torch

from proxyless import Architecture, build_network, load_space
from proxyless.model.supernet import SuperNet, rescale_pair

SETTINGS = {"imagenet": dict(size=224, batch=16), "fashion": dict(size=28, batch=256)}
CONFIGS = ["standalone-k7e6", "standalone-k3e3", "standalone-X", "sample", "two", "recompute",
           "full", "search"]
ARCH_EVERY = 5


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(preset: str, config: str, steps: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    space = load_space(preset)
    size, batch = SETTINGS[preset]["size"], SETTINGS[preset]["batch"]
    arch_x = Architecture.random(space, random.Random(2019))
    x = torch.randn(batch, space.in_channels, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,), device=device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    gen = torch.Generator().manual_seed(0)

    if config.startswith("standalone"):
        token = config.split("-")[1]
        arch = arch_x if token == "X" else Architecture.uniform(space, token)
        model = build_network(arch).to(device, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def step(i: int) -> None:
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model = SuperNet(space).to(device, memory_format=torch.channels_last)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.01, momentum=0.9,
                                nesterov=True)
        a_opt = torch.optim.Adam(model.arch_parameters(), lr=1e-3, betas=(0.0, 0.999))

        def weight_step(fixed) -> None:
            model.sample_gates("sample", gen, fixed=fixed)
            loss = criterion(model(x), y)
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            w_opt.step()

        def arch_step(mode: str, fixed) -> None:
            model.sample_gates(mode, gen, fixed=fixed)
            old = [a.detach().clone() for a in model.arch_parameters()]
            a_opt.zero_grad(set_to_none=True)
            with model.frozen_weights():
                loss = criterion(model(x), y)
                loss.backward()
            model.set_alpha_grads()
            a_opt.step()
            if mode == "two":
                for op, a in zip(model.mixed_ops, old, strict=True):
                    rescale_pair(op.alpha, a, op.involved)

        def step(i: int) -> None:
            if config == "sample":
                weight_step(arch_x)
            elif config in ("two", "recompute", "full"):
                arch_step(config, arch_x)
            else:  # the default search schedule
                weight_step(None)
                if i % ARCH_EVERY == ARCH_EVERY - 1:
                    arch_step("two", None)

    model.train()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_kib("VmRSS")
        reset_peak_rss()
    times = []
    for i in range(warmup + steps):
        started = time.perf_counter()
        step(i)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = (rss_kib("VmHWM") - base) / 1024
    return {"preset": preset, "config": config, "step_mib": peak_mib,
            "time_s": statistics.median(times), "arch_x": arch_x.encode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.config:  # child process: one configuration
        print(json.dumps(measure(args.preset, args.config, args.steps, args.warmup,
                                 args.device)))
        return

    presets = list(SETTINGS) if args.preset == "all" else [args.preset]
    for preset in presets:
        steps = args.steps or (10 if preset == "imagenet" else 20)
        rows = {}
        for config in CONFIGS:
            n = steps * 2 if config == "search" else steps  # the schedule needs several cycles
            cmd = [sys.executable, __file__, "--preset", preset, "--config", config,
                   "--steps", str(n), "--warmup", str(args.warmup), "--device", args.device,
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode != 0:
                sys.exit(f"{preset}/{config} failed:\n{out.stderr}")
            rows[config] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  measured {preset}/{config}", file=sys.stderr)
        ref = rows["standalone-X"]
        size, batch = SETTINGS[preset]["size"], SETTINGS[preset]["batch"]
        print(f"\n{preset} preset, {size}x{size}, batch {batch}, {args.threads} threads, "
              f"{args.device}; X = {ref['arch_x']}")
        print(f"{'configuration':<18}{'step memory MiB':>16}{'x X':>7}{'time/step s':>13}"
              f"{'x X':>7}")
        for config, row in rows.items():
            print(f"{config:<18}{row['step_mib']:>16.1f}{row['step_mib'] / ref['step_mib']:>7.2f}"
                  f"{row['time_s']:>13.3f}{row['time_s'] / ref['time_s']:>7.2f}")


if __name__ == "__main__":
    main()
