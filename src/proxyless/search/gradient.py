"""ProxylessNAS-G: α learned by gradient through binarized paths (ProxylessNAS §3.2-3.3).

One architecture step: fresh gates in the estimator's mode (`two` or `recompute`), the loss
(cross-entropy, times or plus the hardware term) on a validation batch with the weights
frozen, dL/dα from the gate gradients plus the exact gradient of E[cost], an Adam step, and,
for `two`, the rescale that gives the sampled pair its old share of the logits' mass back: the
gate gradients then never change an unsampled path's probability. (The E[cost] gradient
reaches every α, so with a target the unsampled paths do move, as in the reference code.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from proxyless.engine import distributed
from proxyless.engine.divergence import LOWER_LR, Diverged, require_finite
from proxyless.engine.precision import Precision
from proxyless.latency.cost import CostModel
from proxyless.model.batchnorm import frozen_bn_statistics
from proxyless.model.supernet import SuperNet, rescale_pair
from proxyless.search.config import SearchConfig
from proxyless.search.losses import (
    TargetMultipliers,
    constraint_term,
    entropy_term,
    hardware_loss,
)


class GradientStrategy:
    def __init__(self, supernet: SuperNet, cost_model: CostModel | None,
                 config: SearchConfig, precision: Precision | None = None) -> None:
        self.net, self.cost_model, self.config = supernet, cost_model, config
        self.optimizer = torch.optim.Adam(supernet.arch_parameters(), lr=config.arch_lr,
                                          betas=(config.arch_beta1, config.arch_beta2),
                                          eps=config.arch_eps, weight_decay=0.0)
        self.precision = precision or Precision("fp32", "cpu")
        self.scaler = self.precision.scaler()  # fp16: gate gradients would underflow
        self.duals = TargetMultipliers(config.target_floor)  # ν of the latency constraint
        self.decide_weight = config.decide  # the search loop ramps it up (search_progress)

    @property
    def multiplier(self) -> float:
        return self.duals.multiplier

    def step(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> dict:
        """One architecture step. The host waits for the device twice: for the losses'
        finiteness before α moves, and for the new α (the next steps' gate draws)."""
        net, config = self.net, self.config
        net.sample_gates(config.estimator, generator)
        old_alpha = [a.detach().clone() for a in net.arch_parameters()]
        self.optimizer.zero_grad(set_to_none=True)
        # A validation batch must not leak into BatchNorm's running statistics either.
        with net.frozen_weights(), frozen_bn_statistics(net):
            with self.precision.autocast():
                logits = net(x)
            ce = nn.functional.cross_entropy(logits.float(), y)
            # the cost term in fp32, outside autocast: it is a sum of table entries weighted
            # by p, differences of a few percent in it decide the architecture
            expected = (self.cost_model.expected_supernet(net)
                        if self.cost_model is not None and config.target else None)
            loss = hardware_loss(ce, expected, config.target, config.loss, config.loss_a,
                                 config.loss_b, config.loss_lambda)
            loss = loss + constraint_term(expected, config.target, self.multiplier)
            loss = loss + entropy_term(net.arch_parameters(), self.decide_weight)
            self.scaler.scale(loss).backward()
        net.set_alpha_grads(config.zero_alpha)
        distributed.average_grads(net.arch_parameters())
        losses = torch.stack([ce.detach(), loss.detach().float()])
        # each rank's losses are its own shard's: a NaN on one must stop all (any_rank);
        # the gradients are averaged already, the same on every rank
        bad = distributed.any_rank(~torch.isfinite(losses))
        grads_ok = torch.stack([torch.isfinite(a.grad).all() for a in net.arch_parameters()
                                if a.grad is not None] or [torch.tensor(True)])
        ce_value, loss_value, ce_bad, loss_bad, *grad_flags = torch.cat(
            [losses, bad.float(), grads_ok.float().to(ce.device)]).tolist()  # one wait
        require_finite_loss(math.nan if ce_bad else ce_value,
                            math.nan if loss_bad else loss_value)
        if not all(grad_flags) and not self.scaler.is_enabled():  # fp16: the scaler skips
            require_finite_grads(net)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if config.estimator == "two":
            for op, old in zip(net.mixed_ops, old_alpha, strict=True):
                rescale_pair(op.alpha, old, op.involved)
        if expected is not None and config.constraint == "dual":
            cost = self.cost_model.predict(net.derive())  # net.derive: the other wait
            self.duals.update(cost, config.target, config.dual_lr)
        return {"arch_loss": loss_value, "arch_ce": ce_value, "multiplier": self.multiplier}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), **self.duals.state_dict(),
                "grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.duals.load_state_dict(state)
        self.scaler.load_state_dict(state.get("grad_scaler", {}))


def require_finite_loss(ce: float, loss: float) -> None:
    """Before α moves, which part of its loss is not finite says what to change: the
    cross-entropy comes from the supernet's weights, the rest from the cost and the target."""
    require_finite(ce, "the architecture step's cross-entropy", LOWER_LR)
    require_finite(loss, "the architecture loss (its cross-entropy is finite)",
                   "check the latency table (or cost model) and the target")


def require_finite_grads(net: SuperNet) -> None:
    """dL/dα from finite losses can still overflow where inactive paths' weights diverged."""
    for b, alpha in enumerate(net.arch_parameters()):
        if alpha.grad is not None and not torch.isfinite(alpha.grad).all():
            bad = alpha.grad[~torch.isfinite(alpha.grad)][0].item()
            raise Diverged(f"the gradient of α of block {b}", bad, LOWER_LR)
