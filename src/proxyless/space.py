"""Search spaces as data: a typed, validated spec of the over-parameterized backbone.

A space is a MobileNetV2-style backbone: stem conv -> fixed first block (MBConv, expansion 1)
-> stages of searchable blocks -> 1x1 feature-mix conv -> global pool -> linear classifier.
Every searchable block chooses one op from `candidates` (ordered: the position of a candidate
is its gate index); `zero` (skip the block) is only offered where stride is 1 and in = out.

    >>> space = load_space("imagenet")          # a preset
    >>> space = load_space("my_space.yaml")     # or a file of your own
    >>> [slot.candidates for slot in space.slots()][:1]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from proxyless.config import ARCHITECTURE, from_dict, mapping_kind, read_mapping, to_dict
from proxyless.errors import ProxylessError

PRESETS = ("imagenet", "cifar", "fashion")
ZERO = "zero"
DEFAULT_CANDIDATES = ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6", ZERO)  # the paper's
_MBCONV_TOKEN = re.compile(r"k([1-9][0-9]?)e([1-9][0-9]?)")


def conv_out_size(size: int, stride: int) -> int:
    """Output height (or width) of a "same"-padded layer with this stride."""
    return (size + stride - 1) // stride


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never going below 90% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class OpSpec:
    """One candidate op, parsed from its token (`k5e6` = MBConv kernel 5 expansion 6)."""

    token: str
    kernel: int = 0
    expand: int = 0

    @property
    def is_zero(self) -> bool:
        return self.token == ZERO


def parse_token(token: str, where: str = "token") -> OpSpec:
    """Parse a candidate token strictly; anything but `kKeE` (odd K) or `zero` is an error."""
    if token == ZERO:
        return OpSpec(ZERO)
    match = _MBCONV_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise ProxylessError(
            f"{where}: unknown op token {token!r}; expected 'zero' or 'k<kernel>e<expansion>' "
            "such as 'k3e6'"
        )
    kernel, expand = int(match.group(1)), int(match.group(2))
    if kernel % 2 == 0:
        raise ProxylessError(f"{where}: op token {token!r} has an even kernel; use an odd one")
    return OpSpec(token, kernel, expand)


@dataclass(frozen=True)
class StemSpec:
    channels: int = 32
    stride: int = 2
    kernel: int = 3


@dataclass(frozen=True)
class FirstBlockSpec:
    """The fixed MBConv1 block after the stem (not searched)."""

    channels: int = 16
    kernel: int = 3


@dataclass(frozen=True)
class StageSpec:
    width: int
    depth: int
    stride: int


@dataclass(frozen=True)
class BlockSlot:
    """A searchable position: its shapes and the candidates it offers (gate index = position)."""

    index: int
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    out_size: int
    candidates: tuple[str, ...]

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class SearchSpace:
    """Everything needed to build the supernet or any network drawn from it."""

    name: str
    input_size: int
    in_channels: int
    num_classes: int
    stages: tuple[StageSpec, ...]
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    stem: StemSpec = field(default_factory=StemSpec)
    first_block: FirstBlockSpec = field(default_factory=FirstBlockSpec)
    feature_mix: int = 1280
    width_mult: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------
    def validate(self) -> None:
        where = f"space {self.name!r}"

        def positive(value: int, name: str) -> None:
            if value < 1:
                raise ProxylessError(f"{where}: {name} must be >= 1, got {value}")

        if not self.name:
            raise ProxylessError("space: name must be a non-empty string")
        for name in ("input_size", "in_channels", "num_classes", "feature_mix"):
            positive(getattr(self, name), name)
        positive(self.stem.channels, "stem.channels")
        positive(self.first_block.channels, "first_block.channels")
        if self.stem.stride not in (1, 2):
            raise ProxylessError(f"{where}: stem.stride must be 1 or 2, got {self.stem.stride}")
        for attr in ("stem", "first_block"):
            kernel = getattr(self, attr).kernel
            if kernel < 1 or kernel % 2 == 0:
                raise ProxylessError(f"{where}: {attr}.kernel must be odd and >= 1, got {kernel}")
        if not math.isfinite(self.width_mult) or self.width_mult <= 0:
            raise ProxylessError(f"{where}: width_mult must be > 0, got {self.width_mult}")
        if not self.stages:
            raise ProxylessError(f"{where}: stages must list at least one stage")
        for i, stage in enumerate(self.stages):
            positive(stage.width, f"stages[{i}].width")
            positive(stage.depth, f"stages[{i}].depth")
            if stage.stride not in (1, 2):
                raise ProxylessError(
                    f"{where}: stages[{i}].stride must be 1 or 2, got {stage.stride}"
                )
        if not self.candidates:
            raise ProxylessError(f"{where}: candidates must list at least one op")
        if len(set(self.candidates)) != len(self.candidates):
            raise ProxylessError(f"{where}: candidates has duplicates: {list(self.candidates)}")
        for i, token in enumerate(self.candidates):
            parse_token(token, f"{where}: candidates[{i}]")
        if all(t == ZERO for t in self.candidates):
            raise ProxylessError(f"{where}: candidates needs at least one non-zero op")
        size = self.input_size
        for stride in [self.stem.stride] + [s.stride for s in self.stages]:
            size = conv_out_size(size, stride)
        if size < 1:
            raise ProxylessError(f"{where}: input_size {self.input_size} is too small")

    # -- derived structure -------------------------------------------------------------
    def _width(self, channels: int) -> int:
        return channels if self.width_mult == 1.0 else make_divisible(channels * self.width_mult)

    @property
    def stem_channels(self) -> int:
        return self._width(self.stem.channels)

    @property
    def first_block_channels(self) -> int:
        return self._width(self.first_block.channels)

    @property
    def feature_mix_channels(self) -> int:
        # MobileNetV2 convention: the last conv only grows with the multiplier, never shrinks.
        if self.width_mult > 1.0:
            return make_divisible(self.feature_mix * self.width_mult)
        return self.feature_mix

    @property
    def stem_out_size(self) -> int:
        return conv_out_size(self.input_size, self.stem.stride)

    @property
    def num_blocks(self) -> int:
        return sum(stage.depth for stage in self.stages)

    def slots(self) -> list[BlockSlot]:
        """The searchable positions in order, with their shapes and candidate lists."""
        slots = []
        channels, size = self.first_block_channels, self.stem_out_size
        for stage_index, stage in enumerate(self.stages):
            width = self._width(stage.width)
            for j in range(stage.depth):
                stride = stage.stride if j == 0 else 1
                out_size = conv_out_size(size, stride)
                allows_zero = stride == 1 and channels == width
                candidates = tuple(t for t in self.candidates if t != ZERO or allows_zero)
                slots.append(
                    BlockSlot(len(slots), stage_index, channels, width, stride, size, out_size,
                              candidates)
                )
                channels, size = width, out_size
        return slots

    @property
    def last_channels(self) -> int:
        return self._width(self.stages[-1].width)

    @property
    def final_size(self) -> int:
        return self.slots()[-1].out_size

    def num_architectures(self) -> int:
        return math.prod(len(slot.candidates) for slot in self.slots())

    # -- (de)serialization -------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "space") -> SearchSpace:
        return from_dict(cls, data, where)


def load_space(name_or_path: str | Path | SearchSpace) -> SearchSpace:
    """A preset by name (`imagenet`, `cifar`, `fashion`) or a YAML/JSON space file."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    text = str(name_or_path)
    if text in PRESETS:
        data = read_mapping(resources.files("proxyless") / "presets" / f"{text}.yaml",
                            f"preset {text!r}")
        return SearchSpace.from_dict(data, f"preset {text!r}")
    path = Path(text)
    if not path.exists():
        raise ProxylessError(
            f"space {text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
        )
    data = read_mapping(path, "space file")
    if mapping_kind(data) == ARCHITECTURE and "space" in data:  # it names its space too
        data = data["space"]
    return SearchSpace.from_dict(data, f"space file {path}")
