"""What a space's networks hold in memory, counted off the layer records without building
anything, and the limits past which a space is refused before anything is allocated; and,
measured, what one step keeps for backward (`saved_for_backward`).

    >>> check_space_fits(load_space("imagenet"), batch_size=256)   # or a clear error
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from proxyless.errors import ProxylessError
from proxyless.space import SearchSpace
from proxyless.walk import candidate_layers, fixed_layers

# Far beyond any real space (the paper's ImageNet space: a 16M-parameter supernet, ~0.1 GB
# of training activations per image) yet below what makes a machine swap or the allocator
# fail: a space over them is refused before anything is built. (Its block count is bounded
# by `validate`, so the layer records counted here are few.)
MAX_PARAMS = 2_000_000_000              # 8 GB of float32 weights, before gradients and momenta
MAX_ACTIVATION_BYTES = 64 * 2**30       # one training batch through the largest network


def estimate_size(space: SearchSpace) -> tuple[int, int, int]:
    """(supernet parameters, largest network's parameters, float32 bytes of one image's
    training activations through the largest network), counted off the layer records
    without building anything. Activations count each conv's output three times (conv,
    BatchNorm, activation), as autograd keeps them."""

    def activations(layer) -> int:
        if not layer.key:  # zero: the block's input passes through
            return 0
        out = layer.out_channels * layer.out_size ** 2
        if layer.kind != "mbconv":
            return 3 * out
        mid = layer.in_channels * layer.expand
        expand = mid * layer.in_size ** 2 if layer.expand != 1 else 0
        return 3 * (expand + mid * layer.out_size ** 2 + out)

    rows = candidate_layers(space)
    fixed = fixed_layers(space)
    supernet = sum(f.params for f in fixed) + sum(c.params for row in rows for c in row)
    largest = sum(f.params for f in fixed) + sum(max(c.params for c in row) for row in rows)
    floats = (space.in_channels * space.input_size ** 2 + sum(map(activations, fixed))
              + sum(max(map(activations, row)) for row in rows))
    return supernet, largest, 4 * floats


def check_space_fits(space: SearchSpace, batch_size: int = 1, supernet: bool = True) -> None:
    """Refuse, before allocating, a space whose supernet (or, `supernet=False`, whose largest
    network) would not fit in memory at `batch_size`, naming the space and the sizes."""
    where = f"space {space.name!r}"
    whole, largest, per_image = estimate_size(space)
    params = whole if supernet else largest
    what = "its supernet" if supernet else "its largest network"
    fix = "make the stages narrower or shallower, or feature_mix or input_size smaller"
    if params > MAX_PARAMS:
        raise ProxylessError(f"{where} is too large to build: {what} would hold "
                             f"{params / 1e9:,.1f}G parameters ({4 * params / 2**30:,.0f} GiB "
                             f"of float32), over the limit of {MAX_PARAMS / 1e9:g}G; {fix}")
    if per_image * batch_size > MAX_ACTIVATION_BYTES:
        image = (f"{per_image / 2**20:,.0f} MiB per {space.input_size}x{space.input_size} "
                 f"image, {per_image * batch_size / 2**30:,.0f} GiB for a batch of "
                 f"{batch_size}, over the limit of {MAX_ACTIVATION_BYTES // 2**30} GiB")
        fits = MAX_ACTIVATION_BYTES // per_image
        if fits >= 1:  # the batch, not the space, is what is too large
            raise ProxylessError(f"--batch-size {batch_size} is too large for {where}: the "
                                 f"largest network's activations take {image}; use at most "
                                 f"--batch-size {fits}")
        raise ProxylessError(f"{where} is too large to train: the largest network's "
                             f"activations take {image}; {fix}")


def saved_for_backward(step: Callable[[], object]) -> int:
    """Bytes of the tensors autograd keeps for backward while `step` runs (each storage
    once): a step's activation memory, measurable on any device, the CPU included."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())
