"""Write an ImageNet-layout folder of realistic JPEGs for the streaming-data benchmarks (issue #19).

The streaming image-folder loader is measured for memory and throughput on a folder that looks
like ImageNet to it: one folder per class, JPEGs of varying size and aspect ratio (each side
300..500 px, roughly 20-80 KB at quality 90) and ImageNet's odd files: a few CMYK JPEGs,
grayscale JPEGs and PNG files named `.JPEG`. No download: the pixels come from Fashion-MNIST
(the full set from /usr/share/datasets/fashion-mnist when installed, else the subset built into
the package), drawn with replacement, upscaled (bicubic), tinted with a colour per class, given
a random brightness, and textured with noise and gradients so the files compress like photos.

    OUT/train/<class>/<class>_<index>.JPEG   N images      (--layout imagenet, the default)
    OUT/val/<class>/<class>_<index>.JPEG     M images      (drawn from the test split)
    OUT/<class>/<class>_<index>.JPEG         N images      (--layout flat)

Classes are Fashion-MNIST's, named filesystem-safe ("t-shirt_top", "trouser", ...); with more
than 10 they repeat with a suffix ("t-shirt_top_2", ...) and their own colours. Every image
is seeded by (--seed, its index), so the folder does not depend on --jobs.

    .venv/bin/python bench/make_image_folder.py 100000 /tmp/imagefolder --jobs 2
    .venv/bin/python bench/make_image_folder.py 2000 /tmp/flat --layout flat --classes 20
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops
from tqdm import tqdm

SIDES = (300, 500)  # smallest and largest width or height, in pixels
QUALITY = 90  # JPEG quality of every JPEG written
TILE = 1024  # side of the texture tile that each image takes a random crop of
BACKGROUND_MAX = 60  # background colour channels are drawn from 0..BACKGROUND_MAX
BRIGHTNESS = (0.75, 1.25)  # per-image factor on the class colour

# Random streams, each seeded by (seed, stream, ...), so one draw never shifts another.
IMAGE_STREAM, ODD_STREAM, CLASS_STREAM, TEXTURE_STREAM = range(4)

ODD_KINDS = ("cmyk", "gray", "png")
KIND_NAMES = {"cmyk": "CMYK JPEG", "gray": "grayscale JPEG", "png": "PNG named .JPEG"}


class Item(NamedTuple):
    """One file to write."""

    index: int  # global index over all files: seeds the image
    path: str  # relative to OUT
    class_index: int
    split: str  # source pool: "train" (Fashion-MNIST train) or "val" (its test split)
    kind: str  # "rgb" or one of ODD_KINDS


@dataclass(frozen=True)
class Sources:
    """Source images of one split, and the indices of each label's images among them."""

    images: np.ndarray  # n x 28 x 28 uint8
    by_label: list[np.ndarray]


@dataclass(frozen=True)
class WorkerState:
    out: Path
    seed: int
    sources: dict[str, Sources]
    tints: np.ndarray  # classes x 3, RGB 0..255
    texture: Image.Image  # TILE x TILE RGB, centred on 128


_state: WorkerState | None = None  # set in each worker by _init_worker


def whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write an ImageNet-layout folder of realistic JPEGs made from Fashion-MNIST.")
    parser.add_argument("n", metavar="N", type=positive_int, help="number of training images")
    parser.add_argument("out", metavar="OUT", type=Path, help="new or empty output folder")
    parser.add_argument("--val", metavar="M", type=non_negative_int, default=None,
                        help="number of validation images (default: max(N // 10, classes)); "
                             "not with --layout flat")
    parser.add_argument("--classes", type=positive_int, default=10,
                        help="number of class folders (default: 10)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--layout", choices=("imagenet", "flat"), default="imagenet",
                        help="imagenet: OUT/train/<class> and OUT/val/<class>; "
                             "flat: OUT/<class> with N images (default: imagenet)")
    parser.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                        help="worker processes (default: os.cpu_count())")
    parser.add_argument("--odd-share", type=share, default=0.002,
                        help="share of files that are CMYK JPEGs, grayscale JPEGs or PNGs, split "
                             "evenly, at least one of each from N >= 50 unless 0 (default: 0.002)")
    args = parser.parse_args(argv)
    if args.layout == "flat" and args.val is not None:
        parser.error("--val is for --layout imagenet; a flat folder has no validation split")
    if args.val is None:
        args.val = 0 if args.layout == "flat" else max(args.n // 10, args.classes)
    return args


def class_names(base: Sequence[str], count: int) -> list[str]:
    """Filesystem-safe class names, the base names repeated with a suffix past the first round."""
    safe = [re.sub(r"[^a-z0-9-]+", "_", name.lower()).strip("_") for name in base]
    return [safe[k % len(safe)] + (f"_{k // len(safe) + 1}" if k >= len(safe) else "")
            for k in range(count)]


def class_tints(seed: int, count: int) -> np.ndarray:
    """A bright RGB colour (0..255) per class, each drawn from (seed, class)."""
    tints = np.empty((count, 3))
    for k in range(count):
        rng = np.random.default_rng((seed, CLASS_STREAM, k))
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.4, 0.9), rng.uniform(0.75, 1)
        tints[k] = np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255
    return tints


def make_texture(seed: int) -> Image.Image:
    """Noise, blotches and broad gradients around 128: what JPEG has to spend bytes on."""
    rng = np.random.default_rng((seed, TEXTURE_STREAM))

    def smooth(cells: int, sigma: float) -> np.ndarray:
        small = np.clip(128 + rng.standard_normal((cells, cells, 3)) * sigma, 0, 255)
        image = Image.fromarray(small.astype(np.uint8), "RGB")
        return np.asarray(image.resize((TILE, TILE), Image.Resampling.BICUBIC), np.float32) - 128

    noise = rng.standard_normal((TILE, TILE, 3)).astype(np.float32) * 6
    texture = 128 + noise + smooth(64, 16) + smooth(4, 25)
    return Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB")


def load_sources(classes: int) -> tuple[dict[str, Sources], list[str], str]:
    """Fashion-MNIST train and test images by label, its class names, and where it came from."""
    from proxyless.data import load_data  # imports torch: not before the arguments are checked

    data = load_data(None, notify=None, val_size=0)
    names = list(data.train.classes)
    sources = {}
    for split, images in (("train", data.train), ("val", data.test)):
        labels = images.labels.numpy()
        by_label = [np.flatnonzero(labels == label) for label in range(min(classes, len(names)))]
        if any(len(indices) == 0 for indices in by_label):
            sys.exit(f"{split} data from {data.source} lacks images of some class")
        sources[split] = Sources(images.images[:, 0].numpy(), by_label)
    return sources, names, str(data.source)


def plan(n: int, m: int, names: Sequence[str], layout: str, seed: int,
         odd_share: float) -> list[Item]:
    """Every file to write: class k takes images k, k + classes, ... of each split."""
    splits = [("train", n), ("val", m)] if layout == "imagenet" else [("", n)]
    total = n + m
    per_kind = 0 if odd_share == 0 else max(round(total * odd_share / 3), 1 if n >= 50 else 0)
    per_kind = min(per_kind, total // len(ODD_KINDS))
    chosen = np.random.default_rng((seed, ODD_STREAM)).choice(
        total, per_kind * len(ODD_KINDS), replace=False)
    kinds = {int(index): ODD_KINDS[i // per_kind] for i, index in enumerate(chosen)}
    items, index = [], 0
    for folder, count in splits:
        source = folder or "train"  # the folder names the pool; flat draws on the train split
        for j in range(count):
            k = j % len(names)
            path = os.path.join(folder, names[k], f"{names[k]}_{j // len(names)}.JPEG")
            items.append(Item(index, path, k, source, kinds.get(index, "rgb")))
            index += 1
    return items


def render(item: Item, state: WorkerState) -> Image.Image:
    """The RGB image of one item: its source upscaled, coloured and textured."""
    rng = np.random.default_rng((state.seed, IMAGE_STREAM, item.index))
    sources = state.sources[item.split]
    pool = sources.by_label[item.class_index % len(sources.by_label)]
    source = sources.images[pool[rng.integers(len(pool))]]
    width, height = (int(side) for side in rng.integers(SIDES[0], SIDES[1] + 1, size=2))
    gray = Image.fromarray(source, "L").resize((width, height), Image.Resampling.BICUBIC)
    # Colour through a palette: gray 0 -> the background colour, 255 -> the class colour.
    foreground = np.minimum(state.tints[item.class_index] * rng.uniform(*BRIGHTNESS), 255)
    background = rng.uniform(0, BACKGROUND_MAX, size=3)
    ramp = np.linspace(0, 1, 256)[:, None]
    palette = np.rint(background + ramp * (foreground - background)).astype(np.uint8)
    gray.putpalette(palette.tobytes())
    colour = gray.convert("RGB")  # putpalette made it a "P" image
    left, top = (int(rng.integers(0, TILE - side + 1)) for side in (width, height))
    texture = state.texture.crop((left, top, left + width, top + height))
    return ImageChops.add(colour, texture, scale=1.0, offset=-128)


def _init_worker(out: Path, seed: int, sources: dict[str, Sources], tints: np.ndarray) -> None:
    global _state
    _state = WorkerState(out, seed, sources, tints, make_texture(seed))


def _write_chunk(items: Sequence[Item]) -> tuple[Counter[str], int]:
    """Write some items; return how many of each kind and their bytes."""
    assert _state is not None, "_init_worker sets the state"
    kinds: Counter[str] = Counter()
    written = 0
    for item in items:
        image = render(item, _state)
        path = _state.out / item.path
        match item.kind:
            case "rgb":
                image.save(path, "JPEG", quality=QUALITY)
            case "cmyk":
                image.convert("CMYK").save(path, "JPEG", quality=QUALITY)
            case "gray":
                image.convert("L").save(path, "JPEG", quality=QUALITY)
            case "png":
                image.save(path, "PNG")
        kinds[item.kind] += 1
        written += os.path.getsize(path)
    return kinds, written


def write(items: list[Item], out: Path, seed: int, sources: dict[str, Sources],
          tints: np.ndarray, jobs: int) -> tuple[Counter[str], int]:
    """Write all items with `jobs` processes, showing progress."""
    for folder in sorted({os.path.dirname(item.path) for item in items}):
        (out / folder).mkdir(parents=True, exist_ok=True)
    size = min(max(math.ceil(len(items) / (jobs * 16)), 8), 500)
    chunks = [items[start:start + size] for start in range(0, len(items), size)]
    kinds: Counter[str] = Counter()
    written = 0
    initargs = (out, seed, sources, tints)
    with tqdm(total=len(items), unit="img", desc="writing") as progress, ExitStack() as stack:
        if jobs == 1:
            _init_worker(*initargs)
            results: Iterable[tuple[Counter[str], int]] = map(_write_chunk, chunks)
        else:
            pool = stack.enter_context(Pool(jobs, initializer=_init_worker, initargs=initargs))
            results = pool.imap_unordered(_write_chunk, chunks)
        for chunk_kinds, chunk_bytes in results:
            kinds += chunk_kinds
            written += chunk_bytes
            progress.update(chunk_kinds.total())
    return kinds, written


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not a folder" if not out.is_dir() else "is not empty"
        print(f"{Path(sys.argv[0]).name}: {out} {what}; give a new or empty folder",
              file=sys.stderr)
        sys.exit(2)
    start = time.perf_counter()
    sources, base_names, source = load_sources(args.classes)
    names = class_names(base_names, args.classes)
    items = plan(args.n, args.val, names, args.layout, args.seed, args.odd_share)
    loaded = time.perf_counter()
    print(f"{len(items):,} images in {args.classes} classes from {source}, {args.jobs} jobs")
    kinds, written = write(items, out, args.seed, sources, class_tints(args.seed, args.classes),
                           args.jobs)
    seconds = time.perf_counter() - loaded
    split = f"{args.n:,} train + {args.val:,} val" if args.layout == "imagenet" else "flat"
    print(f"wrote {len(items):,} images ({split}) to {out}")
    print("odd files: " + ", ".join(f"{kinds[kind]} {KIND_NAMES[kind]}" for kind in ODD_KINDS))
    print(f"{written / 1e6:.1f} MB on disk ({written / len(items) / 1e3:.1f} KB per image) in "
          f"{seconds:.1f} s ({len(items) / seconds:.0f} images/s; "
          f"{loaded - start:.1f} s more to load the data)")


if __name__ == "__main__":
    main()
