"""The streaming image-folder loader (issue #19), measured: start-up, memory, throughput.

    python bench/make_image_folder.py 10000 /tmp/f10k && \
    python bench/make_image_folder.py 100000 /tmp/f100k
    python bench/streaming.py --small /tmp/f10k --large /tmp/f100k --out bench/results/streaming

1. Start-up on each folder: listing it with no cached index, then a second start (index
   cached) to the first training batch: `load_data` + the first `StreamBatches` batch.
2. Memory: the peak proportional set size (PSS: shared pages split between the processes
   sharing them, so the DataLoader workers' fork of the index is not counted twice) of the
   whole `proxyless train` process tree, the same command on each folder, for the same time,
   in interleaved runs; and the median once training runs (after 20 s).
3. Throughput of the training loader at 224 px (random-resized crop + flip, batch 64,
   `--workers` processes) on the small folder, read once into the page cache first (so
   that no loader profits from files another one read), side by side in interleaved
   rounds with their own seeds, against
   `torchvision_style_imagefolder` below: torchvision's ImageFolder + its classification
   preset (RandomResizedCrop, RandomHorizontalFlip, PILToTensor, ToDtype(float32, scale),
   Normalize in the workers), written the way torchvision does it because torchvision's wheels
   do not load beside this CPU build of torch. Also ours without reduced JPEG decoding, to
   show what `Image.draft` buys, and decoded images per second on one core.

Prints a summary and writes `streaming.json` and `streaming.txt` to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
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

from proxyless.data import StreamBatches, load_data
from proxyless.data.decode import Crop, decode, random_resized_box
from proxyless.model.architecture import Architecture
from proxyless.model.space import load_space

SIZE = 224


# ------------------------------------------------------------- the torchvision-style baseline

class TorchRandom:
    """Draws from torch's global generator, as torchvision's transforms draw (the DataLoader
    seeds it per worker)."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return torch.empty(1).uniform_(low, high).item()

    @staticmethod
    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,)).item())

    @staticmethod
    def random() -> float:
        return torch.rand(1).item()


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
        path, target = self.samples[i]
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")
        # RandomResizedCrop(224) (antialias on PIL: crop, then resize bilinear)
        box = random_resized_box(image.width, image.height, TorchRandom, (0.08, 1.0))
        image = image.crop(box).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if TorchRandom.random() < 0.5:  # RandomHorizontalFlip
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # PILToTensor
        x = x.to(torch.float32).div_(255)  # ToDtype(torch.float32, scale=True)
        return (x - self.mean) / self.std, target  # Normalize


def torchvision_style_loader(root: Path, batch: int, workers: int, mean, std) -> DataLoader:
    return DataLoader(TorchvisionStyleImageFolder(root, mean, std), batch_size=batch,
                      shuffle=True, num_workers=workers, persistent_workers=True, drop_last=True)


# --------------------------------------------------------------------------------- measures

def images_per_second(loader, batches: int) -> float:
    """Steady-state rate: the first batch (worker start-up) is not counted. The loader's
    workers are shut down after: the next loader's fork must not inherit them."""
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        x, y = next(it)
        count += len(y)
    rate = count / (time.perf_counter() - start)
    del it
    data_loader = getattr(loader, "loader", loader)  # StreamBatches keeps its DataLoader
    if getattr(data_loader, "_iterator", None) is not None:
        data_loader._iterator._shutdown_workers()
        data_loader._iterator = None
    gc.collect()
    return rate


def read_into_page_cache(root: Path) -> tuple[int, float]:
    """Read every file under `root` once, so that every loader decodes from memory: the
    comparison is of decoding and cropping, not of whichever loader met a file first."""
    start, total = time.perf_counter(), 0
    for folder, _, files in os.walk(root):
        for name in files:
            total += len(Path(folder, name).read_bytes())
    return total, time.perf_counter() - start


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


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def tree_pss_mb(pid: int) -> float:
    """PSS of `pid` and all its descendants, in MB."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def peak_memory(folder: Path, arch: Path, seconds: float, cache: Path,
                out: Path) -> tuple[float, list[tuple[float, float]]]:
    """Peak PSS (MB) of `proxyless train` on `folder` over its first `seconds`, and the
    PSS every ~5 s (seconds, MB)."""
    cmd = [str(Path(sys.executable).with_name("proxyless")), "train", str(arch), "--data",
           str(folder), "--epochs", "1", "--batch-size", "8", "--workers", "2",
           "--threads", "1", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PROXYLESS_CACHE": str(cache)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    peak, timeline = 0.0, []
    while time.monotonic() < start + seconds and proc.poll() is None:
        pss = tree_pss_mb(proc.pid)
        peak = max(peak, pss)
        if not timeline or time.monotonic() - start >= timeline[-1][0] + 5:
            timeline.append((round(time.monotonic() - start, 1), round(pss)))
        time.sleep(0.25)
    if proc.poll() is not None:
        raise SystemExit(f"proxyless train ended early: {proc.stderr.read().decode()[-2000:]}")
    for child in descendants(proc.pid):  # the DataLoader workers too
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, 9)
    proc.kill()
    proc.wait()
    return peak, timeline


def draft_gain(source: Path, work: Path, rounds: int) -> dict:
    """Images/s of decoding + training crops in this process, with and without reduced JPEG
    decoding, on the folder's own photos (300-500 px) and on 40 of them enlarged to
    2400 x 1800 (a phone camera's size): reduced decoding pays only where a crop spans
    twice the output size or more."""
    photos = sorted((source / "train" if (source / "train").is_dir() else source)
                    .rglob("*.JPEG"))[:400]
    large = work / "large-photos"
    large.mkdir(exist_ok=True)
    for i, path in enumerate(photos[:40]):
        with Image.open(path) as image:
            image.convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC).save(
                large / f"{i}.jpg", quality=90)
    crop = Crop(SIZE, 3, train=True)
    full_draft = JpegImagePlugin.JpegImageFile.draft

    def rate(files: list[Path]) -> float:
        rng, start = random.Random(0), time.perf_counter()
        for path in files:
            decode(path, crop, rng)
        return len(files) / (time.perf_counter() - start)

    figures: dict[str, dict[str, list[float]]] = {}
    for name, files in (("photos_300_500px", photos), ("photos_2400x1800", sorted(
            large.glob("*.jpg")))):
        for f in files:
            f.read_bytes()
        runs: dict[str, list[float]] = {"draft": [], "no_draft": []}
        for _ in range(rounds):
            runs["draft"].append(rate(files))
            JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None
            try:
                runs["no_draft"].append(rate(files))
            finally:
                JpegImagePlugin.JpegImageFile.draft = full_draft
        figures[name] = {**runs, "ratio": statistics.median(runs["draft"])
                         / statistics.median(runs["no_draft"])}
    return figures


def our_loader(data, workers: int, seed: int, color_jitter: str = "none") -> StreamBatches:
    """The training loader of `search` and `train` on a streamed folder's training split."""
    return StreamBatches(data.train, 64, mean=data.mean, std=data.std, shuffle=True,
                         augment=True, drop_last=True, workers=workers, seed=seed,
                         color_jitter=color_jitter)


def compare_jitter(folder: Path, workers: int, rounds: int, batches: int) -> dict:
    """Images/s of our training loader with each `--color-jitter` (done in the decoding
    workers with Pillow's ImageEnhance), interleaved rounds with their own seeds; medians
    and their ratios to no jitter."""
    read_into_page_cache(folder)
    data = load_data(None, folder, image_size=SIZE, channels=3, val_size=0, notify=None,
                     data_mode="stream")
    rates: dict[str, list[float]] = {"none": [], "normal": [], "strong": []}
    for r in range(rounds):
        for i, jitter in enumerate(rates):
            rates[jitter].append(images_per_second(
                our_loader(data, workers, 3 * r + i, jitter), batches))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
              flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {"images_per_s": rates, "median_images_per_s": medians,
            "ratio_to_none": {k: v / medians["none"] for k, v in medians.items()},
            "workers": workers, "batches": batches, "size": SIZE}


def compare_loaders(folder: Path, workers: int, rounds: int, batches: int) -> dict:
    """Images/s of our training loader, the torchvision-style one and ours without reduced
    JPEG decoding on `folder` (read into the page cache first), interleaved rounds with
    their own seeds; medians and ratios."""
    size, seconds = read_into_page_cache(folder)
    print(f"read {size / 1e6:.0f} MB of {folder} into the page cache in {seconds:.0f} s")
    data = load_data(None, folder, image_size=SIZE, channels=3, val_size=0, notify=None,
                     data_mode="stream")
    train_root = folder / "train" if (folder / "train").is_dir() else folder

    def baseline(seed: int) -> DataLoader:
        torch.manual_seed(seed)  # its shuffle and crops
        return torchvision_style_loader(train_root, 64, workers, data.mean, data.std)

    full_draft = JpegImagePlugin.JpegImageFile.draft
    rates: dict[str, list[float]] = {"proxyless": [], "torchvision_style": [],
                                     "proxyless_no_draft": []}
    for r in range(rounds):
        rates["proxyless"].append(images_per_second(our_loader(data, workers, 3 * r), batches))
        rates["torchvision_style"].append(images_per_second(baseline(3 * r + 1), batches))
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None  # workers fork it
        try:
            rates["proxyless_no_draft"].append(
                images_per_second(our_loader(data, workers, 3 * r + 2), batches))
        finally:
            JpegImagePlugin.JpegImageFile.draft = full_draft
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()),
              flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {"images_per_s": rates, "median_images_per_s": medians,
            "ratio_vs_torchvision_style": medians["proxyless"] / medians["torchvision_style"],
            "ratio_draft": medians["proxyless"] / medians["proxyless_no_draft"],
            "data": data}


def make_camera_photos(source: Path, out: Path, count: int) -> Path:
    """`count` photos of 2400 x 1800 (a phone camera's size), two classes, enlarged from the
    folder's own: where reduced JPEG decoding pays."""
    photos = sorted((source / "train" if (source / "train").is_dir() else source)
                    .rglob("*.JPEG"))[:count]
    for i, path in enumerate(photos):
        target = out / f"class{i % 2}" / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC).save(
                target, quality=90)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=Path, required=True, help="folder of ~10,000 images")
    p.add_argument("--large", type=Path, required=True, help="folder of ~100,000 images")
    p.add_argument("--out", type=Path, default=Path("bench/results/streaming"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=12, help="batches timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--memory-seconds", type=float, default=60)
    p.add_argument("--memory-runs", type=int, default=2, help="interleaved runs per folder")
    p.add_argument("--photos", type=int, default=640,
                   help="camera-sized photos made for the loader comparison where they are")
    p.add_argument("--parts", default="startup,memory,throughput",
                   help="parts to measure; the others are taken from --out's streaming.json; "
                        "'jitter' alone: the colour jitter's cost (jitter.json)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    if parts == {"jitter"}:  # alone: the colour jitter's cost in the loader
        jitter = compare_jitter(args.small, args.workers, args.rounds, args.batches)
        (args.out / "jitter.json").write_text(json.dumps(jitter, indent=1))
        print("colour jitter in the training loader at 224 px, median images/s: " + ", ".join(
            f"{k} {v:.0f} (x{jitter['ratio_to_none'][k]:.2f})"
            for k, v in jitter["median_images_per_s"].items()))
        return
    earlier = (json.loads((args.out / "streaming.json").read_text())
               if parts != {"startup", "memory", "throughput"} else {})
    work = Path(tempfile.mkdtemp(prefix="streaming-"))
    report: dict = {"machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch": torch.__version__,
                    "pillow": Image.__version__, "workers": args.workers, "size": SIZE}

    if "startup" in parts:
        print("start-up ...", flush=True)
        report["start_up"] = {name: start_up(folder, work / f"cache-{name}") for name, folder
                              in (("small", args.small), ("large", args.large))}
        print(json.dumps(report["start_up"]), flush=True)
    else:
        report["start_up"] = earlier["start_up"]
    if "memory" in parts:
        measure_memory(args, work, report)
    else:
        report.update({k: earlier[k] for k in ("memory_pss_mb", "memory_pss_timeline")})
    if "throughput" not in parts:
        raise SystemExit("--parts must include throughput (the summary's last lines)")
    measure_throughput(args, work, report)
    write_summary(args, report)
    shutil.rmtree(work, ignore_errors=True)


def measure_memory(args: argparse.Namespace, work: Path, report: dict) -> None:
    print("memory ...", flush=True)
    space = load_space("imagenet")
    arch = work / "arch.json"
    Architecture(space, ("k3e3",) * space.num_blocks).save(arch)
    # interleaved runs: the network's activations jitter by tens of MB from one moment to
    # the next, more than the index of 90,000 more files weighs
    measured: dict[str, list] = {"small": [], "large": []}
    for run in range(args.memory_runs):
        for name, folder in (("small", args.small), ("large", args.large)):
            measured[name].append(peak_memory(folder, arch, args.memory_seconds,
                                              work / f"cache-{name}",
                                              work / f"train-{name}-{run}"))
    report["memory_pss_mb"] = {name: max(peak for peak, _ in runs)
                               for name, runs in measured.items()}
    report["memory_pss_timeline"] = {name: [line for _, line in runs]
                                     for name, runs in measured.items()}
    print(json.dumps(report["memory_pss_mb"]), flush=True)


def measure_throughput(args: argparse.Namespace, work: Path, report: dict) -> None:
    print("throughput ...", flush=True)
    throughput = compare_loaders(args.small, args.workers, args.rounds, args.batches)
    data = throughput.pop("data")
    print(f"camera-sized photos ({args.photos}) ...", flush=True)
    photos = make_camera_photos(args.small, work / "camera", args.photos)
    camera = compare_loaders(photos, args.workers, args.rounds, max(2, args.batches // 2))
    camera.pop("data")

    report["draft"] = draft_gain(args.small, work, args.rounds)
    print(json.dumps(report["draft"]), flush=True)
    one_core = [images_per_second(our_loader(data, 1, 100 + r), args.batches)
                for r in range(args.rounds)]
    report["throughput"] = {**throughput, "one_worker_images_per_s": one_core,
                            "images_per_s_per_core": statistics.median(one_core)}
    report["throughput_camera_photos"] = camera


def write_summary(args: argparse.Namespace, report: dict) -> None:
    rates = report["throughput"]["images_per_s"]
    medians = report["throughput"]["median_images_per_s"]
    camera = report["throughput_camera_photos"]
    mem, counts = report["memory_pss_mb"], report["start_up"]
    steady = {name: statistics.median(pss for line in lines for t, pss in line if t >= 20)
              for name, lines in report["memory_pss_timeline"].items()}
    report["memory_pss_median_after_20s_mb"] = steady
    extra_gib = (counts["large"]["train_images"] - counts["small"]["train_images"]) \
        * 3 * SIZE * SIZE / 2**30
    lines = [
        f"streaming loader, {report['machine']}, {report['cores']} cores, torch "
        f"{report['torch']}, Pillow {report['pillow']}",
        "start-up (s): " + "; ".join(
            f"{k} ({v['train_images']:,} train images): listing + first batch "
            f"{v['cold_first_batch_s']:.1f}, cached index {v['cached_first_batch_s']:.1f}"
            for k, v in report["start_up"].items()),
        f"peak PSS of `proxyless train` (batch 8) over {args.memory_seconds:.0f} s, "
        f"{args.memory_runs} interleaved runs each: small "
        f"{mem['small']:.0f} MB, large {mem['large']:.0f} MB, difference "
        f"{mem['large'] - mem['small']:+.0f} MB (in memory at {SIZE} px the difference "
        f"would be {extra_gib:.1f} GiB of pixels); median after the first 20 s: small "
        f"{steady['small']:.0f} MB, large {steady['large']:.0f} MB "
        f"({steady['large'] - steady['small']:+.0f} MB)",
        f"training loader at {SIZE} px, batch 64, {args.workers} workers, median of "
        f"{args.rounds} interleaved rounds of {args.batches} batches (images/s): "
        + ", ".join(f"{k} {v:.0f} ({', '.join(f'{x:.0f}' for x in rates[k])})"
                    for k, v in medians.items()),
        f"ratio proxyless / torchvision-style: "
        f"{report['throughput']['ratio_vs_torchvision_style']:.2f}; "
        f"reduced JPEG decoding in the loader: x{report['throughput']['ratio_draft']:.2f}; "
        "in one process, decode + crop: " + "; ".join(
            f"{k} x{v['ratio']:.2f} ({statistics.median(v['draft']):.0f} vs "
            f"{statistics.median(v['no_draft']):.0f} images/s)"
            for k, v in report["draft"].items()),
        f"camera-sized photos (2400 x 1800, {args.photos} files), median images/s: " + ", ".join(
            f"{k} {v:.0f}" for k, v in camera["median_images_per_s"].items())
        + f"; ratio proxyless / torchvision-style {camera['ratio_vs_torchvision_style']:.2f}, "
        f"reduced decoding x{camera['ratio_draft']:.2f}",
        f"one worker (one core decoding): {report['throughput']['images_per_s_per_core']:.0f} "
        f"images/s, so ~{math.ceil(3000 / report['throughput']['images_per_s_per_core'])} "
        "cores feed a GPU training at 3,000 images/s",
    ]
    print("\n".join(lines))
    (args.out / "streaming.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "streaming.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
