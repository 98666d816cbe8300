"""Decode one image file into the network's input size, as training or evaluation crops it.

    training    random-resized crop (area share `scale`, aspect 3/4..4/3, as torchvision's
                RandomResizedCrop and the paper's ImageNet recipe) + horizontal flip, and
                optionally the reference code's colour jitter (`COLOR_JITTERS`)
    evaluation  the short side resized to size / 0.875, then the centre size x size

Both are one Pillow `resize(box=...)` of the decoded image, and a JPEG is decoded at the
smallest 1/2, 1/4 or 1/8 scale that still holds the crop at full detail (libjpeg's reduced
decoding, `Image.draft`): a 2000 px photo cropped to 224 px is decoded at 500 px, ~10x less
work. Every file loads as RGB (or L): CMYK and grayscale JPEGs, PNG under a .JPEG name, a
palette GIF. The result is uint8 H x W x C, what a batch is stacked from.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Resizing the short side to size / EVAL_CROP, then cropping size: the ImageNet convention
# (256 -> 224) of the paper's reference code and torchvision's references.
EVAL_CROP = 0.875
DEFAULT_SCALE = (0.08, 1.0)
_RATIO = (3 / 4, 4 / 3)


# The reference code's ColorJitter settings (search/data_providers/imagenet.py, --distort_color):
# (brightness, contrast, saturation, hue), each factor drawn as torchvision's ColorJitter does.
COLOR_JITTERS = {"none": None, "normal": (32 / 255, 0.0, 0.5, 0.0),
                 "strong": (0.4, 0.4, 0.4, 0.1)}


@dataclass(frozen=True)
class Crop:
    """How a set's images become size x size: `train` draws random-resized crops with area
    share `scale`, flips, and `color_jitter` (COLOR_JITTERS); otherwise the centre crop of
    evaluation."""

    size: int
    channels: int
    train: bool = False
    scale: tuple[float, float] = DEFAULT_SCALE
    color_jitter: str = "none"


def random_resized_box(width: int, height: int, rng: random.Random,
                       scale: tuple[float, float] = DEFAULT_SCALE,
                       ratio: tuple[float, float] = _RATIO) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a random crop covering `scale` of the area with an aspect
    ratio in `ratio` (log-uniform); after 10 misses, the centre crop clamped to `ratio`
    (torchvision's RandomResizedCrop.get_params)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def centre_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The region that resizing the short side to size / EVAL_CROP and cropping the centre
    size x size keeps, in the original image's pixels."""
    side = min(width, height) * EVAL_CROP  # size / (size / 0.875) of the short side
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


class UnreadableImage(Exception):
    """A file that is not an image Pillow can decode (damaged, truncated, empty, too large)."""


def decode(path: Path | str, crop: Crop, rng: random.Random | None = None) -> np.ndarray:
    """`path` as uint8 size x size x channels, cropped as `crop` says (random draws from
    `rng`, required for training). Raises UnreadableImage, with the decoder's complaint, for
    a file that cannot be decoded."""
    try:
        return _decode(path, crop, rng)
    except MemoryError:
        raise
    # A damaged file makes decoders raise nearly anything (OSError, SyntaxError, struct.error,
    # Pillow's DecompressionBombError...): each is this file's fault, not the run's.
    except Exception as err:
        # the caller names the file: the decoder's message need not repeat its whole path
        reason = str(err).replace(str(path), Path(path).name)
        raise UnreadableImage(f"{type(err).__name__}: {reason}"[:200]) from err


def _decode(path: Path | str, crop: Crop, rng: random.Random | None) -> np.ndarray:
    # Pillow builds its EXIF tables on import (~17 ms of `proxyless --help`): only the image
    # folder path needs it
    from PIL import Image

    mode = "L" if crop.channels == 1 else "RGB"
    with Image.open(path) as image:
        width, height = image.size
        if crop.train:
            box = random_resized_box(width, height, rng, crop.scale)
        else:
            box = centre_box(width, height, crop.size)
        # The smallest JPEG scale (1/8 .. 1) whose crop still has >= size pixels per side.
        side = min(box[2] - box[0], box[3] - box[1])
        reduce = max(1.0, side / crop.size)
        image.draft(mode, (max(1, int(width / reduce)), max(1, int(height / reduce))))
        fx, fy = image.size[0] / width, image.size[1] / height
        image = eight_bit(image)
        if image.mode == "P":  # palette transparency converts only by way of RGBA
            image = image.convert("RGBA")
        if image.mode != mode:
            image = image.convert(mode)
        out = image.resize((crop.size, crop.size), Image.Resampling.BILINEAR,
                           box=(box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy))
    if crop.train and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if crop.train and COLOR_JITTERS[crop.color_jitter] is not None:
        out = jitter_colors(out, COLOR_JITTERS[crop.color_jitter], rng)
    pixels = np.asarray(out)
    return pixels.reshape(crop.size, crop.size, crop.channels)


def jitter_colors(image, strengths: tuple[float, float, float, float], rng: random.Random):
    """`image` (Pillow, after the crop: size x size) with brightness, contrast, saturation and
    hue changed in a random order by factors drawn from [1 - s, 1 + s] (hue: a shift in
    [-s, s] of the colour wheel), as torchvision's ColorJitter; a grayscale image takes
    brightness and contrast only."""
    # see decode() on importing Pillow here
    from PIL import ImageEnhance

    brightness, contrast, saturation, hue = strengths
    changes = [(ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast)]
    if image.mode == "RGB":
        changes += [(ImageEnhance.Color, saturation), (_HueShift, hue)]
    rng.shuffle(changes)
    for change, strength in changes:
        if strength > 0:
            low = -strength if change is _HueShift else max(0.0, 1 - strength)
            high = strength if change is _HueShift else 1 + strength
            image = change(image).enhance(rng.uniform(low, high))
    return image


class _HueShift:
    """Hue turned by a share of the colour wheel, in Pillow's HSV (torchvision's adjust_hue
    for Pillow images), with ImageEnhance's interface."""

    def __init__(self, image) -> None:
        self.image = image

    def enhance(self, shift: float):
        # see decode() on importing Pillow here
        from PIL import Image

        h, s, v = self.image.convert("HSV").split()
        turned = (np.asarray(h, dtype=np.uint8) + np.uint8(round(shift * 255) % 256))
        return Image.merge("HSV", (Image.fromarray(turned, "L"), s, v)).convert("RGB")


# one-channel modes of more than 8 bits: 16-bit PNGs and TIFFs (I;16*, or I in older Pillow),
# 32-bit integer and float images
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def eight_bit(image):
    """`image` with more than 8 bits per pixel (a 16-bit grayscale PNG, say) scaled to 8 bits
    as image viewers show it: 0..65535 -> 0..255 (a float image within [0, 1]: -> 0..255;
    values beyond 65535: by the image's own maximum). Pillow's own conversion clips them to
    255 instead, which makes most 16-bit photos white. Other images as they are."""
    if image.mode not in _WIDE_MODES:
        return image
    from PIL import Image  # see decode() on importing Pillow here

    values = np.asarray(image, dtype=np.float64)
    if values.size == 0:
        return image
    top = float(values.max())
    if image.mode == "F" and top <= 1.0:
        full = 1.0
    else:
        full = max(65535.0, top)
    scaled = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)  # 2-D uint8: mode L


def squash(path: Path | str, size: int, channels: int) -> np.ndarray:
    """`path` resized whole to uint8 size x size x channels (the in-memory path's images,
    whatever their aspect). Raises UnreadableImage as `decode` does."""
    # see decode() on importing Pillow here
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = eight_bit(image).convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    except MemoryError:
        raise
    except Exception as err:  # as in decode(): the file's fault
        raise UnreadableImage(f"{type(err).__name__}: {err}"[:200]) from err
    return pixels.reshape(size, size, channels)


def read_files(paths: list[str | Path], size: int, channels: int,
               transform: dict | None = None) -> np.ndarray:
    """Image files as uint8 N x C x size x size, prepared as a model's data was
    (`DataSplits.transform`): streamed data -> the evaluation's centre crop; data held in
    memory -> the whole image resized to size x size. Raises UnreadableImage naming the file."""
    stream = (transform or {}).get("mode") == "stream"
    images = []
    for path in paths:
        try:
            images.append(decode(path, Crop(size, channels)) if stream
                          else squash(path, size, channels))
        except UnreadableImage as err:
            raise UnreadableImage(f"{path}: {err}") from None
    return np.stack(images).transpose(0, 3, 1, 2) if images else \
        np.empty((0, channels, size, size), np.uint8)
