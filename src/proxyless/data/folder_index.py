"""The list of an image folder's files and labels, held compactly and cached between runs.

A folder of 1.28 M photos (ImageNet) is listed as one byte string of file names, an offset
per file and a label per file: ~30 MB, not the ~300 MB of 1.28 M Python strings, and numpy
arrays that DataLoader workers share by fork without copying (a Python list's reference
counts would copy it page by page). Listing such a folder takes minutes on network file
systems, so the index is cached under `cache_dir()/image-index/`, keyed by the folder's path
and the modification times of it and its class folders (adding or removing a file changes its
folder's time): the second start reads one file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxyless.config_io import clip
from proxyless.errors import ProxylessError
from proxyless.files import cache_dir, replace_atomically

# torchvision's ImageFolder extensions, so a folder prepared for it reads the same here (its
# class folders are read one level deep, not recursively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_INDEX_VERSION = 1


@dataclass(frozen=True)
class FolderIndex:
    """Files of `root`/<class>/: `labels[i]` indexes `classes`, file i's name is
    `names[offsets[i]:offsets[i + 1]]` (UTF-8, relative to its class folder)."""

    root: Path
    classes: tuple[str, ...]
    names: np.ndarray     # uint8, every file name back to back
    offsets: np.ndarray   # int64, len + 1
    labels: np.ndarray    # int32

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> Path:
        name = self.names[self.offsets[i]:self.offsets[i + 1]].tobytes()
        return self.root / self.classes[self.labels[i]] / os.fsdecode(name)

    @property
    def nbytes(self) -> int:
        return self.names.nbytes + self.offsets.nbytes + self.labels.nbytes


def _class_folders(root: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(root) as entries:
            return sorted((e for e in entries if e.is_dir() and not e.name.startswith(".")),
                          key=lambda e: e.name)
    except OSError as exc:
        raise ProxylessError(f"cannot list image folder {clip(root)}: "
                             f"{exc.strerror or exc}") from None


def _list(root: Path, folders: list[os.DirEntry]) -> FolderIndex:
    names, lengths, labels = [], [], []
    for label, folder in enumerate(folders):
        try:
            with os.scandir(folder.path) as entries:
                files = sorted(os.fsencode(e.name) for e in entries
                               if not e.name.startswith(".")
                               and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise ProxylessError(f"cannot list class folder {clip(folder.path)}: "
                                 f"{exc.strerror or exc}") from None
        if not files:
            raise ProxylessError(f"class folder {clip(folder.path)} holds no images "
                                 f"({', '.join(IMAGE_SUFFIXES)}); remove it or add its images")
        names += files
        lengths.append(np.fromiter(map(len, files), np.int64, len(files)))
        labels.append(np.full(len(files), label, np.int32))
    offsets = np.zeros(len(names) + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    blob = np.frombuffer(b"".join(names), np.uint8)
    return FolderIndex(root, tuple(f.name for f in folders), blob, offsets,
                       np.concatenate(labels))


def _cache_key(root: Path, folders: list[os.DirEntry]) -> str:
    stamp = [_INDEX_VERSION, str(root), root.stat().st_mtime_ns,
             [(f.name, f.stat().st_mtime_ns) for f in folders]]
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:24]


def _read_cached(path: Path, root: Path) -> FolderIndex | None:
    """The cached index, or None when there is none or it is unusable (a cache is never
    worth an error: the folder is listed again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            classes = tuple(json.loads(str(cached["classes"])))
            index = FolderIndex(root, classes, cached["names"], cached["offsets"],
                                cached["labels"])
        names, offsets, labels = index.names, index.offsets, index.labels
        ok = (names.dtype == np.uint8 and offsets.dtype == np.int64
              and labels.dtype == np.int32 and names.ndim == offsets.ndim == labels.ndim == 1
              and len(offsets) == len(labels) + 1 and offsets[0] == 0
              and offsets[-1] == len(names) and bool(np.all(np.diff(offsets) > 0))
              and all(isinstance(c, str) for c in classes)
              and (not len(labels) or 0 <= labels.min() <= labels.max() < len(classes)))
    # A damaged cache file fails in many ways (zipfile, EOFError, json, numpy): any is a miss.
    except Exception:
        return None
    return index if ok else None


def index_folder(root: str | Path, cache: bool = True) -> FolderIndex:
    """The index of `root`/<class>/<image files>: read from the cache when the folder has not
    changed since it was written, else listed (and cached, where the cache can be written)."""
    root = Path(root).expanduser().resolve()
    folders = _class_folders(root)
    if not folders:
        raise ProxylessError(f"{clip(root)} has no class subfolders; expected "
                             f"{clip(root)}/<class>/*{'|'.join(IMAGE_SUFFIXES)}")
    if not cache:
        return _list(root, folders)
    path = cache_dir() / "image-index" / f"{_cache_key(root, folders)}.npz"
    index = _read_cached(path, root)
    if index is None:
        index = _list(root, folders)
        try:
            replace_atomically(path, lambda f: np.savez(
                f, names=index.names, offsets=index.offsets, labels=index.labels,
                classes=np.array(json.dumps(index.classes))))
        except OSError:
            pass  # a read-only cache only costs the next start another listing
    return index
