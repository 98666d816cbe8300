"""How long the default run retrains: its network's test top-1 after N epochs, over seeds
(issue #35: the default `make run` in 11 minutes at the same accuracy).

    python bench/retrain_length.py                          # 90 vs 60 epochs, 3 seeds
    python bench/retrain_length.py --arms scratch:90 supernet:45 --search runs/X/search

The network `make run` derived (`--arch`, default: bench/results/make-run/results.json's) is
retrained as `run` retrains it (TrainConfig's defaults, all the training images: on this
machine without Debian's Fashion-MNIST, the built-in 6,000) once per arm and seed, and tested
on the test images. An arm is START:EPOCHS, START `scratch` (he_fout, the paper) or
`supernet` (the derived paths' weights of the trained supernet in `--search`, as
`run --retrain-init supernet`). Printed: every run's test top-1 and wall time, each arm's mean
and seed sd, and each arm's difference from the first with its standard error; a difference
within two standard errors is called noise. Seeds run interleaved (seed 0 of every arm, then
seed 1, ...), and runs already done (their final.json) are read back, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from noise import seed_difference
from proxyless import load_space
from proxyless.data import load_data
from proxyless.deploy.model_file import ModelInfo, save_model
from proxyless.model.architecture import decode
from proxyless.search.outputs import trained_supernet
from proxyless.training.trainer import TrainConfig, train_network

STARTS = ("scratch", "supernet")


def parse_arm(text: str) -> tuple[str, int]:
    start, _, epochs = text.partition(":")
    if start not in STARTS or not epochs.isdigit() or int(epochs) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: an arm is START:EPOCHS, START one of "
                                         f"{', '.join(STARTS)}")
    return start, int(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", type=parse_arm,
                        default=[("scratch", 90), ("scratch", 60)])
    parser.add_argument("--arch", help="the network (default: make-run's results.json)")
    parser.add_argument("--search", help="a search folder, for `supernet` arms")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. seeds-1 (several processes, one each)")
    parser.add_argument("--out", default="bench/results/retrain-length")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if any(start == "supernet" for start, _ in args.arms) and not args.search:
        parser.error("a supernet arm needs --search SEARCH_DIR")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    space = load_space("fashion")
    arch_text = args.arch or json.loads(
        Path("bench/results/make-run/results.json").read_text())["arch"]
    arch = decode(space, arch_text)
    data = load_data(None, val_size=0, seed=0, image_size=28, channels=1)
    print(f"{arch.encode()}\n{data.name}: {len(data.train):,} train / {len(data.test):,} test, "
          f"arms {' '.join(f'{s}:{e}' for s, e in args.arms)}, seeds 0..{args.seeds - 1}",
          flush=True)
    start_file = None
    if any(start == "supernet" for start, _ in args.arms):
        start_file = out / "start-supernet.pt"
        net = trained_supernet(Path(args.search)).derived_network(arch)
        source = {"name": data.name, "source": data.source, "transform": data.transform}
        save_model(start_file, net,
                   ModelInfo(arch, data.mean, data.std, data.train.classes, source))

    top1: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in range(args.first_seed, args.seeds):
        for start, epochs in args.arms:
            name = f"{start}:{epochs}"
            run_dir = out / f"{start}-{epochs}-seed{seed}"
            if not (run_dir / "final.json").exists():
                config = TrainConfig(epochs=epochs, seed=seed, threads=args.threads,
                                     init_from=str(start_file) if start == "supernet"
                                     else None)
                train_network(arch, data, config, run_dir, progress=False, log=lambda m: None)
            final = json.loads((run_dir / "final.json").read_text())
            top1.setdefault(name, []).append(final["test_top1"])
            seconds.setdefault(name, []).append(final["train_time_s"])
            print(f"{name:>12} seed {seed}: test top-1 {final['test_top1']:.2f}% in "
                  f"{final['train_time_s']:.0f} s", flush=True)

    print(f"\n{'arm':>12} {'mean top-1':>10} {'seed sd':>8} {'median s':>9}  runs")
    for name, values in top1.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{name:>12} {statistics.fmean(values):>10.2f} {sd:>8.2f} "
              f"{statistics.median(seconds[name]):>9.0f}  "
              f"{', '.join(f'{v:.2f}' for v in values)}")
    names = list(top1)
    base = top1[names[0]]
    for name in names[1:]:
        values = top1[name]
        if len(values) < 2:
            continue
        diff, se, verdict = seed_difference(values, base)
        print(f"{name} - {names[0]}: {diff:+.2f} points (standard error {se:.2f}): {verdict}")
    (out / "summary.json").write_text(json.dumps(
        {"arch": arch.encode(), "data": data.name, "top1": top1, "train_time_s": seconds},
        indent=1))


if __name__ == "__main__":
    main()
