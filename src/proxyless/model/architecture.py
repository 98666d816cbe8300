"""Architectures as data: one token per searchable block, stored together with their space.

Encoding (strict and round-tripping): tokens are `k<kernel>e<expansion>` or `zero`, blocks of a
stage are separated by a space and stages by ` | `, e.g. for the `fashion` space

    k3e6 k5e3 | k3e3 zero zero | k5e6 k3e3 zero | k3e6 zero | k7e6 k3e3 | k5e6

`encode(decode(space, s)) == s` for every encoded string, `decode(space, encode(a)) == a` for
every architecture. An unknown token, a token the space does not offer at that position (e.g.
`zero` where the block changes shape) or a wrong block count is an error naming the token and
its position.

An architecture file (JSON or YAML) holds the tokens and the full space, so any network can be
rebuilt from the file alone:

    {"format": "proxyless-arch/1", "blocks": ["k3e6", ...], "space": {...}}

The reference code's `net.config` files (the released ProxylessNAS networks) load too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxyless.config_io import excerpt
from proxyless.errors import ProxylessError
from proxyless.files import REFERENCE_NET, mapping_kind, read_mapping, write_mapping_atomic
from proxyless.model.space import (
    DEFAULT_CANDIDATES,
    MAX_EXPAND,
    MAX_NAME,
    PRESETS,
    ZERO,
    FirstBlockSpec,
    SearchSpace,
    StageSpec,
    StemSpec,
    check_int,
    load_space,
    parse_token,
)

FORMAT = "proxyless-arch/1"
STAGE_SEPARATOR = " | "


@dataclass(frozen=True)
class Architecture:
    """A network of a space: the chosen candidate token of every searchable block."""

    space: SearchSpace
    blocks: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        slots = self.space.slots()
        for index, token in enumerate(self.blocks):
            parse_token(token, f"block {index}")
        if len(self.blocks) != len(slots):
            raise ProxylessError(
                f"architecture has {len(self.blocks)} blocks but space {self.space.name!r} "
                f"has {len(slots)} searchable blocks"
            )
        for slot, token in zip(slots, self.blocks, strict=True):
            where = f"block {slot.index} (stage {slot.stage})"
            parse_token(token, where)
            if token not in slot.candidates:
                if token == ZERO:
                    reason = (f"'zero' is only allowed where stride is 1 and in = out channels "
                              f"(here {slot.in_channels}->{slot.out_channels}, "
                              f"stride {slot.stride})")
                else:
                    reason = f"the space offers {', '.join(slot.candidates)}"
                raise ProxylessError(f"{where}: op {token!r} is not a candidate here: {reason}")

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def uniform(cls, space: SearchSpace, token: str) -> Architecture:
        """The same op in every block (e.g. all-k3e6)."""
        return cls(space, tuple(token for _ in space.slots()))

    @classmethod
    def random(cls, space: SearchSpace, rng: random.Random | None = None) -> Architecture:
        """A uniformly random draw over each block's candidates."""
        rng = rng or random.Random()
        return cls(space, tuple(rng.choice(slot.candidates) for slot in space.slots()))

    @classmethod
    def from_indices(cls, space: SearchSpace, indices: Sequence[int]) -> Architecture:
        """Gate indices (positions in each block's candidate list) -> architecture."""
        slots = space.slots()
        if len(indices) != len(slots):
            raise ProxylessError(f"expected {len(slots)} indices, got {len(indices)}")
        return cls(space, tuple(slot.candidates[int(i)] for slot, i in zip(slots, indices,
                                                                            strict=True)))

    def indices(self) -> list[int]:
        return [slot.candidates.index(t) for slot, t in zip(self.space.slots(), self.blocks,
                                                             strict=True)]

    # -- (de)serialization -------------------------------------------------------------
    def encode(self) -> str:
        return encode(self)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "blocks": list(self.blocks), "encoding": self.encode(),
                "space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, data: dict, where: str = "architecture") -> Architecture:
        if not isinstance(data, dict):
            raise ProxylessError(f"{where}: expected a mapping, got {type(data).__name__} "
                                 f"{excerpt(data)}")
        if data.get("format", FORMAT) != FORMAT:
            raise ProxylessError(f"{where}: unsupported format {excerpt(data.get('format'))}; "
                                 f"expected {FORMAT!r}")
        unknown = sorted(set(data) - {"format", "blocks", "encoding", "space"}, key=repr)
        if unknown:
            raise ProxylessError(f"{where}: unknown key(s) {excerpt(unknown, 120)}; allowed keys "
                                 "are format, blocks, encoding, space")
        if "space" not in data or "blocks" not in data:
            raise ProxylessError(f"{where}: needs the keys 'space' and 'blocks'")
        arch = _blocks(_file_space(data["space"], f"{where}: space"), data["blocks"], where)
        if "encoding" in data and data["encoding"] != arch.encode():
            raise ProxylessError(f"{where}: 'encoding' {excerpt(data['encoding'])} disagrees "
                                 "with 'blocks'; fix one of them (or drop 'encoding')")
        return arch

    def save(self, path: str | Path) -> Path:
        return write_mapping_atomic(path, self.to_dict())


def _blocks(space: SearchSpace, blocks: Any, where: str) -> Architecture:
    """An architecture file's `blocks` (a list of tokens, or an encoded string) in `space`."""
    if isinstance(blocks, list):
        for i, token in enumerate(blocks):
            if not isinstance(token, str):
                raise ProxylessError(f"{where}: blocks[{i}] must be an op token such as "
                                     f"'k3e6', got {excerpt(token)}")
    elif not isinstance(blocks, str):
        raise ProxylessError(f"{where}: 'blocks' must be a list of op tokens, got "
                             f"{excerpt(blocks)}")
    try:
        return decode(space, blocks) if isinstance(blocks, str) else Architecture(space, blocks)
    except ProxylessError as err:  # the decoder names the block; say which file too
        raise ProxylessError(f"{where}: {err}") from None


def _file_space(value: Any, where: str) -> SearchSpace:
    """The space an architecture file holds: the space itself, or a preset's name (a path
    here would be read relative to wherever the command runs, not to the file)."""
    if isinstance(value, dict):
        return SearchSpace.from_dict(value, where)
    if isinstance(value, str) and value in PRESETS:
        return load_space(value)
    raise ProxylessError(f"{where}: expected the space (a mapping) or a preset name "
                         f"({', '.join(PRESETS)}), got {excerpt(value)}")


def encode(arch: Architecture) -> str:
    """The canonical string of an architecture (see the module docstring)."""
    groups, start = [], 0
    for stage in arch.space.stages:
        groups.append(" ".join(arch.blocks[start:start + stage.depth]))
        start += stage.depth
    return STAGE_SEPARATOR.join(groups)


def decode(space: SearchSpace, text: str) -> Architecture:
    """Parse an encoded architecture strictly (the inverse of `encode`)."""
    if not isinstance(text, str):
        raise ProxylessError(f"an encoded architecture must be a string, got {excerpt(text)}")
    groups = text.split("|")
    if len(groups) == 1:
        tokens = text.split()
    else:
        if len(groups) != len(space.stages):
            raise ProxylessError(
                f"encoded architecture has {len(groups)} stages but space {space.name!r} has "
                f"{len(space.stages)}"
            )
        tokens = []
        for i, (group, stage) in enumerate(zip(groups, space.stages, strict=True)):
            stage_tokens = group.split()
            if len(stage_tokens) != stage.depth:
                raise ProxylessError(
                    f"stage {i} of the encoded architecture has {len(stage_tokens)} blocks; "
                    f"space {space.name!r} has {stage.depth} there"
                )
            tokens.extend(stage_tokens)
    for index, token in enumerate(tokens):
        parse_token(token, f"block {index}")
    return Architecture(space, tuple(tokens))


# -- the reference code's net.config ---------------------------------------------------
def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ProxylessError(f"{where}: expected a mapping, got {type(value).__name__} "
                             f"{excerpt(value)} (is this a reference net.config?)")
    return value


def _field(layer: Any, key: str, where: str) -> Any:
    if key not in _mapping(layer, where):
        raise ProxylessError(f"{where}: missing key {key!r} (is this a reference net.config?)")
    return layer[key]


def _int(layer: Any, key: str, where: str, allowed: tuple[int, ...] = (), odd: bool = False,
         top: int | None = None) -> int:
    """A whole-number field, checked on its own (>= 1, a stride 1 or 2, an odd kernel) before
    any shape is derived from it, so the message names the field rather than a mismatch."""
    value = _field(layer, key, where)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    bound = {} if top is None else {"top": top}
    check_int(value, f"{where}: {key}", allowed, odd, **bound)
    return value


def _reference_stages(blocks: list, channels: int,
                      where: str) -> tuple[list[list[int]], list[str]]:
    """The stages ([width, depth, stride]) and op tokens of a net.config's searchable blocks;
    `channels`: what the first block gives."""
    stages: list[list[int]] = []  # [width, depth, stride]
    tokens: list[str] = []
    for i, block in enumerate(blocks, start=1):
        here = f"{where}: blocks[{i}]"
        conv = _mapping(_field(block, "mobile_inverted_conv", here),
                        f"{here}.mobile_inverted_conv")
        kind = conv.get("name")
        if kind == "ZeroLayer":
            if not stages or conv.get("stride", 1) != 1:
                raise ProxylessError(f"{where}: blocks[{i}]: a zero block must keep the shape")
            stages[-1][1] += 1
            tokens.append(ZERO)
            continue
        if kind != "MBInvertedConvLayer":
            raise ProxylessError(f"{where}: blocks[{i}]: unsupported layer {excerpt(kind)}")
        in_chs, out_chs = _int(conv, "in_channels", here), _int(conv, "out_channels", here)
        stride = _int(conv, "stride", here, allowed=(1, 2))
        kernel = _int(conv, "kernel_size", here, odd=True)
        expand = _int(conv, "expand_ratio", here, top=MAX_EXPAND)
        if in_chs != channels:
            raise ProxylessError(f"{where}: blocks[{i}] takes {in_chs} channels but the "
                                 f"previous block gives {channels}")
        if conv.get("mid_channels") not in (None, round(in_chs * expand)):
            raise ProxylessError(f"{where}: blocks[{i}]: custom mid_channels are not supported")
        has_shortcut = block.get("shortcut") is not None
        if has_shortcut != (stride == 1 and in_chs == out_chs):
            raise ProxylessError(f"{where}: blocks[{i}]: shortcut does not match the shapes")
        if stride != 1 or in_chs != out_chs or not stages:
            stages.append([out_chs, 1, stride])
        else:
            stages[-1][1] += 1
        tokens.append(f"k{kernel}e{expand}")
        channels = out_chs
    return stages, tokens


def import_reference_config(config: dict, name: str = "reference", input_size: int = 224,
                            where: str | None = None) -> Architecture:
    """Convert the reference code's `net.config` (ProxylessNASNets) into an Architecture.

    Widths are taken from the file (the released networks differ from the paper's space), so
    the space returned is that network's own, with the paper's candidate list. `where`
    names the config in messages (default: `net.config 'NAME'`).
    """
    where = where or f"net.config {name!r}"
    first_conv = _field(config, "first_conv", where)
    blocks = _field(config, "blocks", where)
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise ProxylessError(f"{where}: 'blocks' must list the first block and the searchable ones")
    first = _mapping(_field(blocks[0], "mobile_inverted_conv", f"{where}: blocks[0]"),
                     f"{where}: blocks[0].mobile_inverted_conv")
    if first.get("name") != "MBInvertedConvLayer" or first.get("expand_ratio") != 1:
        raise ProxylessError(f"{where}: blocks[0] must be the fixed MBConv with expand_ratio 1")

    stages, tokens = _reference_stages(blocks[1:], _int(first, "out_channels",
                                                        f"{where}: blocks[0]"), where)
    mix = _field(config, "feature_mix_layer", where)
    classifier = _field(config, "classifier", where)
    if not stages:
        raise ProxylessError(f"{where}: no searchable blocks after the first block")
    candidates = list(DEFAULT_CANDIDATES)
    for token in tokens:
        if token not in candidates:
            candidates.insert(len(candidates) - 1, token)
    space = SearchSpace(
        name=name,
        input_size=input_size,
        in_channels=_int(first_conv, "in_channels", f"{where}: first_conv"),
        num_classes=_int(classifier, "out_features", f"{where}: classifier"),
        stem=StemSpec(_int(first_conv, "out_channels", f"{where}: first_conv"),
                      _int(first_conv, "stride", f"{where}: first_conv", allowed=(1, 2)),
                      _int(first_conv, "kernel_size", f"{where}: first_conv", odd=True)),
        first_block=FirstBlockSpec(_int(first, "out_channels", f"{where}: blocks[0]"),
                                   _int(first, "kernel_size", f"{where}: blocks[0]", odd=True)),
        stages=tuple(StageSpec(w, d, s) for w, d, s in stages),
        candidates=tuple(candidates),
        feature_mix=_int(mix, "out_channels", f"{where}: feature_mix_layer"),
    )
    return Architecture(space, tuple(tokens))


def load_architecture(path: str | Path, input_size: int | None = None) -> Architecture:
    """Load an architecture file of ours, or a reference `net.config` (at `input_size`,
    default 224)."""
    path = Path(path)
    data = read_mapping(path, "architecture file")
    where = f"architecture file {path}"
    if mapping_kind(data) == REFERENCE_NET:
        name = path.stem[:MAX_NAME] or "reference"  # the space's name, which is bounded
        size = 224 if input_size is None else input_size
        return import_reference_config(data, name, size, f"net.config {path}")
    if "arch" in data and isinstance(data["arch"], dict):  # e.g. a training run's config.json
        data, where = data["arch"], f"{where}: arch"
    return Architecture.from_dict(data, where)
