"""`proxyless inspect`: an architecture's blocks, parameters and multiply-adds, or a space's
searchable blocks and their candidates."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proxyless.cli.options import positive_int
from proxyless.errors import ProxylessError
from proxyless.files import SPACE, mapping_kind, read_mapping
from proxyless.model.architecture import Architecture, load_architecture
from proxyless.model.layers import block_layers, candidate_layers, fixed_layers, walk
from proxyless.model.space import PRESETS, SearchSpace, load_space


def add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show an architecture's blocks, parameters and MACs")
    p.add_argument("path", help="architecture file, reference net.config, or a space "
                                "(preset name or file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="input resolution for a reference net.config (default 224)")


def _load_arch_or_space(path: str, input_size: int | None
                        ) -> tuple[Architecture | None, SearchSpace | None]:
    if path in PRESETS:
        return None, load_space(path)
    file = Path(path)
    if not file.exists():
        raise ProxylessError(f"{path}: no such file (and not a preset: {', '.join(PRESETS)})")
    if mapping_kind(read_mapping(file, "file")) == SPACE:
        return None, load_space(file)
    return load_architecture(file, input_size), None


def _inspect_space(space: SearchSpace, as_json: bool) -> int:
    slots = space.slots()
    info = {
        "space": space.to_dict(), "input_size": space.input_size,
        "searchable_blocks": len(slots), "num_architectures": space.num_architectures(),
        "supernet_params": sum(f.params for f in fixed_layers(space))
        + sum(c.params for row in candidate_layers(space) for c in row),
        "blocks": [{"index": s.index, "stage": s.stage, "in": s.in_channels,
                    "out": s.out_channels, "stride": s.stride, "in_size": s.in_size,
                    "candidates": list(s.candidates)} for s in slots],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"space {space.name}: {space.input_size}x{space.input_size}x{space.in_channels} "
          f"-> {space.num_classes} classes, {len(slots)} searchable blocks, "
          f"{info['num_architectures']:.3g} architectures, supernet "
          f"{info['supernet_params'] / 1e6:.2f}M params")
    for s in slots:
        print(f"  block{s.index:<3} stage {s.stage}  {s.in_size:>3}x{s.in_size:<3} "
              f"{s.in_channels:>4} -> {s.out_channels:<4} s{s.stride}  "
              f"{' '.join(s.candidates)}")
    return 0


def _inspect_arch(arch: Architecture, as_json: bool) -> int:
    layers = walk(arch)
    params, macs = sum(x.params for x in layers), sum(x.macs for x in layers)
    if as_json:
        blocks = [{"index": slot.index, "stage": slot.stage, "op": layer.token,
                   "in": slot.in_channels, "out": slot.out_channels, "stride": slot.stride,
                   "in_size": slot.in_size, "params": layer.params, "macs": layer.macs}
                  for slot, layer in zip(arch.space.slots(), block_layers(arch), strict=True)]
        print(json.dumps({
            "space": arch.space.name, "encoding": arch.encode(), "params": params, "macs": macs,
            "input_size": arch.space.input_size, "in_channels": arch.space.in_channels,
            "num_classes": arch.space.num_classes, "blocks": blocks,
            "layers": [{"name": x.name, "op": x.token, "params": x.params, "macs": x.macs}
                       for x in layers],
        }, indent=2))
        return 0
    s = arch.space
    print(f"{s.name}: {s.input_size}x{s.input_size}x{s.in_channels} -> {s.num_classes} classes"
          f"   params {params / 1e6:.2f}M   MACs {macs / 1e6:.1f}M")
    print(f"  {arch.encode()}")
    print(f"  {'layer':<12}{'op':<12}{'shape':<22}{'params':>10}{'MACs':>12}")
    for layer in layers:
        shape = (f"{layer.in_size}x{layer.in_size}x{layer.in_channels}->{layer.out_channels} "
                 f"s{layer.stride}") if layer.searchable else ""
        print(f"  {layer.name:<12}{layer.token:<12}{shape:<22}{layer.params:>10,}"
              f"{layer.macs:>12,}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    arch, space = _load_arch_or_space(args.path, args.input_size)
    return _inspect_space(space, args.json) if arch is None else _inspect_arch(arch, args.json)
