"""What a checkpoint inside an epoch costs a search of the imagenet space, on this machine.

    .venv/bin/python bench/checkpoint_cost.py --repeats 5 --out bench/results/checkpoint

The search's whole state is built as `proxyless search --space imagenet` builds it (the
supernet, SGD with a momentum buffer for every weight, the schedule, the α optimizer, p's
history) and written through the very code a run uses (`Epochs.poll` with a checkpoint due:
the loop's tallies, every RNG's state, the NaN check of the models, the atomic write with
fsync). Printed: the seconds per checkpoint (median of `--repeats`, and the spread), the
file's size, the seconds to read it back (resume), and the share of the time between two
checkpoints at the default `--checkpoint-every` (30 minutes) and of one epoch of ImageNet
(1,231,167 training images after the 50,000 held out) at `--batch` per step, with the step
time measured here: weight steps of the supernet on random 224x224 images (single-path, as
the search's weight steps; α steps not counted, so the epoch is longer than this and the
share smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from proxyless import load_space
from proxyless.engine import distributed
from proxyless.engine.epochs import Epochs, Tally
from proxyless.engine.optimizer import cosine_schedule, weight_optimizer
from proxyless.engine.runtime import RunContext
from proxyless.latency.cost import flops_model
from proxyless.latency.timer import cpu_model
from proxyless.model.supernet import SuperNet
from proxyless.search.config import SearchConfig
from proxyless.search.gradient import GradientStrategy

IMAGENET_TRAIN = 1_281_167 - 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="images per weight step")
    parser.add_argument("--steps", type=int, default=3, help="weight steps timed")
    parser.add_argument("--dir", default=None, help="where the checkpoints are written "
                        "(default: a temporary folder on this disk)")
    parser.add_argument("--out", default="bench/results/checkpoint")
    args = parser.parse_args()
    torch.manual_seed(0)
    space = load_space("imagenet")
    config = SearchConfig(metric="flops", target=300.0, batch_size=args.batch)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    w_opt = weight_optimizer(net.weight_parameters(), config.lr, config.momentum,
                             config.weight_decay)
    steps_per_epoch = IMAGENET_TRAIN // args.batch
    w_sched = torch.optim.lr_scheduler.LambdaLR(w_opt, cosine_schedule(
        config.epochs * steps_per_epoch))
    strategy = GradientStrategy(net, flops_model(space), config)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    gates = torch.Generator().manual_seed(0)

    x = torch.randn(args.batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, space.num_classes, (args.batch,))
    step_times, tally = [], Tally()
    for i in range(args.steps + 1):  # the first warms up
        started = time.perf_counter()
        net.sample_gates("sample", gates)
        logits = net(x)
        loss = criterion(logits, y)
        w_opt.zero_grad(set_to_none=True)
        loss.backward()
        w_opt.step()
        w_sched.step()
        tally.add(loss.detach() * args.batch, logits, y)
        if i:
            step_times.append(time.perf_counter() - started)
    for param in net.weight_parameters():  # after a while every weight has its momentum
        w_opt.state[param].setdefault("momentum_buffer", torch.zeros_like(param))

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        out = Path(folder)
        run = RunContext(distributed.DistInfo(), torch.device("cpu"), out / "checkpoint.pt")
        probs_history = [[p.tolist() for p in net.probs()]]
        epochs = Epochs(run, out, "proxyless-search/1", 2, 0,
                        state={"supernet": net, "w_optimizer": w_opt, "w_scheduler": w_sched,
                               "strategy": strategy, "probs_history": probs_history},
                        saved={"space": space.to_dict(), "config": vars(config)},
                        checkpoint_every=1e-9)
        epochs.epoch_started = time.perf_counter()
        loop = {"tally": tally.state_dict(), "arch_stats": [], "gates": gates.get_state()}
        writes, reads = [], []
        for k in range(args.repeats):
            epochs.saved_at = 0.0  # due
            started = time.perf_counter()
            epochs.poll(1, k + 1, steps_per_epoch, lambda: loop)
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            saved = torch.load(run.checkpoint, map_location="cpu", weights_only=True)
            reads.append(time.perf_counter() - started)
            assert saved["in_epoch"]["batch"] == k + 1
        size = run.checkpoint.stat().st_size

    write_s, step_s = statistics.median(writes), statistics.median(step_times)
    epoch_s = step_s * steps_per_epoch
    result = {
        "space": "imagenet", "machine": cpu_model(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "checkpoint_mib": size / 2**20, "write_s": writes, "write_s_median": write_s,
        "read_s_median": statistics.median(reads),
        "supernet_params_m": sum(p.numel() for p in net.weight_parameters()) / 1e6,
        "batch": args.batch, "step_s": step_times, "step_s_median": step_s,
        "steps_per_epoch": steps_per_epoch, "epoch_h_estimate": epoch_s / 3600,
        "share_of_30_min": write_s / 1800, "share_of_epoch": write_s / epoch_s,
    }
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    spread = f"{min(writes):.2f}-{max(writes):.2f}"
    text = "\n".join([
        f"imagenet space, this machine ({result['machine']}, {result['cpus']} CPUs, "
        f"torch {torch.__version__}, {result['threads']} threads)",
        f"checkpoint inside an epoch: {size / 2**20:.1f} MiB, written in {write_s:.2f} s "
        f"(median of {args.repeats}, range {spread} s), read back in "
        f"{result['read_s_median']:.2f} s",
        f"weight step at batch {args.batch}, 224 px: {step_s:.2f} s (median of "
        f"{args.steps}); an ImageNet epoch = {steps_per_epoch:,} steps = "
        f"{epoch_s / 3600:.1f} h here",
        f"share of the default 30-minute interval: {100 * write_s / 1800:.3f}%; of one "
        f"ImageNet epoch here: {100 * write_s / epoch_s:.5f}%",
    ])
    (folder / "result.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
