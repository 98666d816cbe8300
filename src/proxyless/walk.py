"""The one network walker: every layer of an architecture with its shapes, cost and key.

Parameter counts, multiply-adds and latency look-ups all come from here, for the standalone
networks, the supernet's expected cost and the reports alike. Keys follow the reference
code's latency tables (`expanded_conv-input:28x28x40-output:14x14x80-expand:6-kernel:5-
stride:2-idskip:0`, `Conv-...` for the stem, `Conv_1-...` for the feature mix, `Logits-...`
for pooling + classifier), so its published tables load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyless.arch import Architecture
from proxyless.ops import expanded_channels
from proxyless.space import SearchSpace, parse_token


@dataclass(frozen=True)
class LayerInfo:
    name: str          # "stem", "first_block", "block3", "feature_mix", "classifier"
    token: str         # op token for blocks ("k5e6", "zero"); the layer kind otherwise
    key: str           # latency-table key ("" for zero: it costs nothing)
    params: int
    macs: int


def _bn(channels: int) -> int:
    return 2 * channels  # weight and bias (running statistics are buffers)


def conv_cost(in_chs: int, out_chs: int, kernel: int, out_size: int, groups: int = 1):
    params = in_chs // groups * out_chs * kernel * kernel
    return params + _bn(out_chs), params * out_size * out_size


def mbconv_cost(in_chs: int, out_chs: int, kernel: int, expand: int, stride: int,
                in_size: int) -> tuple[int, int]:
    out_size = (in_size + stride - 1) // stride
    mid = expanded_channels(in_chs, expand)
    params = macs = 0
    if expand != 1:
        p, m = conv_cost(in_chs, mid, 1, in_size)
        params, macs = params + p, macs + m
    for p, m in (conv_cost(mid, mid, kernel, out_size, groups=mid),
                 conv_cost(mid, out_chs, 1, out_size)):
        params, macs = params + p, macs + m
    return params, macs


def mbconv_key(in_chs: int, out_chs: int, kernel: int, expand: int, stride: int,
               in_size: int, skip: bool) -> str:
    out_size = (in_size + stride - 1) // stride
    return (f"expanded_conv-input:{in_size}x{in_size}x{in_chs}-"
            f"output:{out_size}x{out_size}x{out_chs}-expand:{expand}-kernel:{kernel}-"
            f"stride:{stride}-idskip:{int(skip)}")


def fixed_layers(space: SearchSpace) -> list[LayerInfo]:
    """The layers that every architecture of the space shares."""
    s = space
    stem_p, stem_m = conv_cost(s.in_channels, s.stem_channels, s.stem.kernel, s.stem_out_size)
    size = s.stem_out_size
    first_p, first_m = mbconv_cost(s.stem_channels, s.first_block_channels,
                                   s.first_block.kernel, 1, 1, size)
    fs, last, mix = s.final_size, s.last_channels, s.feature_mix_channels
    mix_p, mix_m = conv_cost(last, mix, 1, fs)
    cls_p = mix * s.num_classes + s.num_classes
    return [
        LayerInfo("stem", "stem",
                  f"Conv-input:{s.input_size}x{s.input_size}x{s.in_channels}-"
                  f"output:{size}x{size}x{s.stem_channels}", stem_p, stem_m),
        LayerInfo("first_block", "first_block",
                  mbconv_key(s.stem_channels, s.first_block_channels, s.first_block.kernel, 1,
                             1, size, False), first_p, first_m),
        LayerInfo("feature_mix", "feature_mix",
                  f"Conv_1-input:{fs}x{fs}x{last}-output:{fs}x{fs}x{mix}", mix_p, mix_m),
        LayerInfo("classifier", "classifier",
                  f"Logits-input:{fs}x{fs}x{mix}-output:{s.num_classes}", cls_p,
                  mix * s.num_classes),
    ]


def candidate_layers(space: SearchSpace) -> list[list[LayerInfo]]:
    """For each searchable block, one LayerInfo per candidate (in gate order)."""
    table = []
    for slot in space.slots():
        row = []
        for token in slot.candidates:
            spec = parse_token(token)
            name = f"block{slot.index}"
            if spec.is_zero:
                row.append(LayerInfo(name, token, "", 0, 0))
                continue
            params, macs = mbconv_cost(slot.in_channels, slot.out_channels, spec.kernel,
                                       spec.expand, slot.stride, slot.in_size)
            key = mbconv_key(slot.in_channels, slot.out_channels, spec.kernel, spec.expand,
                             slot.stride, slot.in_size, slot.has_skip)
            row.append(LayerInfo(name, token, key, params, macs))
        table.append(row)
    return table


def walk(arch: Architecture) -> list[LayerInfo]:
    """Every layer of the architecture's network, in order (zero blocks included, at 0)."""
    fixed = fixed_layers(arch.space)
    blocks = [row[slot.candidates.index(token)]
              for row, slot, token in zip(candidate_layers(arch.space), arch.space.slots(),
                                          arch.blocks, strict=True)]
    return fixed[:2] + blocks + fixed[2:]


def count_params(arch: Architecture) -> int:
    return sum(layer.params for layer in walk(arch))


def count_macs(arch: Architecture) -> int:
    return sum(layer.macs for layer in walk(arch))
