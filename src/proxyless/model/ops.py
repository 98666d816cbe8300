"""Candidate ops and fixed layers, shared by the supernet and every standalone network.

`build_op(token, ...)` is the one factory: `k5e6` -> MBConv(kernel 5, expansion 6), `zero` ->
ZeroOp. Because the supernet's mixed op holds exactly these modules, a network derived from it
has the very same module structure (and can take its weights).
"""

from __future__ import annotations

import torch
from torch import nn

from proxyless.model.space import conv_out_size, parse_token

BN_EPS = 1e-3  # as in the reference code's released networks
BN_MOMENTUM = 0.1


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> optional ReLU6."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        if act:
            self.act = nn.ReLU6(inplace=True)


def expanded_channels(in_chs: int, expand_ratio: int) -> int:
    # The reference code rounds in * e (no divisible-by-8 rounding of the hidden width).
    return round(in_chs * expand_ratio)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand -> kxk depthwise (stride) -> 1x1 project.

    The residual shortcut lives in `Block`, not here, so that the op's output is exactly the
    o_j(x) that the binary gates weigh.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs
        self.kernel_size, self.stride, self.expand_ratio = kernel_size, stride, expand_ratio
        mid = expanded_channels(in_chs, expand_ratio)
        self.conv_pw = ConvBNAct(in_chs, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.conv_dw = ConvBNAct(mid, mid, kernel_size, stride, groups=mid)
        self.conv_pwl = ConvBNAct(mid, out_chs, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.conv_dw(self.conv_pw(x)))


class ZeroOp(nn.Module):
    """The `zero` candidate: outputs zeros, so a block with a shortcut reduces to identity."""

    def __init__(self, out_chs: int, stride: int) -> None:
        super().__init__()
        self.out_chs, self.stride = out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return x.new_zeros((n, self.out_chs, conv_out_size(h, self.stride),
                            conv_out_size(w, self.stride)))


def build_op(token: str, in_chs: int, out_chs: int, stride: int) -> nn.Module:
    """The candidate op for `token` at a position with these channels and stride."""
    spec = parse_token(token)
    if spec.is_zero:
        return ZeroOp(out_chs, stride)
    return MBConv(in_chs, out_chs, spec.kernel, stride, spec.expand)


class Block(nn.Module):
    """A searchable position: one op plus the identity shortcut where shapes allow it."""

    def __init__(self, op: nn.Module, has_skip: bool) -> None:
        super().__init__()
        self.op = op
        self.has_skip = has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.op, ZeroOp):
            # A standalone zero block costs nothing: identity with a shortcut, zeros without.
            return x if self.has_skip else self.op(x)
        out = self.op(x)
        return out + x if self.has_skip else out


class Classifier(nn.Module):
    """Global average pool -> dropout -> linear."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x.mean((2, 3))))
