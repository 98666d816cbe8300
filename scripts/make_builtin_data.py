"""Rebuild the built-in Fashion-MNIST subset shipped in src/proxyless/builtin_data/.

Usage: python scripts/make_builtin_data.py [/usr/share/datasets/fashion-mnist]

Takes a class-balanced, seeded subset (600 per class from the training split, 100 per class
from the test split) and writes it as gzipped IDX files, the format of the original release,
so the same reader serves the built-in data and a full download.
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np

SEED = 20190101
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    # mtime=0 keeps the files byte-identical across rebuilds.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + array.astype(np.uint8).tobytes())


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
    out = Path(__file__).resolve().parents[1] / "src" / "proxyless" / "builtin_data"
    rng = np.random.default_rng(SEED)
    for split, prefix, per_class in (("train", "train", TRAIN_PER_CLASS),
                                     ("test", "t10k", TEST_PER_CLASS)):
        images = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        keep = balanced_subset(labels, per_class, rng)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[keep])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[keep])
        print(f"{split}: {len(keep)} images")


if __name__ == "__main__":
    main()
