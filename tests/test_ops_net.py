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


def test_every_network_starts_from_the_authors_he_fout():
    """conv N(0, sqrt(2 / (k·k·out))), BatchNorm 1/0, linear bias 0: standalone networks and
    every supernet candidate alike (the reference code's init_model('he_fout'))."""
    from proxyless.model.initialization import initialize
    from proxyless.model.supernet import SuperNet

    torch.manual_seed(0)
    space = load_space("fashion")
    arch = Architecture(space, ("k7e6",) * space.num_blocks)
    for net in (build_network(arch), SuperNet(space)):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) > 20
        for conv in convs:
            k = conv.kernel_size[0]
            expected = (2 / (k * k * conv.out_channels)) ** 0.5
            if conv.weight.numel() >= 2000:  # enough draws to tell the spread
                assert conv.weight.std().item() == pytest.approx(expected, rel=0.1)
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert torch.all(net.classifier.linear.bias == 0)
    # a depthwise conv starts ~4x smaller than under PyTorch's fan-in default
    net = build_network(arch)
    dw = net.blocks[5].op.conv_dw.conv
    he_fout = dw.weight.std().item()
    initialize(net, "pytorch")
    assert dw.weight.std().item() > 3 * he_fout
    with pytest.raises(ValueError, match="he_fout"):
        initialize(net, "xavier")


def test_search_weight_decay_reaches_batchnorm_only_when_asked():
    from proxyless.engine.optimizer import weight_optimizer

    net = build_network(Architecture(load_space("fashion"),
                                     ("k3e3",) * load_space("fashion").num_blocks))
    params = list(net.parameters())
    ours = weight_optimizer(params, 0.1, 0.9, 4e-5)
    theirs = weight_optimizer(params, 0.1, 0.9, 4e-5, decay_bn=True)
    assert [len(g["params"]) for g in theirs.param_groups] == [len(params), 0]
    decayed = ours.param_groups[0]["params"]
    assert decayed and all(p.ndim > 1 for p in decayed)
