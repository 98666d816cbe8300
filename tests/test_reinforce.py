"""ProxylessNAS-R: the policy converges to a known best architecture."""

import torch

from proxyless.latency.cost import flops_model
from proxyless.model.architecture import Architecture
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.model.supernet import SuperNet
from proxyless.search import SearchConfig
from proxyless.search.reinforce import ReinforceStrategy


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny", input_size=8, in_channels=1, num_classes=3,
                       stages=(StageSpec(8, 3, 2), StageSpec(16, 2, 1)),
                       candidates=("k3e3", "k3e6", "k5e3", "k7e6", "zero"), feature_mix=16)


def test_policy_converges_to_the_best_architecture():
    torch.manual_seed(0)
    space = tiny_space()
    net = SuperNet(space)
    strategy = ReinforceStrategy(net, None, SearchConfig(arch_lr=0.05, reinforce_samples=10,
                                                         arch_beta1=0.0))
    best = [len(slot.candidates) - 1 - (i % 2) for i, slot in enumerate(space.slots())]

    def reward(indices):  # depends only on the chosen ops: share of blocks that match `best`
        return sum(int(i == j) for i, j in zip(indices, best, strict=True)) / len(best)

    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        samples = strategy.sample(10, g)
        strategy.update(samples, [reward(s) for s in samples])
    assert net.derive().indices() == best
    assert min(op.probs()[j].item() for op, j in zip(net.mixed_ops, best, strict=True)) > 0.5


def test_reward_forms():
    space = tiny_space()
    net = SuperNet(space)
    cost = flops_model(space)
    arch = Architecture.uniform(space, "k3e6")
    lat = cost.predict(arch)
    mnas = ReinforceStrategy(net, cost, SearchConfig(metric="flops", target=lat / 2))
    assert mnas.reward(arch, 0.8) == 0.8 * 2 ** -0.07
    ref = ReinforceStrategy(net, cost, SearchConfig(metric="flops", target=lat / 2,
                                                    reward="reference"))
    assert ref.reward(arch, 0.8) == 0.8 * 0.5 ** 0.1
    extra = ReinforceStrategy(net, cost, SearchConfig(), objectives=[lambda a: 0.5])
    assert extra.reward(arch, 0.8) == 0.4


def test_step_evaluates_without_touching_weights_or_bn():
    torch.manual_seed(1)
    space = tiny_space()
    net = SuperNet(space)
    before = {k: v.clone() for k, v in net.state_dict().items() if "alpha" not in k}
    strategy = ReinforceStrategy(net, flops_model(space), SearchConfig(metric="flops",
                                                                       target=1.0))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    stats = strategy.step(x, y, torch.Generator().manual_seed(0))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "reward" in stats and all(a.grad is not None for a in net.arch_parameters())
