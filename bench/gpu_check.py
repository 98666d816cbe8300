"""The GPU check: one prepared script that tells, in under 8 minutes on one H100, whether the
GPU path works and what it costs (issue 20).

    .venv/bin/python bench/gpu_check.py --out bench/results/gpu            # on a GPU machine
    .venv/bin/python bench/gpu_check.py --device cpu --quick --out /tmp/g  # CPU smoke (tests)

For the `imagenet` space at 224 px and one batch size (default 128) under `--precision`
(default auto: bf16 where the GPU has it), it measures images per second and peak memory of

  (a) one training step of the standalone all-k7e6 network (the largest path),
  (b) the search's weight step (one path drawn from p),
  (c) its architecture step, two-path and recompute,
  (d) whole search batches (weight steps with an architecture step every 5),

each beside the standalone network of the same sampled path (a ratio; (d) against the
largest path). Then a CUDA batch-8 latency table of the space (`proxyless profile`), its
`latency-check` figures, a 1-process `torchrun` smoke search, and an estimate of the paper's
protocol (`--budget paper`) on 8 such GPUs from the measured per-batch times. It writes
`gpu_check.json` and `gpu_check.txt` to `--out`.

Memory: on CUDA the peak allocated during the step beyond what was allocated before it
(weights, optimizer state); on the CPU (no allocator statistics) the bytes autograd saves for
backward, the activations, which is what the one-path claim is about.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from proxyless.engine.memory import saved_for_backward
from proxyless.engine.precision import resolve_precision
from proxyless.model.architecture import Architecture
from proxyless.model.network import build_network
from proxyless.model.space import load_space
from proxyless.model.supernet import SuperNet
from proxyless.search.config import SearchConfig
from proxyless.search.gradient import GradientStrategy

IMAGENET_TRAIN = 1_281_167 - 50_000  # the paper's search trains on ImageNet less 50,000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per call of `step` and its memory (see the module's docstring)."""
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - started)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) - before
    else:
        memory = saved_for_backward(step)
    return {"seconds": statistics.median(times), "memory_bytes": int(memory)}


def training_step(forward, optimizer, scaler, precision, y) -> None:
    """One SGD step of `forward()`'s logits on labels `y`, as the search and training run it."""
    with precision.autocast():
        logits = forward()
    loss = nn.functional.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def standalone_step(arch: Architecture, x, y, device, precision):
    net = build_network(arch).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    scaler = precision.scaler()
    return lambda: training_step(lambda: net(x), optimizer, scaler, precision, y)


def supernet_steps(supernet: SuperNet, x, y, xv, yv, precision, config: SearchConfig):
    optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.01, momentum=0.9,
                                nesterov=True)
    scaler = precision.scaler()
    strategy = GradientStrategy(supernet, None, config, precision)
    gates = torch.Generator().manual_seed(0)

    def weight_step(fixed=None):
        supernet.sample_gates("sample", gates, fixed=fixed)
        training_step(lambda: supernet(x), optimizer, scaler, precision, y)

    def arch_step():
        strategy.step(xv, yv, gates)
    return weight_step, arch_step, strategy


def run_cli(args: list[str], timeout: int, torchrun: bool = False) -> dict:
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "1", "-m", "proxyless.cli"] if torchrun
              else [sys.executable, "-m", "proxyless.cli"])
    started = time.perf_counter()
    try:
        proc = subprocess.run(prefix + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s", "seconds": timeout}
    return {"ok": proc.returncode == 0, "seconds": round(time.perf_counter() - started, 1),
            "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:] if proc.returncode
            else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the fashion space at batch 8, 2 repeats, a short "
                             "table (what the test suite runs on the CPU)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    precision = resolve_precision(args.precision, device)
    space = load_space("fashion" if args.quick else "imagenet")
    batch, repeats = (8, 2) if args.quick else (args.batch, args.repeats)
    torch.manual_seed(0)
    size, channels = space.input_size, space.in_channels
    x = torch.randn(batch, channels, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (batch,), device=device)
    xv, yv = x.flip(0), y.flip(0)
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "space": space.name, "image_size": size, "batch": batch, "precision": precision.name,
        "memory_measure": ("peak CUDA memory allocated during the step, beyond what was "
                           "allocated before" if device.type == "cuda" else
                           "bytes autograd saved for backward (activations)"),
    }
    steps: dict[str, dict] = {}

    def record(name: str, step, reference: Architecture) -> None:
        measured = measure(step, device, repeats)
        alone = measure(standalone_step(reference, x, y, device, precision), device, repeats)
        steps[name] = {
            "images_per_s": batch / measured["seconds"],
            "memory_mb": measured["memory_bytes"] / 2**20,
            "standalone_images_per_s": batch / alone["seconds"],
            "standalone_memory_mb": alone["memory_bytes"] / 2**20,
            "time_ratio": measured["seconds"] / alone["seconds"],
            "memory_ratio": measured["memory_bytes"] / max(alone["memory_bytes"], 1),
            "path": reference.encode()}
        print(f"{name}: {steps[name]['images_per_s']:.0f} img/s, "
              f"{steps[name]['memory_mb']:.0f} MB; x{steps[name]['time_ratio']:.2f} time, "
              f"x{steps[name]['memory_ratio']:.2f} memory of the standalone path", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    largest = Architecture.uniform(space, "k7e6")
    steps["standalone_k7e6"] = {
        "images_per_s": batch / measure(standalone_step(largest, x, y, device, precision),
                                        device, repeats)["seconds"]}
    supernet = SuperNet(space).to(device, memory_format=torch.channels_last)
    config = SearchConfig(device=args.device, arch_lr=1e-3)
    weight_step, arch_step, strategy = supernet_steps(supernet, x, y, xv, yv, precision, config)
    supernet.sample_gates("sample", torch.Generator().manual_seed(1))
    drawn = supernet.active_architecture()
    record("weight_step", lambda: weight_step(drawn.indices()), drawn)
    for estimator in ("two", "recompute"):
        strategy.config = SearchConfig(device=args.device, arch_lr=1e-3, estimator=estimator)
        supernet.sample_gates(estimator, torch.Generator().manual_seed(2))
        active = supernet.active_architecture()
        record(f"arch_step_{estimator}", arch_step, active)
    strategy.config = config

    def search_batches() -> None:  # 5 weight steps on drawn paths and one architecture step
        for _ in range(5):
            weight_step()
        arch_step()
    whole = measure(search_batches, device, max(2, repeats // 5))
    per_batch = whole["seconds"] / 5
    steps["search_batch"] = {
        "images_per_s": batch / per_batch,
        "time_ratio_to_k7e6": per_batch * steps["standalone_k7e6"]["images_per_s"] / batch}
    if device.type == "cuda":  # saved bytes would add up six steps' activations
        steps["search_batch"]["memory_mb"] = whole["memory_bytes"] / 2**20
    report["steps"] = steps

    # the paper's protocol on 8 such GPUs (--budget paper: 40 + 120 epochs, retrain 300),
    # from the per-batch times above; communication and data loading left out: an estimate
    gpus = 8
    warmup_s = 40 * IMAGENET_TRAIN / steps["weight_step"]["images_per_s"]
    search_s = 120 * IMAGENET_TRAIN / steps["search_batch"]["images_per_s"]
    search_hours = (warmup_s + search_s) / gpus / 3600
    retrain_hours = 300 * IMAGENET_TRAIN / (steps["standalone_k7e6"]["images_per_s"]
                                            * gpus) / 3600
    report["paper_estimate_8_gpus"] = {
        "search_hours": search_hours, "retrain_hours_k7e6_upper_bound": retrain_hours,
        "note": f"estimate: images x the per-GPU rates measured at batch {batch} (the paper "
                "budget on 8 GPUs runs 32 per GPU: smaller batches are slower per image), "
                "warm-up at the weight step's rate, search at whole search batches'; no data "
                "loading or communication; retraining priced at the largest network"}

    if device.type == "cuda" or args.quick:
        table = out / "table.json"
        table.unlink(missing_ok=True)
        profile = ["profile", "--space", space.name, "--device", args.device, "--batch",
                   "8", "--out", str(table), "--no-progress", "--min-time",
                   "0.05" if args.quick else "2", "--calibrate", "3" if args.quick else "20"]
        if args.quick:
            profile += ["--repeats", "2", "--warmup", "1", "--backend", "torch"]
        report["profile"] = run_cli(profile, 60 if args.quick else 240)
        if report["profile"]["ok"]:
            check = run_cli(["latency-check", "--table", str(table), "--samples",
                             "4" if args.quick else "20", "--json", "--no-progress",
                             "--plot", str(out / "latency-check.png")],
                            120 if args.quick else 150)
            if check["ok"]:
                figures = json.loads(check["stdout"][check["stdout"].index("{"):])
                check = {k: figures[k] for k in ("mape", "spearman", "within_10pct",
                                                 "mape_uncalibrated", "samples", "batch",
                                                 "device")}
            report["latency_check"] = check
    smoke = ["search", "--space", "fashion", "--data", "builtin", "--device", args.device,
             "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32", "--train-limit",
             "256" if args.quick else "4000", "--val-size", "200", "--arch-every", "2",
             "--target-mflops", "6", "--out", str(out / "torchrun-search"), "--no-progress"]
    if (out / "torchrun-search").exists():
        import shutil

        shutil.rmtree(out / "torchrun-search")
    report["torchrun_smoke"] = run_cli(smoke, 150, torchrun=True)

    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    lines = [f"GPU check: {report['device']}, torch {report['torch']}, CUDA {report['cuda']}, "
             f"{space.name} at {size} px, batch {batch}, {precision.name}",
             f"memory: {report['memory_measure']}"]
    for name, figures in steps.items():
        lines.append(f"  {name:<18} " + ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in figures.items() if k != "path"))
    estimate = report["paper_estimate_8_gpus"]
    lines.append(f"paper protocol on 8 GPUs (estimate): search {estimate['search_hours']:.1f} h, "
                 f"retraining <= {estimate['retrain_hours_k7e6_upper_bound']:.1f} h")
    for key in ("profile", "latency_check", "torchrun_smoke"):
        if key in report:
            value = report[key]
            lines.append(f"{key}: " + (json.dumps({k: v for k, v in value.items()
                                                   if k not in ("stdout", "stderr")})
                                       if isinstance(value, dict) else str(value)))
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.txt").write_text(text)
    print(text, end="")
    failed = [k for k in ("profile", "torchrun_smoke") if k in report and not report[k]["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
