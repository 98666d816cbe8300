"""What a space's networks hold in memory, counted off the layer records without building
anything, and the limits past which a space is refused before anything is allocated; and,
measured, what one step keeps for backward (`saved_for_backward`).

    >>> check_space_fits(load_space("imagenet"), batch_size=256)   # or a clear error
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from proxyless.data import DataSplits
from proxyless.engine import distributed
from proxyless.engine.precision import Precision, resolve_precision
from proxyless.engine.runtime import resolve_device
from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture
from proxyless.model.layers import candidate_layers, fixed_layers
from proxyless.model.network import build_network
from proxyless.model.space import SearchSpace
from proxyless.model.supernet import SuperNet

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


# What a step holds beside the activations: weights, their gradients and momenta (float32).
_STATE_COPIES = 3
_HEADROOM = 0.9  # of the device's memory: the allocator's fragments, cuDNN's workspaces
AUTO_BATCH_LIMIT = 1024  # per process: larger batches stop paying in speed, and cost accuracy


def device_memory(device: torch.device) -> int:
    """Bytes a run may use on `device`: a GPU's total memory; on the CPU, what the OS says is
    available plus what this process already holds (it is the one that would use it)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        with open("/proc/meminfo") as f:  # "MemAvailable:   23456789 kB"
            available = next(int(line.split()[1]) * 1024 for line in f
                             if line.startswith("MemAvailable:"))
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return available + resident
    except (OSError, StopIteration, ValueError, IndexError):  # not Linux: the machine's memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def largest_batch(space: SearchSpace, device: torch.device, precision: str = "fp32",
                  supernet: bool = True, capacity: int | None = None) -> int:
    """The largest batch per process that fits in `device`'s memory (or `capacity` bytes) by
    `estimate_size`: the search keeps two paths' activations (the architecture step), a
    network one; 16-bit precisions halve them."""
    whole, largest, per_image = estimate_size(space)
    capacity = device_memory(device) if capacity is None else capacity
    static = _STATE_COPIES * 4 * (whole if supernet else largest)
    per_image = per_image * (2 if supernet else 1) * (1 if precision == "fp32" else 0.5)
    return max(0, int((_HEADROOM * capacity - static) // per_image))


def memory_advice(space: SearchSpace, batch_size: int, device: torch.device,
                  precision: str = "fp32", supernet: bool = True) -> str:
    """What to do after running out of memory at `batch_size`: the batch that fits by the
    estimate, or (where the estimate says this one should) what else takes the memory."""
    capacity = device_memory(device)
    fits = largest_batch(space, device, precision, supernet, capacity)
    where = f"{capacity / 2**30:.1f} GiB of {'GPU' if device.type == 'cuda' else 'CPU'} memory"
    if fits >= batch_size:
        return (f"by the memory estimate {batch_size} should fit in {where}: other processes "
                "may hold memory; free it or lower --batch-size")
    if fits < 1:
        return f"by the memory estimate not even one image fits in {where}"
    return (f"about {fits} per process fit in {where} by the memory estimate: start again "
            f"in a new --out with --batch-size {fits} (or --batch-size auto)")


def fit_batch(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest batch in [1, limit] for which `fits(batch)` holds (a real step tried on the
    device), searched from `start`: doubled while it fits, else halved, then bisected. 0
    where not even 1 fits."""
    start = max(1, min(start, limit))
    good, bad = 0, limit + 1
    batch = start
    while good + 1 < bad:
        if fits(batch):
            good = batch
            batch = min(2 * batch, limit) if bad == limit + 1 else (good + bad) // 2
            if batch == good:  # the limit fits
                break
        else:
            bad = batch
            batch = max(1, batch // 2) if good == 0 else (good + bad) // 2
            if good == 0 and bad == 1:
                break
    return good


def round_batch(batch: int) -> int:
    """A multiple of 8 (tensor cores' tile) where the batch is that large."""
    return batch - batch % 8 if batch >= 16 else batch


def probe_batch_size(space: SearchSpace, device: torch.device, precision: Precision,
                     arch: Architecture | None = None, limit: int = AUTO_BATCH_LIMIT) -> int:
    """`--batch-size auto`: the largest batch per process, at most `limit`, whose step fits
    in `device`'s memory, with `_HEADROOM` to spare. On a GPU, found by running real steps
    (forward and backward through the supernet's largest path twice, as the two-path
    architecture step keeps, or through `arch`'s network) from the estimate up or down; on
    the CPU, where running out of memory ends in the kernel's OOM killer rather than an
    error, by `largest_batch`'s estimate alone. 0 where not one image fits."""
    estimate = largest_batch(space, device, precision.name, supernet=arch is None)
    if device.type != "cuda":
        return round_batch(min(estimate, limit))
    found = _probe(space, device, precision, arch, estimate, limit)
    torch.cuda.empty_cache()  # the probing model's memory, freed on return, is the run's
    return found


def _probe(space: SearchSpace, device: torch.device, precision: Precision,
           arch: Architecture | None, estimate: int, limit: int) -> int:
    if arch is None:
        model: nn.Module = SuperNet(space).to(device, memory_format=torch.channels_last)
        model.sample_gates("sample", fixed=model.parent_indices())
        passes = 2
    else:
        model, passes = build_network(arch).to(device, memory_format=torch.channels_last), 1
    model.train()

    def fits(batch: int) -> bool:
        try:
            x = torch.randn(batch, space.in_channels, space.input_size, space.input_size,
                            device=device).contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                loss = sum(model(x).float().sum() for _ in range(passes))
            loss.backward()
            torch.cuda.synchronize(device)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            x = loss = None  # noqa: F841 - the batch's memory goes before the next try
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    found = fit_batch(fits, max(1, estimate), limit)
    return round_batch(int(found * _HEADROOM) if found > 1 else found)  # the model goes here


def auto_batch_size(space: SearchSpace, data: DataSplits, device: str, precision: str,
                    arch: Architecture | None = None, arch_every: int = 1,
                    train_limit: int | None = None) -> tuple[int, str]:
    """`--batch-size auto`: the largest batch per process that fits this device's memory
    (probed with real steps on a GPU, estimated on the CPU: `probe_batch_size`) and the data
    (a search, `arch` None, keeps `arch_every` training batches per epoch of at most
    `train_limit` images, and one validation batch), at most `AUTO_BATCH_LIMIT`; the same on
    every rank (the smallest). Also how it was decided, in words."""
    info = distributed.setup(device)
    where = resolve_device(f"cuda:{info.local_rank}" if device.startswith("cuda")
                           and info.enabled else device)
    ranks = info.world_size
    train_images = min(len(data.train), train_limit or len(data.train))
    data_limit = train_images // (ranks * arch_every)
    if arch is None and data.val is not None:
        data_limit = min(data_limit, len(data.val) // ranks)
    batch = probe_batch_size(space, where, resolve_precision(precision, where), arch,
                             min(AUTO_BATCH_LIMIT, data_limit))
    batch = int(-distributed.all_reduce_max([-batch], where)[0])  # the smallest
    if batch < 1:
        raise ProxylessError(f"--batch-size auto: not even one image of space {space.name!r} "
                             f"fits in this {where.type.upper()}'s memory (or the data is "
                             "too small for one batch)")
    how = "probed on the GPU" if where.type == "cuda" else "by the memory estimate"
    if batch + 8 > data_limit and data_limit < AUTO_BATCH_LIMIT:  # the data (rounded down to
        # a multiple of 8), not memory, set it
        how = (f"as large as the data allows: {train_images:,} training images"
               + (f" for {arch_every} steps per α step" if arch is None else "")
               + (f" over {ranks} processes" if ranks > 1 else ""))
    return batch, f"{how}, at most {min(AUTO_BATCH_LIMIT, data_limit)}"
