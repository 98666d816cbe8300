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
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from proxyless.config_io import excerpt, from_dict, to_dict
from proxyless.errors import ProxylessError
from proxyless.files import ARCHITECTURE, mapping_kind, read_mapping

PRESETS = ("imagenet", "cifar", "fashion")
ZERO = "zero"
DEFAULT_CANDIDATES = ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6", ZERO)  # the paper's
_MBCONV_TOKEN = re.compile(r"k([1-9][0-9]?)e([1-9][0-9]?)")

# Bounds on a space's fields, far beyond any real space: they keep a hostile or mistyped file
# from making sizes absurd (a depth of 10^9 would hang listing the blocks). Whether a space
# fits in memory is `memory.check_space_fits`'s question.
MAX_NAME = 100
MAX_SIZE = 1_000_000      # channels, classes, pixels
MAX_KERNEL = 99           # as in op tokens
MAX_EXPAND = 99
MAX_BLOCKS = 1000         # searchable blocks in all
MAX_WIDTH_MULT = 16.0


def check_int(value: object, where: str, allowed: tuple[int, ...] = (), odd: bool = False,
               top: int = MAX_SIZE) -> None:
    """An integer field: >= 1 and <= `top` (MAX_KERNEL and odd for kernels), or in `allowed`."""
    if odd:
        top = MAX_KERNEL
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProxylessError(f"{where} must be an integer, got {excerpt(value)}")
    if allowed and value not in allowed:
        raise ProxylessError(f"{where} must be {' or '.join(map(str, allowed))}, got {value}")
    if not 1 <= value <= top or (odd and value % 2 == 0):
        need = "an odd number" if odd else "a whole number"
        raise ProxylessError(f"{where} must be {need} from 1 to {top:,}, got {excerpt(value)}")


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
            f"{where}: unknown op token {excerpt(token)}; expected 'zero' or "
            "'k<kernel>e<expansion>' such as 'k3e6'"
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
        """Every field by name, each before anything is derived from it: a bad stride is
        reported as the stride, not as the odd shape it would lead to."""
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > MAX_NAME:
            raise ProxylessError(f"space: name must be a non-empty string of at most {MAX_NAME} "
                                 f"characters, got {excerpt(self.name)}")
        where = f"space {self.name!r}"
        self._validate_sizes(where)
        self._validate_stages(where)
        self._validate_candidates(where)

    def _validate_sizes(self, where: str) -> None:
        for name in ("input_size", "in_channels", "num_classes", "feature_mix"):
            check_int(getattr(self, name), f"{where}: {name}")
        check_int(self.stem.channels, f"{where}: stem.channels")
        check_int(self.first_block.channels, f"{where}: first_block.channels")
        check_int(self.stem.stride, f"{where}: stem.stride", allowed=(1, 2))
        for attr in ("stem", "first_block"):
            check_int(getattr(self, attr).kernel, f"{where}: {attr}.kernel", odd=True)
        mult = self.width_mult
        if (isinstance(mult, bool) or not isinstance(mult, (int, float))
                or not math.isfinite(mult) or not 0 < mult <= MAX_WIDTH_MULT):
            raise ProxylessError(f"{where}: width_mult must be a number > 0 and <= "
                                 f"{MAX_WIDTH_MULT:g}, got {excerpt(mult)}")

    def _validate_stages(self, where: str) -> None:
        if not isinstance(self.stages, (tuple, list)) or not self.stages:
            raise ProxylessError(f"{where}: stages must list at least one stage")
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                raise ProxylessError(f"{where}: stages[{i}] must be a mapping of width, depth "
                                     f"and stride, got {excerpt(stage)}")
            check_int(stage.width, f"{where}: stages[{i}].width")
            check_int(stage.depth, f"{where}: stages[{i}].depth", top=MAX_BLOCKS)
            check_int(stage.stride, f"{where}: stages[{i}].stride", allowed=(1, 2))
        blocks = sum(stage.depth for stage in self.stages)
        if blocks > MAX_BLOCKS:  # slots() lists every block: bound it before anyone asks
            raise ProxylessError(f"{where}: the stages' depths add up to {blocks:,} searchable "
                                 f"blocks, over the limit of {MAX_BLOCKS:,}; lower them")

    def _validate_candidates(self, where: str) -> None:
        if not isinstance(self.candidates, (tuple, list)) or not self.candidates:
            raise ProxylessError(f"{where}: candidates must list at least one op")
        for i, token in enumerate(self.candidates):
            parse_token(token, f"{where}: candidates[{i}]")
        if len(set(self.candidates)) != len(self.candidates):
            twice = sorted(t for t, n in Counter(self.candidates).items() if n > 1)
            raise ProxylessError(f"{where}: candidates has duplicates: {excerpt(twice)}")
        if all(t == ZERO for t in self.candidates):
            raise ProxylessError(f"{where}: candidates needs at least one non-zero op")

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

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        """The NCHW input a network of this space takes at `batch`."""
        return (batch, self.in_channels, self.input_size, self.input_size)

    def num_architectures(self) -> int:
        return math.prod(len(slot.candidates) for slot in self.slots())

    # -- (de)serialization -------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "space") -> SearchSpace:
        try:
            return from_dict(cls, data, where)
        except ProxylessError as err:  # validate() names the space; say which file too
            if str(err).startswith(where):
                raise
            raise ProxylessError(f"{where}: {err}") from None


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
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for a path, or holding a NUL
        exists = False
    if not exists:
        raise ProxylessError(f"space {excerpt(text)} is neither a preset ({', '.join(PRESETS)}) "
                             "nor an existing file")
    data = read_mapping(path, "space file")
    where = f"space file {path}"
    if mapping_kind(data) == ARCHITECTURE:  # an architecture file, or a run's config.json
        holder = data["arch"] if isinstance(data.get("arch"), dict) else data
        if "space" in holder:
            data, where = holder["space"], f"{where}: space"
            if isinstance(data, str) and data in PRESETS:
                return load_space(data)
    return SearchSpace.from_dict(data, where)
