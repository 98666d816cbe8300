"""Weight entanglement: every MBConv candidate of a block is a slice of one kernel.

With separate weights (the paper's), a step trains only the drawn path's weights. Entangled,
a block holds one MBConv of its largest kernel and expansion (`SharedMBConv`); a candidate
`kKeE` runs the centre K x K of the depthwise kernel and the first `in x E` hidden channels
(BatchNorm parameters and statistics sliced alike), as in Single-Path NAS and once-for-all.
Every step then trains weights that every path uses, so the supernet learns as fast as one
network and ranks candidates by what they add.

    >>> net = SuperNet(space, weight_sharing="entangled")
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from proxyless.model.ops import ConvBNAct, expanded_channels
from proxyless.model.space import OpSpec

WEIGHT_SHARING = ("separate", "entangled")


def _batch_norm(bn: nn.BatchNorm2d, x: Tensor, channels: int | None) -> Tensor:
    """`bn` on its first `channels` channels, with BatchNorm2d's training/eval semantics."""
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                  else bn.momentum)
    batch_stats = bn.training or not bn.track_running_stats
    tracked = bn.track_running_stats
    return F.batch_norm(x, bn.running_mean[:channels] if tracked else None,
                        bn.running_var[:channels] if tracked else None,
                        bn.weight[:channels], bn.bias[:channels], batch_stats, factor, bn.eps)


class SharedMBConv(nn.Module):
    """The largest MBConv of a block; `forward(x, kernel, expand)` runs one candidate's slice.

    Module names match `ops.MBConv`, so `state_for` hands a standalone MBConv its weights.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, specs: list[OpSpec]) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.kernel_size = max(s.kernel for s in specs)
        mid = max(expanded_channels(in_chs, s.expand) for s in specs)
        self.conv_pw = ConvBNAct(in_chs, mid, 1)
        self.conv_dw = ConvBNAct(mid, mid, self.kernel_size, stride, groups=mid)
        self.conv_pwl = ConvBNAct(mid, out_chs, 1, act=False)

    def _dw_weight(self, kernel: int, mid: int) -> Tensor:
        o = (self.kernel_size - kernel) // 2
        return self.conv_dw.conv.weight[:mid, :, o:o + kernel, o:o + kernel]

    def forward(self, x: Tensor, kernel: int, expand: int) -> Tensor:
        mid = expanded_channels(self.in_chs, expand)
        if expand != 1:
            x = F.conv2d(x, self.conv_pw.conv.weight[:mid])
            x = F.relu6(_batch_norm(self.conv_pw.bn, x, mid))
        x = F.conv2d(x, self._dw_weight(kernel, mid), None, self.stride, kernel // 2, 1, mid)
        x = F.relu6(_batch_norm(self.conv_dw.bn, x, mid))
        x = F.conv2d(x, self.conv_pwl.conv.weight[:, :mid])
        return _batch_norm(self.conv_pwl.bn, x, None)

    def state_for(self, kernel: int, expand: int) -> dict[str, Tensor]:
        """The state dict of a standalone `MBConv(kernel, expand)` cut from these weights."""
        mid = expanded_channels(self.in_chs, expand)
        state = {"conv_dw.conv.weight": self._dw_weight(kernel, mid),
                 "conv_pwl.conv.weight": self.conv_pwl.conv.weight[:, :mid]}
        layers = {"conv_dw": mid, "conv_pwl": None}
        if expand != 1:
            state["conv_pw.conv.weight"] = self.conv_pw.conv.weight[:mid]
            layers["conv_pw"] = mid
        for name, channels in layers.items():
            bn = getattr(self, name).bn
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[f"{name}.bn.{key}"] = getattr(bn, key)[:channels]
            state[f"{name}.bn.num_batches_tracked"] = bn.num_batches_tracked
        return {k: v.detach().clone() for k, v in state.items()}


class SharedPath(nn.Module):
    """One candidate of an entangled block: a kernel and an expansion of its `SharedMBConv`.

    The shared weights are registered once, by the mixed op; the path keeps a plain
    reference to them."""

    def __init__(self, shared: SharedMBConv, kernel: int, expand: int) -> None:
        super().__init__()
        self.kernel_size, self.expand_ratio = kernel, expand
        self._shared = [shared]  # a list: not a submodule of the path

    def forward(self, x: Tensor) -> Tensor:
        return self._shared[0](x, self.kernel_size, self.expand_ratio)

    def standalone_state(self) -> dict[str, Tensor]:
        return self._shared[0].state_for(self.kernel_size, self.expand_ratio)
