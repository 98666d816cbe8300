"""ProxylessNAS-R: α learned by REINFORCE, for objectives that cannot be differentiated.

J(α) = E_{g~p(α)}[R(N_g)],   ∇_α J ≈ (1/M) Σ_m (R_m − b) ∇_α log p(g_m)

Per update: M architectures drawn from p (independently per block), each evaluated on one
validation batch without gradients (the supernet's weights, BatchNorm on batch statistics,
running statistics untouched); reward

- `mnas`      R = ACC · (LAT / T)^w, w = −0.07 (MnasNet's form), or
- `reference` R = ACC · (T / LAT)^0.1 (the reference code's),

times any extra objectives `arch -> float`; b is a moving average of the rewards; Adam
ascends J. With `constraint="dual"` (the default) the target also binds as in the gradient
strategy: R − ν (LAT / T − 1), with ν raised while the argmax network misses T (and, with a
target floor, lowered below 0 while it is slower than needed: `TargetMultipliers`).
LAT comes from the cost model (a lookup table), or from measuring each sampled network end
to end on this machine (`measure=True`, or `latency.measure.MeasuredLatency` on a table's time
base: cached by architecture, new samples measured together beside the anchor), or from any
function `arch -> float` given through the Python API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from proxyless.engine import distributed
from proxyless.engine.divergence import require_finite
from proxyless.engine.precision import Precision
from proxyless.latency.cost import CostModel
from proxyless.latency.measure import MeasuredLatency
from proxyless.model.architecture import Architecture
from proxyless.model.batchnorm import frozen_bn_statistics
from proxyless.model.supernet import SuperNet
from proxyless.search.config import SearchConfig
from proxyless.search.losses import TargetMultipliers, entropy_term

Objective = Callable[[Architecture], float]


class ReinforceStrategy:
    def __init__(self, supernet: SuperNet, cost_model: CostModel | None,
                 config: SearchConfig, latency_fn: Objective | None = None,
                 objectives: Sequence[Objective] = (), precision: Precision | None = None
                 ) -> None:
        self.net, self.cost_model, self.config = supernet, cost_model, config
        self.precision = precision or Precision("fp32", "cpu")
        self.optimizer = torch.optim.Adam(supernet.arch_parameters(), lr=config.arch_lr,
                                          betas=(config.arch_beta1, config.arch_beta2),
                                          eps=config.arch_eps, weight_decay=0.0)
        self.baseline: float | None = None
        self.objectives = list(objectives)
        if latency_fn is None and config.measure_latency:
            device = "cuda" if config.device.startswith("cuda") else "cpu"
            latency_fn = MeasuredLatency.standalone(supernet.space, device,
                                                    config.measure_threads)
        self.latency_fn = latency_fn
        # measured end to end: cached, checkpointed, new samples measured together
        self.measured = latency_fn if isinstance(latency_fn, MeasuredLatency) else None
        self.duals = TargetMultipliers(config.target_floor)  # ν of the target's constraint
        self.decide_weight = config.decide  # the search loop ramps it up (search_progress)

    @property
    def multiplier(self) -> float:
        return self.duals.multiplier

    # -- the reward ---------------------------------------------------------------------
    def latency(self, arch: Architecture) -> float | None:
        if self.latency_fn is not None:
            return self.latency_fn(arch)
        return self.cost_model.predict(arch) if self.cost_model is not None else None

    def cost(self, arch: Architecture) -> float | None:
        """What the target constrains: latency (however it is obtained) or the cost model's."""
        if self.config.metric == "latency":
            return self.latency(arch)
        return self.cost_model.predict(arch) if self.cost_model is not None else None

    def reward(self, arch: Architecture, accuracy: float) -> float:
        config, value = self.config, accuracy
        target = config.target
        cost = self.cost(arch) if target is not None else None
        if cost is not None:
            if config.reward == "mnas":
                value *= (cost / target) ** config.reward_w
            else:
                value *= (target / cost) ** 0.1
        for objective in self.objectives:
            value *= objective(arch)
        if cost is not None and self.multiplier != 0:  # the dual constraint (0 while it holds)
            value -= self.multiplier * (cost / target - 1.0)
        return value

    # -- sampling and the policy-gradient update -----------------------------------------
    def sample(self, count: int, generator: torch.Generator | None) -> list[list[int]]:
        probs = [op.probs().detach().cpu() for op in self.net.mixed_ops]
        draws = [torch.multinomial(p, count, replacement=True, generator=generator)
                 for p in probs]
        return [[int(d[m]) for d in draws] for m in range(count)]

    def update(self, samples: list[list[int]], rewards: list[float]) -> dict:
        """One Adam step along (1/M) Σ (R_m − b) ∇ log p(g_m); then the baseline moves."""
        mean = require_finite(sum(rewards) / len(rewards), "the mean REINFORCE reward",
                              "a sampled network's latency (or an objective) is not a finite "
                              "positive number; check the table or the latency function")
        if self.baseline is None:
            self.baseline = mean
        device = self.net.arch_parameters()[0].device
        advantages = torch.tensor([r - self.baseline for r in rewards], device=device)
        index = torch.tensor(samples, device=device)  # [M, blocks]
        log_p = torch.zeros(len(samples), device=device)
        for b, op in enumerate(self.net.mixed_ops):
            log_p = log_p + torch.log_softmax(op.alpha, 0)[index[:, b]]
        loss = -(advantages * log_p).mean()  # ascend J
        loss = loss + entropy_term(self.net.arch_parameters(), self.decide_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_grads(self.net.arch_parameters())
        self.optimizer.step()
        decay = self.config.reinforce_baseline_decay
        self.baseline = decay * self.baseline + (1 - decay) * mean
        return {"arch_loss": loss.item(), "reward": mean, "baseline": self.baseline}

    @torch.no_grad()
    def evaluate(self, indices: list[int], x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 (fraction) of one sampled network on a validation batch."""
        net = self.net
        net.sample_gates("sample", fixed=indices)
        with frozen_bn_statistics(net), self.precision.autocast():
            correct = (net(x).argmax(1) == y).sum().item()
        correct, count = distributed.all_reduce_sum([correct, y.numel()], x.device)
        return correct / count

    def step(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> dict:
        samples = self.sample(self.config.reinforce_samples, generator)
        if self.measured is not None and self.config.target is not None:
            self.measured.measure_new([Architecture.from_indices(self.net.space, s)
                                       for s in samples])
        rewards = [self.reward(Architecture.from_indices(self.net.space, indices),
                               self.evaluate(indices, x, y)) for indices in samples]
        stats = self.update(samples, rewards)
        target = self.config.target
        if self.config.constraint == "dual" and target is not None:
            cost = self.cost(self.net.derive())
            if cost is not None:
                self.duals.update(cost, target, self.config.dual_lr)
        return {**stats, "multiplier": self.multiplier}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
                **self.duals.state_dict(),
                **(self.measured.state_dict() if self.measured is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        if self.measured is not None:
            self.measured.load_state_dict(state)
        self.duals.load_state_dict(state)
