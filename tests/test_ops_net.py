import random

import pytest
import torch

from proxyless import Architecture, build_network, load_space
from proxyless.model.layers import count_macs, count_params, walk
from proxyless.model.ops import Block, MBConv, ZeroOp, build_op
from proxyless.model.space import PRESETS

CANDIDATES = load_space("imagenet").candidates


SHAPES = [(1, 16, 16), (2, 16, 24), (1, 16, 24)]  # (stride, in, out)
CASES = [(t, *shape) for t in CANDIDATES for shape in SHAPES
         if t != "zero" or shape == (1, 16, 16)]  # zero only where the shape is kept


@pytest.mark.parametrize("token, stride, in_chs, out_chs", CASES)
def test_every_candidate_op(token, stride, in_chs, out_chs):
    torch.manual_seed(0)
    op = build_op(token, in_chs, out_chs, stride)
    block = Block(op, has_skip=stride == 1 and in_chs == out_chs)
    x = torch.randn(2, in_chs, 9, 9, requires_grad=True)
    y = block(x)
    assert y.shape == (2, out_chs, 5 if stride == 2 else 9, 5 if stride == 2 else 9)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, param in op.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    if token == "zero":
        assert isinstance(op, ZeroOp) and torch.equal(y, x)
        assert op(x).abs().sum() == 0 and op(x).shape == (2, out_chs, 9, 9)


def test_mbconv_structure():
    op = build_op("k5e6", 24, 40, 2)
    assert isinstance(op, MBConv)
    assert op.conv_pw.conv.out_channels == 144
    assert op.conv_dw.conv.kernel_size == (5, 5) and op.conv_dw.conv.groups == 144
    assert op.conv_pwl.conv.out_channels == 40 and not hasattr(op.conv_pwl, "act")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("token", ["k3e3", "k7e6", "random"])
def test_every_preset_network(name, token):
    space = load_space(name)
    arch = (Architecture.random(space, random.Random(0)) if token == "random"
            else Architecture.uniform(space, token))
    net = build_network(arch)
    size = space.input_size if name != "imagenet" else 64  # 224 is slow; shapes still work
    x = torch.randn(2, space.in_channels, size, size)
    logits = net(x)
    assert logits.shape == (2, space.num_classes) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("name", PRESETS)
def test_walker_counts_match_the_module(name):
    space = load_space(name)
    for seed in range(5):
        arch = Architecture.random(space, random.Random(seed))
        net = build_network(arch)
        assert count_params(arch) == sum(p.numel() for p in net.parameters())
        assert len(walk(arch)) == space.num_blocks + 4


def _hook_macs(net, size, channels):
    """Count conv/linear multiply-adds with forward hooks, independently of the walker."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["fashion", "cifar"])
def test_walker_macs_match_forward_hooks(name):
    space = load_space(name)
    for seed in range(3):
        arch = Architecture.random(space, random.Random(seed))
        assert count_macs(arch) == _hook_macs(build_network(arch), space.input_size,
                                              space.in_channels)
