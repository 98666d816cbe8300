"""How a finished search's supernet ranks the uniform networks of its space.

    python bench/supernet_ranking.py bench/results/search/unconstrained-gradient

Every candidate op in every block (all-k3e3, ..., all-k7e6), taken out of the supernet with
its BatchNorm statistics re-estimated on 20 training batches, scored on 2,000 validation
images: the ranking the architecture steps see. Compare it with the same networks retrained
alone (bench/search_vs_baselines.py) to see whether weight sharing favours some ops.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from proxyless import Architecture
from proxyless.data import Batches, load_data
from proxyless.engine.runtime import load_checkpoint
from proxyless.model.batchnorm import recalibrate_batchnorm
from proxyless.model.space import SearchSpace
from proxyless.model.supernet import SuperNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("search_dir", help="a search's folder (holds checkpoint.pt)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(Path(args.search_dir) / "checkpoint.pt")
    space = SearchSpace.from_dict(checkpoint["space"])
    net = SuperNet(space, weight_sharing=checkpoint["config"].get("weight_sharing", "separate"))
    net.load_state_dict(checkpoint["supernet"])
    search = checkpoint["config"]
    data = load_data(None, val_size=search["val_size"], seed=search["seed"],
                     image_size=space.input_size, channels=space.in_channels)
    common = dict(mean=data.mean, std=data.std, augment=False)
    val = Batches(data.val.subset(torch.arange(min(args.images, len(data.val)))), 500,
                  shuffle=False, pad=False, **common)
    calibration = Batches(data.train, 128, shuffle=True, **common)
    ops = [op for op in space.candidates if op != "zero"]
    print(f"{args.search_dir} (epoch {checkpoint['epoch']}): val top-1 of uniform networks "
          f"on the supernet's weights, BN recalibrated")
    for op in ops:
        arch = Architecture(space, tuple(op for _ in space.slots()))
        model = net.derived_network(arch)
        recalibrate_batchnorm(model, calibration, 20)
        model.eval()
        correct = count = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()
                count += y.numel()
        print(f"  all-{op}: {100 * correct / count:.2f}%", flush=True)


if __name__ == "__main__":
    main()
