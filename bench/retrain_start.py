"""What the retraining starts from: PyTorch's default initialisation, the authors' he_fout
(ours since 2026-12-07), or the supernet's trained paths (`run --retrain-init supernet`).

    python bench/retrain_start.py                      # after bench/zero_alpha.py
    python bench/retrain_start.py --search DIR --epochs 5 --seeds 3

The searched network of DIR (a search folder written by `bench/zero_alpha.py`: its
bench_search.json names the architecture, its checkpoint.pt holds the supernet) is trained
on all of Fashion-MNIST's 60,000 training images for `--epochs` epochs with the retraining's
defaults, once per start and seed, and tested on the 10,000 test images. Printed: the test
top-1 of every run, each start's mean and seed sd, and each start's difference from he_fout
with its standard error; a difference within two standard errors is called noise. Runs
already done (their final.json) are read back, so a rerun resumes.
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
from proxyless.model.initialization import initialize
from proxyless.model.network import build_network
from proxyless.search.outputs import trained_supernet
from proxyless.training.trainer import TrainConfig, train_network

STARTS = ("pytorch", "he_fout", "supernet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", default="bench/results/zero-alpha/seed0-update")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    parser.add_argument("--out", default="bench/results/retrain-start")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out, search_dir = Path(args.out), Path(args.search)
    out.mkdir(parents=True, exist_ok=True)

    space = load_space("fashion")
    arch = decode(space, json.loads((search_dir / "bench_search.json").read_text())["arch"])
    data = load_data(None, val_size=0, seed=0, image_size=28, channels=1)
    print(f"{arch.encode()}\n{data.name}: {len(data.train):,} train / {len(data.test):,} test, "
          f"{args.epochs} epochs, seeds 0..{args.seeds - 1}")
    source = {"name": data.name, "source": data.source, "transform": data.transform}

    def start_file(start: str, seed: int) -> str | None:
        """The model file a run starts from; None: the network's own (he_fout) weights."""
        if start == "he_fout":
            return None
        if start == "supernet":
            net = trained_supernet(search_dir).derived_network(arch)
        else:
            torch.manual_seed(seed)
            net = initialize(build_network(arch), "pytorch")
        path = out / f"start-{start}-seed{seed}.pt"
        save_model(path, net, ModelInfo(arch, data.mean, data.std, data.train.classes, source))
        return str(path)

    top1: dict[str, list[float]] = {}
    curves: dict[str, list[list[float]]] = {}
    for start in args.starts:
        for seed in range(args.seeds):
            run_dir = out / f"{start}-seed{seed}"
            if not (run_dir / "final.json").exists():
                config = TrainConfig(epochs=args.epochs, seed=seed, threads=args.threads,
                                     init_from=start_file(start, seed))
                train_network(arch, data, config, run_dir, progress=False, log=lambda m: None)
            final = json.loads((run_dir / "final.json").read_text())
            epochs = [json.loads(line)["test_top1"] for line in
                      (run_dir / "metrics.jsonl").read_text().splitlines()]
            top1.setdefault(start, []).append(final["test_top1"])
            curves.setdefault(start, []).append(epochs)
            print(f"{start:>9} seed {seed}: test top-1 by epoch "
                  + " ".join(f"{v:.2f}" for v in epochs), flush=True)

    print(f"\n{'start':>9} {'mean top-1':>10} {'seed sd':>8}  runs")
    for start, values in top1.items():
        print(f"{start:>9} {statistics.fmean(values):>10.2f} {statistics.stdev(values):>8.2f}"
              f"  {', '.join(f'{v:.2f}' for v in values)}")
    if "he_fout" in top1:
        base = top1["he_fout"]
        for start, values in top1.items():
            if start == "he_fout":
                continue
            diff, se, verdict = seed_difference(values, base)
            print(f"{start} - he_fout: {diff:+.2f} points (standard error {se:.2f}): {verdict}")
    (out / "summary.json").write_text(json.dumps(
        {"arch": arch.encode(), "epochs": args.epochs, "top1": top1, "curves": curves},
        indent=1))


if __name__ == "__main__":
    main()
