"""The binarized supernet: mixed ops with binary gates (ProxylessNAS, Cai et al. 2019, §3.2).

Each searchable block is a `MixedOp` over its candidates, with architecture parameters α
(init N(0, 1e-3)) and p = softmax(α). Binary gates pick the path(s) that run; the others are
not called and hold no activations. Modes (`SuperNet.sample_gates`), chosen per step:

- `sample`:    one path drawn from p. Weight steps; inactive candidates get no gradient.
- `two`:       two distinct paths drawn without replacement, p renormalized over the pair;
               the active one (drawn from the pair) runs, the gate gradient of the other is
               recomputed in backward. α of the pair only; then `rescale_pair` keeps every
               unsampled path's probability (the paper's architecture step).
- `recompute`: one active path drawn from p; in backward each inactive path's output is
               recomputed without a graph, one at a time, for its gate gradient: one path of
               memory, N forwards of compute (the reference code's `full_v2`).
- `full`:      all paths computed and kept (DARTS-like memory), for comparison and tests.
- `argmax`:    the most likely path (validating the current best architecture).

Gate gradients follow BinaryConnect: dL/dg_j = <dL/dy, o_j(x)>, and
dL/dα_i = Σ_j dL/dg_j p_j (δ_ij − p_i) over the involved paths (`MixedOp.set_alpha_grad`).
Recomputation runs BatchNorm on batch statistics without touching its running statistics.

    >>> net = SuperNet(load_space("fashion"))
    >>> net.sample_gates("sample"); loss = criterion(net(x), y)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture
from proxyless.model.batchnorm import frozen_bn_statistics
from proxyless.model.initialization import initialize
from proxyless.model.network import Backbone, ProxylessNet, build_network
from proxyless.model.ops import Block, MBConv, build_op
from proxyless.model.shared_weights import WEIGHT_SHARING, SharedMBConv, SharedPath
from proxyless.model.space import BlockSlot, SearchSpace, parse_token

MODES = ("sample", "two", "recompute", "full", "argmax")
ARCH_MODES = ("two", "recompute", "full")  # modes that give α a gradient


class _GateGradient(torch.autograd.Function):
    """Identity on the active path's output; in backward, dL/dg_j for the involved paths.

    The inactive outputs o_j(x) are recomputed here, one at a time and without a graph, so an
    architecture step holds one path of activations whatever the number of candidates. The
    active path and the involved ones are those of the forward (kept in ctx): gates drawn
    again before backward must not change which outputs the gradient is taken against.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, gates: torch.Tensor, x: torch.Tensor,
                mixed: MixedOp, active: int, involved: tuple[int, ...]) -> torch.Tensor:
        ctx.mixed, ctx.active, ctx.involved = mixed, active, involved
        # backward recomputes paths as the forward ran them: under the same autocast
        kind = out.device.type
        ctx.autocast = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        ctx.save_for_backward(out, x)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        out, x = ctx.saved_tensors
        mixed: MixedOp = ctx.mixed
        kind, enabled, dtype = ctx.autocast
        # fp32 whatever the activations' precision: dL/dg sums millions of products, and in
        # bf16 its 8 bits of mantissa would decide which path α prefers
        gate_grad = torch.zeros(len(mixed.candidates), dtype=torch.float32,
                                device=grad_out.device)
        with torch.no_grad(), torch.autocast(kind, dtype=dtype, enabled=enabled):
            for j in ctx.involved:
                if j == ctx.active:
                    o_j = out
                else:
                    with frozen_bn_statistics(mixed):  # entangled paths share their BN
                        o_j = mixed.candidates[j](x)
                gate_grad[j] = torch.vdot(grad_out.reshape(-1).float(),
                                          o_j.reshape(-1).float())
        return grad_out, gate_grad, None, None, None, None


class MixedOp(nn.Module):
    """One searchable block's candidates, α, and binary gates (gate index = candidate index)."""

    def __init__(self, slot: BlockSlot, weight_sharing: str = "separate") -> None:
        super().__init__()
        if weight_sharing not in WEIGHT_SHARING:
            raise ProxylessError(f"weight sharing {weight_sharing!r}: expected one of "
                                 f"{', '.join(WEIGHT_SHARING)}")
        self.tokens = slot.candidates
        self.specs = [parse_token(t) for t in self.tokens]
        self.entangled = weight_sharing == "entangled"
        mbconvs = [s for s in self.specs if not s.is_zero]
        if self.entangled and mbconvs:
            self.shared = SharedMBConv(slot.in_channels, slot.out_channels, slot.stride, mbconvs)
        self.candidates = nn.ModuleList(
            SharedPath(self.shared, s.kernel, s.expand) if self.entangled and not s.is_zero
            else build_op(t, slot.in_channels, slot.out_channels, slot.stride)
            for t, s in zip(self.tokens, self.specs, strict=True))
        self.alpha = nn.Parameter(torch.randn(len(self.tokens)) * 1e-3)
        self.mode = "sample"
        self.active = 0                 # the path whose output is the block's output
        self.involved: list[int] = [0]  # paths whose gate gradient the step needs
        self.gates: torch.Tensor | None = None
        self._host_alpha: tuple[tuple[int, int], torch.Tensor] | None = None
        # (involved paths, dL/dg) per backward through gates of an α-step mode, filled by a
        # hook on those very gates, so a re-draw before backward cannot lose or misfile them
        self._gate_grads: list[tuple[tuple[int, ...], torch.Tensor]] = []

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=0)

    def host_alpha(self) -> torch.Tensor:
        """α on the host in float64, copied from the device only when α has changed (its
        version counter moves with every in-place update): the weight steps between two
        architecture steps draw their gates without waiting for the GPU. See
        `SuperNet.host_alphas` for all blocks in one copy."""
        if not self.host_alpha_current():
            self._host_alpha = (self._alpha_key(), self.alpha.detach().double().cpu())
        return self._host_alpha[1]

    def _alpha_key(self) -> tuple[int, int]:
        return self.alpha.data_ptr(), self.alpha._version

    def host_alpha_current(self) -> bool:
        """Whether the host copy of α is that of α as it is now."""
        return self._host_alpha is not None and self._host_alpha[0] == self._alpha_key()

    def host_probs(self) -> torch.Tensor:
        """p on the host, to draw gates from (see `host_alpha`)."""
        alpha = self.host_alpha()
        if not torch.isfinite(alpha).all():
            raise ProxylessError("architecture parameters became NaN/inf; lower --arch-lr")
        # Clamped so that a path whose probability underflowed can still be drawn as the
        # second of a pair (multinomial without replacement needs 2 non-zeros).
        return torch.softmax(alpha, 0).clamp_min(1e-30)

    def set_gates(self, mode: str, generator: torch.Generator | None = None,
                  active: int | None = None) -> None:
        """Draw binary gates for `mode`; `active` holds the active path instead of drawing."""
        probs = self.host_probs()
        n = len(self.tokens)

        def draw(weights: torch.Tensor, k: int) -> list[int]:
            return torch.multinomial(weights, k, replacement=False,
                                     generator=generator).tolist()

        if mode == "argmax":
            self.active = int(torch.argmax(probs))
            self.involved = [self.active]
        elif mode in ("sample", "recompute", "full"):
            self.active = draw(probs, 1)[0] if active is None else active
            self.involved = [self.active] if mode == "sample" else list(range(n))
        elif mode == "two":
            if n < 2:
                pair = [0]
            elif active is None:
                pair = draw(probs, 2)
            else:  # a held path plus a partner drawn from the rest
                rest = probs.clone()
                rest[active] = 0
                pair = [active, draw(rest, 1)[0]]
            if active is None and len(pair) == 2:
                pair_probs = probs[pair] / probs[pair].sum()
                self.active = pair[draw(pair_probs, 1)[0]]
            else:
                self.active = pair[0]
            self.involved = pair
        else:
            raise ProxylessError(f"unknown supernet mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        if mode not in ARCH_MODES:  # the path alone runs: no gate tensor, no device work
            self.gates = None
            return
        # made on the device and set there: a host tensor copied over would wait for the GPU
        self.gates = torch.zeros(n, device=self.alpha.device)
        self.gates[self.active] = 1.0
        self.gates.requires_grad_(True)
        involved, collected = tuple(self.involved), self._gate_grads
        # cloned: autograd may keep accumulating into the tensor it hands the hook
        self.gates.register_hook(
            lambda grad: collected.append((involved, grad.detach().clone())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "full":
            return sum(self.gates[j] * self.candidates[j](x) for j in range(len(self.tokens)))
        out = self.candidates[self.active](x)
        if self.mode in ("two", "recompute") and torch.is_grad_enabled():
            out = _GateGradient.apply(out, self.gates, x.detach(), self, self.active,
                                      tuple(self.involved))
        return out

    def parent_index(self) -> int:
        """The largest candidate (expansion, then kernel): the one the others inherit from."""
        return max(range(len(self.specs)), key=self._size)

    def smallest_index(self) -> int:
        """The smallest candidate: zero where the block may be skipped, else the lowest
        expansion, then kernel (the sandwich rule's smallest path)."""
        return min(range(len(self.specs)), key=self._size)

    def _size(self, index: int) -> tuple[int, int]:
        spec = self.specs[index]
        return spec.expand, spec.kernel  # zero: (0, 0)

    def candidate_state(self, index: int) -> dict[str, torch.Tensor]:
        """The weights of candidate `index` as a standalone op's state dict."""
        candidate = self.candidates[index]
        if isinstance(candidate, SharedPath):
            return candidate.standalone_state()
        return candidate.state_dict()

    @torch.no_grad()
    def inherit_from_parent(self) -> None:
        """Copy the parent's weights into every other MBConv candidate, as a starting point.

        Kernels take the parent's centre (or the parent's kernel, zero-padded), expansions take
        its first channels (BatchNorm affine and running statistics alike). Each candidate
        keeps its own weights afterwards: this only aligns them, so that downstream layers see
        compatible features whichever path is drawn (see `search.loop`'s warm-up). Entangled
        candidates share their weights already: nothing to copy.
        """
        if self.entangled:
            return
        parent = self.candidates[self.parent_index()]
        for child in self.candidates:
            if child is parent or not isinstance(child, MBConv):
                continue
            mid = child.conv_dw.conv.weight.shape[0]
            if child.expand_ratio != 1 and parent.expand_ratio != 1:
                child.conv_pw.conv.weight.copy_(parent.conv_pw.conv.weight[:mid])
                _copy_bn(child.conv_pw.bn, parent.conv_pw.bn, mid)
            _copy_bn(child.conv_dw.bn, parent.conv_dw.bn, mid)
            _copy_bn(child.conv_pwl.bn, parent.conv_pwl.bn, None)
            child.conv_pwl.conv.weight.copy_(parent.conv_pwl.conv.weight[:, :mid])
            source, target = parent.conv_dw.conv.weight[:mid], child.conv_dw.conv.weight
            k, big = child.kernel_size, parent.kernel_size
            if k <= big:
                o = (big - k) // 2
                target.copy_(source[:, :, o:o + k, o:o + k])
            else:
                o = (k - big) // 2
                target.zero_()
                target[:, :, o:o + big, o:o + big] = source

    def set_alpha_grad(self) -> None:
        """dL/dα from the gate gradients of every backward since the last call, each over the
        paths its own forward involved (two: restricted to the pair, p renormalized)."""
        collected = list(self._gate_grads)
        self._gate_grads.clear()
        if not collected and self.gates is not None and self.gates.grad is not None:
            # gates that lost their hook (deepcopy drops hooks): this draw's own gradient
            collected = [(tuple(self.involved), self.gates.grad)]
        if self.gates is not None:
            self.gates.grad = None
        if not collected:
            return
        grad = torch.zeros_like(self.alpha)
        for involved, gate_grads in collected:
            idx = device_index(involved, self.alpha.device)
            probs = torch.softmax(self.alpha.detach()[idx], dim=0)
            gate_grad = gate_grads[idx]
            # Σ_j g_j p_j (δ_ij − p_i) = p_i (g_i − Σ_j g_j p_j)
            grad[idx] += probs * (gate_grad - (gate_grad * probs).sum())
        self.alpha.grad = grad if self.alpha.grad is None else self.alpha.grad + grad


@functools.lru_cache(maxsize=1024)
def device_index(indices: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`indices` as an index tensor on `device`, made once: a fresh host-to-GPU copy of a
    few integers at every architecture step would wait for the GPU each time."""
    return torch.tensor(indices, device=device)


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, channels: int | None) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[:channels])


def rescale_pair(alpha: torch.Tensor, old_alpha: torch.Tensor, pair: Sequence[int]) -> None:
    """Shift the updated α of `pair` so that every unsampled path keeps its probability."""
    with torch.no_grad():
        idx = device_index(tuple(pair), alpha.device)
        offset = (torch.logsumexp(alpha[idx], 0) - torch.logsumexp(old_alpha[idx], 0))
        alpha[idx] -= offset


class SuperNet(Backbone):
    """The over-parameterized network of a space: one MixedOp per searchable block."""

    def __init__(self, space: SearchSpace, dropout: float = 0.0,
                 weight_sharing: str = "separate") -> None:
        super().__init__(space, dropout)
        self.weight_sharing = weight_sharing
        for slot in space.slots():
            self.blocks.append(Block(MixedOp(slot, weight_sharing), slot.has_skip))
        initialize(self)  # every candidate as the standalone networks: he_fout

    @property
    def mixed_ops(self) -> list[MixedOp]:
        return [block.op for block in self.blocks]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [op.alpha for op in self.mixed_ops]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def host_alphas(self) -> list[torch.Tensor]:
        """Every block's α on the host (`MixedOp.host_alpha`); those that changed are copied
        from the device together, in one transfer."""
        ops = self.mixed_ops
        stale = [op for op in ops if not op.host_alpha_current()]
        if stale:
            flat = torch.cat([op.alpha.detach().reshape(-1) for op in stale]).double().cpu()
            for op, alpha in zip(stale, flat.split([op.alpha.numel() for op in stale]),
                                 strict=True):
                op._host_alpha = (op._alpha_key(), alpha)
        return [op.host_alpha() for op in ops]

    def sample_gates(self, mode: str, generator: torch.Generator | None = None,
                     fixed: Architecture | Sequence[int] | None = None) -> None:
        """Fresh gates for every block in `mode` (one of MODES), drawn with `generator`;
        `fixed` holds the active paths instead of drawing them."""
        if mode not in MODES:
            raise ProxylessError(f"unknown supernet mode {mode!r}; expected one of {MODES}")
        self.host_alphas()
        indices = fixed.indices() if isinstance(fixed, Architecture) else fixed
        for i, op in enumerate(self.mixed_ops):
            op.set_gates(mode, generator, None if indices is None else int(indices[i]))

    def parent_indices(self) -> list[int]:
        return [op.parent_index() for op in self.mixed_ops]

    def smallest_indices(self) -> list[int]:
        return [op.smallest_index() for op in self.mixed_ops]

    def inherit_from_parents(self) -> None:
        for op in self.mixed_ops:
            op.inherit_from_parent()

    def active_architecture(self) -> Architecture:
        return Architecture.from_indices(self.space, [op.active for op in self.mixed_ops])

    def set_alpha_grads(self, zero_alpha: str = "update") -> None:
        """dL/dα of every block from its gates; `zero_alpha="skip"` then drops the whole
        gradient (the cost term's too) of each block whose active path is zero, as the
        reference code's `MixedEdge.set_arch_param_grad` does: Adam leaves that α as it is."""
        for op in self.mixed_ops:
            op.set_alpha_grad()
            if zero_alpha == "skip" and op.specs[op.active].is_zero:
                op.alpha.grad = None

    @contextlib.contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """Architecture steps: no weight gradients are computed (nor stored)."""
        weights = [p for p in self.weight_parameters() if p.requires_grad]
        for p in weights:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in weights:
                p.requires_grad_(True)

    def probs(self) -> list[torch.Tensor]:
        return [op.probs().detach() for op in self.mixed_ops]

    def entropy(self) -> float:
        """Mean entropy of p over blocks (nats): how undecided the search still is. From the
        host's copy of α (`host_alphas`: one transfer, none where α has not moved)."""
        values = []
        for alpha in self.host_alphas():
            p = torch.softmax(alpha, 0)
            values.append(float(-(p * p.clamp_min(1e-12).log()).sum()))
        return sum(values) / len(values)

    def derive(self) -> Architecture:
        """The argmax path of every block (never a random draw)."""
        return Architecture.from_indices(self.space,
                                         [int(torch.argmax(a)) for a in self.host_alphas()])

    def derived_network(self, arch: Architecture | None = None,
                        dropout: float = 0.0) -> ProxylessNet:
        """A standalone network of `arch` (default: `derive()`) holding the supernet's weights."""
        arch = arch or self.derive()
        net = build_network(arch, dropout)
        own = self.state_dict()
        state = {name: own[name] for name in net.state_dict() if not name.startswith("blocks.")}
        for i, (op, token) in enumerate(zip(self.mixed_ops, arch.blocks, strict=True)):
            ops_state = op.candidate_state(op.tokens.index(token))
            state.update((f"blocks.{i}.op.{name}", value) for name, value in ops_state.items())
        net.load_state_dict(state)
        return net
