"""The streaming image-folder loader (issue #19), measured: start-up, memory, throughput.

    python bench/make_image_folder.py 10000 /tmp/f10k && \
    python bench/make_image_folder.py 100000 /tmp/f100k
    python bench/streaming.py --small /tmp/f10k --large /tmp/f100k --out bench/results/streaming

1. Start-up on each folder: listing it with no cached index, then a second start (index
   cached) to the first training batch: `load_data` + the first `StreamBatches` batch.
2. Memory: the peak proportional set size (PSS: shared pages split between the processes
   sharing them, so the DataLoader workers' fork of the index is not counted twice) of the
   whole `proxyless train` process tree, the same command on each folder, for the same time.
3. Throughput of the training loader at 224 px (random-resized crop + flip, batch 64,
   `--workers` processes), side by side in interleaved rounds, against
   `torchvision_style_imagefolder` below: torchvision's ImageFolder + its classification
   preset (RandomResizedCrop, RandomHorizontalFlip, PILToTensor, ToDtype(float32, scale),
   Normalize in the workers), written the way torchvision does it because torchvision's wheels
   do not load beside this CPU build of torch. Also ours without reduced JPEG decoding, to
   show what `Image.draft` buys, and decoded images per second on one core.

Prints a summary and writes `streaming.json` and `streaming.txt` to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, JpegImagePlugin
from torch.utils.data import DataLoader, Dataset

from proxyless.arch import Architecture
from proxyless.data import StreamBatches, load_data
from proxyless.data.decode import random_resized_box
from proxyless.space import load_space

SIZE = 224


# ------------------------------------------------------------- the torchvision-style baseline

class TorchvisionStyleImageFolder(Dataset):
    """torchvision.datasets.ImageFolder: a list of (path, class) tuples, PIL loader with
    convert("RGB"), and the train preset's transforms applied per sample in the worker."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

    def __init__(self, root: Path, mean, std) -> None:
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                        for f in sorted(os.listdir(root / c))
                        if f.lower().endswith(self.EXTENSIONS)]
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        import random

        path, target = self.samples[i]
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")
        # RandomResizedCrop(224) (antialias on PIL: crop, then resize bilinear)
        box = random_resized_box(image.width, image.height, random, (0.08, 1.0))
        image = image.crop(box).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if random.random() < 0.5:  # RandomHorizontalFlip
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # PILToTensor
        x = x.to(torch.float32).div_(255)  # ToDtype(torch.float32, scale=True)
        return (x - self.mean) / self.std, target  # Normalize


def torchvision_style_loader(root: Path, batch: int, workers: int, mean, std) -> DataLoader:
    return DataLoader(TorchvisionStyleImageFolder(root, mean, std), batch_size=batch,
                      shuffle=True, num_workers=workers, persistent_workers=True, drop_last=True)


# --------------------------------------------------------------------------------- measures

def images_per_second(loader, batches: int) -> float:
    """Steady-state rate: the first batch (worker start-up) is not counted."""
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        x, y = next(it)
        count += len(y)
    return count / (time.perf_counter() - start)


def start_up(folder: Path, cache: Path) -> dict:
    """Seconds to list the folder with no cached index, and to the first batch of a second
    start (index cached), in fresh processes."""
    code = ("import time,sys; t=time.perf_counter(); from proxyless.data import load_data, "
            "StreamBatches; d=load_data(None, sys.argv[1], image_size=224, channels=3, "
            "val_size=0, notify=None); b=StreamBatches(d.train, 64, mean=d.mean, std=d.std, "
            "shuffle=True, augment=True, workers=2, drop_last=True); next(iter(b)); "
            "print(time.perf_counter()-t, len(d.train))")
    env = {**os.environ, "PROXYLESS_CACHE": str(cache)}
    shutil.rmtree(cache, ignore_errors=True)
    figures = {}
    for run in ("cold", "cached"):
        out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        figures[f"{run}_first_batch_s"], figures["train_images"] = float(out[0]), int(out[1])
    return figures


def tree_pss_mb(pid: int) -> float:
    """PSS of `pid` and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def peak_memory(folder: Path, arch: Path, seconds: float, cache: Path, out: Path) -> float:
    """Peak PSS (MB) of `proxyless train` on `folder` over its first `seconds`."""
    cmd = [str(Path(sys.executable).with_name("proxyless")), "train", str(arch), "--data",
           str(folder), "--epochs", "1", "--batch-size", "32", "--workers", "2",
           "--threads", "1", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PROXYLESS_CACHE": str(cache)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        peak = max(peak, tree_pss_mb(proc.pid))
        time.sleep(0.25)
    if proc.poll() is not None:
        raise SystemExit(f"proxyless train ended early: {proc.stderr.read().decode()[-2000:]}")
    proc.kill()
    proc.wait()
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=Path, required=True, help="folder of ~10,000 images")
    p.add_argument("--large", type=Path, required=True, help="folder of ~100,000 images")
    p.add_argument("--out", type=Path, default=Path("bench/results/streaming"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=12, help="batches timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory-seconds", type=float, default=90)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="streaming-"))
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch": torch.__version__,
                    "pillow": Image.__version__, "workers": args.workers, "size": SIZE}

    print("start-up ...", flush=True)
    report["start_up"] = {name: start_up(folder, work / f"cache-{name}")
                          for name, folder in (("small", args.small), ("large", args.large))}
    print(json.dumps(report["start_up"]), flush=True)

    print("memory ...", flush=True)
    space = load_space("imagenet")
    arch = work / "arch.json"
    Architecture(space, ("k3e3",) * space.num_blocks).save(arch)
    report["memory_pss_mb"] = {
        name: peak_memory(folder, arch, args.memory_seconds, work / f"cache-{name}",
                          work / f"train-{name}")
        for name, folder in (("small", args.small), ("large", args.large))}
    print(json.dumps(report["memory_pss_mb"]), flush=True)

    print("throughput ...", flush=True)
    data = load_data(None, args.large, image_size=SIZE, channels=3, val_size=0, notify=None,
                     data_mode="stream")
    train_root = args.large / "train" if (args.large / "train").is_dir() else args.large

    def ours(workers: int) -> StreamBatches:
        return StreamBatches(data.train, 64, mean=data.mean, std=data.std, shuffle=True,
                             augment=True, drop_last=True, workers=workers)

    full_draft = JpegImagePlugin.JpegImageFile.draft
    rates: dict[str, list[float]] = {"proxyless": [], "torchvision_style": [],
                                     "proxyless_no_draft": []}
    for r in range(args.rounds):
        rates["proxyless"].append(images_per_second(ours(args.workers), args.batches))
        rates["torchvision_style"].append(images_per_second(
            torchvision_style_loader(train_root, 64, args.workers, data.mean, data.std),
            args.batches))
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None  # workers fork it
        try:
            rates["proxyless_no_draft"].append(
                images_per_second(ours(args.workers), args.batches))
        finally:
            JpegImagePlugin.JpegImageFile.draft = full_draft
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
              flush=True)
    one_core = [images_per_second(ours(1), args.batches) for _ in range(args.rounds)]
    medians = {k: statistics.median(v) for k, v in rates.items()}
    report["throughput"] = {
        "images_per_s": rates, "median_images_per_s": medians,
        "ratio_vs_torchvision_style": medians["proxyless"] / medians["torchvision_style"],
        "ratio_draft": medians["proxyless"] / medians["proxyless_no_draft"],
        "one_worker_images_per_s": one_core,
        "images_per_s_per_core": statistics.median(one_core)}
    mem, counts = report["memory_pss_mb"], report["start_up"]
    extra_gib = (counts["large"]["train_images"] - counts["small"]["train_images"]) \
        * 3 * SIZE * SIZE / 2**30
    lines = [
        f"streaming loader, {report['machine']}, {report['cores']} cores, torch "
        f"{report['torch']}, Pillow {report['pillow']}",
        "start-up (s): " + "; ".join(
            f"{k} ({v['train_images']:,} train images): listing + first batch "
            f"{v['cold_first_batch_s']:.1f}, cached index {v['cached_first_batch_s']:.1f}"
            for k, v in report["start_up"].items()),
        f"peak PSS of `proxyless train` over {args.memory_seconds:.0f} s: small "
        f"{mem['small']:.0f} MB, large {mem['large']:.0f} MB, difference "
        f"{mem['large'] - mem['small']:+.0f} MB (in memory at {SIZE} px the difference "
        f"would be {extra_gib:.1f} GiB of pixels)",
        f"training loader at {SIZE} px, batch 64, {args.workers} workers, median of "
        f"{args.rounds} interleaved rounds of {args.batches} batches (images/s): "
        + ", ".join(f"{k} {v:.0f} ({', '.join(f'{x:.0f}' for x in rates[k])})"
                    for k, v in medians.items()),
        f"ratio proxyless / torchvision-style: "
        f"{report['throughput']['ratio_vs_torchvision_style']:.2f}; "
        f"reduced JPEG decoding: x{report['throughput']['ratio_draft']:.2f}",
        f"one worker (one core decoding): {report['throughput']['images_per_s_per_core']:.0f} "
        f"images/s, so ~{math.ceil(3000 / report['throughput']['images_per_s_per_core'])} "
        "cores feed a GPU training at 3,000 images/s",
    ]
    print("\n".join(lines))
    (args.out / "streaming.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "streaming.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
