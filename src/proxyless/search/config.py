"""The search's settings: one typed dataclass, saved with every checkpoint and run folder."""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxyless.config_io import from_dict, setting, settings_problem
from proxyless.engine.runtime import RuntimeConfig
from proxyless.errors import ProxylessError
from proxyless.model.shared_weights import WEIGHT_SHARING
from proxyless.search.losses import LOSSES

ESTIMATORS = ("two", "recompute")
STRATEGIES = ("gradient", "reinforce")
METRICS = ("latency", "flops")
CONSTRAINTS = ("dual", "soft")
REWARDS = ("mnas", "reference")


@dataclass
class SearchConfig(RuntimeConfig):
    """The search's settings; the runtime's (seed, device, threads, ...) are
    `RuntimeConfig`'s."""

    strategy: str = setting("gradient", "gradient (binarized paths, ProxylessNAS-G) or "
                                        "reinforce (ProxylessNAS-R)")
    epochs: int = setting(4, "search epochs, after the warm-up")
    warmup_epochs: int = setting(2, "weight-only epochs first (see warmup_parent), then "
                                    "random paths")
    weight_sharing: str = setting("separate", "separate: each candidate its own weights (the "
                                              "paper); entangled: slices of one kernel")
    warmup_parent: float = setting(0.3, "share of the warm-up that trains only the largest "
                                        "path, which then seeds the others; 0: the paper's")
    batch_size: int = setting(128, "images per weight step, per process")
    lr: float = setting(0.05, "weights' learning rate (SGD Nesterov, cosine per phase)")
    warmup_lr: float | None = setting(None, "the warm-up's starting learning rate (None: lr)")
    momentum: float = setting(0.9, "weights' SGD momentum", option=None)
    weight_decay: float = setting(4e-5, "weights' decay (not on BatchNorm and biases)",
                                  option=None)
    label_smoothing: float = setting(0.1, "label smoothing of the weights' loss", option=None)
    arch_lr: float = setting(0.1, "α's learning rate (Adam); the reference's 1e-3 is tuned "
                                  "for ~10^5 α steps, small data gives 10^2-10^3")
    arch_beta1: float = setting(0.0, "α's Adam beta1 (the reference's 0)", option=None)
    arch_beta2: float = setting(0.999, "α's Adam beta2", option=None)
    arch_eps: float = setting(1e-8, "α's Adam epsilon", option=None)
    arch_every: int = setting(5, "one α step every this many weight steps")
    decide: float = setting(0.03, "β of the entropy term that settles near ties "
                                  "(search/losses.py); 0: the paper's loss")
    fair_paths: bool = setting(False, "weight steps train every candidate once (FairNAS): N "
                                      "passes per step")
    sandwich: bool = setting(False, "weight steps train the largest, the smallest and a drawn "
                                    "path, distilled from the largest (BigNAS): 3 passes")
    estimator: str = setting("two", "α's gradient: two (the paper's two paths) or recompute "
                                    "(the reference's full_v2)")
    loss: str = setting("mul-log", "how latency enters α's loss (search/losses.py)")
    loss_a: float = setting(0.2, "mul-log's α (the paper's 0.2)", option=None)
    loss_b: float = setting(0.3, "mul-log's β (the paper's 0.3)", option=None)
    loss_lambda: float = setting(0.1, "add-linear's λ", option=None)
    constraint: str = setting("dual", "dual: a Lagrange multiplier makes the target bind the "
                                      "derived network; soft: the paper's loss alone")
    dual_lr: float = setting(0.05, "the multiplier's step per architecture step")
    target_floor: float = setting(0.95, "dual: the result must also reach this share of the "
                                        "target; 0: the target bounds from above only")
    metric: str = setting("latency", "what target constrains: latency (ms) or flops (MMACs)",
                          option="--target-ms / --target-mflops")
    target: float | None = setting(None, "the target (None: accuracy only)",
                                   option="--target-ms / --target-mflops")
    val_size: float = setting(0.1, "held out of the training split for α: a fraction below "
                                   "1 (per class), or an image count")
    train_limit: int | None = setting(None, "training images per search epoch (None: all)")
    eval_limit: int | None = setting(2000, "validation images the argmax network is "
                                           "evaluated on each epoch", option=None)
    reinforce_samples: int = setting(10, "REINFORCE: architectures per α update")
    reinforce_reward: str = setting("mnas", "REINFORCE's reward: mnas ACC·(LAT/T)^w, "
                                            "reference ACC·(T/LAT)^0.1", option="--reward")
    reinforce_w: float = setting(-0.07, "REINFORCE: the mnas reward's exponent w",
                                 option="--reward-w")
    reinforce_baseline_decay: float = setting(0.9, "REINFORCE: the moving baseline's decay",
                                              option=None)
    reinforce_measure: bool = setting(False, "REINFORCE: latency measured end to end, not "
                                             "from the table", option="--measure-latency")
    measure_threads: int = setting(1, "... measured with this many threads where there is no "
                                      "table", option=None)

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ProxylessError(f"search config: {message}")

        problem = settings_problem(self) or self.runtime_problem()
        check(problem is None, problem or "")
        check(self.strategy in STRATEGIES, f"strategy {self.strategy!r} not in {STRATEGIES}")
        check(self.weight_sharing in WEIGHT_SHARING,
              f"weight_sharing {self.weight_sharing!r} not in {WEIGHT_SHARING}")
        check(self.epochs >= 2, f"epochs must be >= 2 (no α step in the first search epoch), "
                                f"got {self.epochs}")
        check(self.train_limit is None or self.train_limit > 0, "train_limit must be > 0")
        check(self.eval_limit is None or self.eval_limit > 0, "eval_limit must be > 0")
        check(0 <= self.arch_beta1 < 1 and 0 <= self.arch_beta2 < 1, "arch betas in [0, 1)")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        check(0 <= self.warmup_parent < 1,
              f"warmup_parent must be in [0, 1), got {self.warmup_parent}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0 and self.arch_lr > 0 and (self.warmup_lr is None
                                                     or self.warmup_lr > 0),
              "learning rates must be > 0")
        check(self.arch_every >= 1, f"arch_every must be >= 1, got {self.arch_every}")
        check(self.decide >= 0 and math.isfinite(self.decide),
              f"decide must be a finite number >= 0, got {self.decide}")
        check(not (self.sandwich and self.fair_paths),
              "choose --sandwich or --fair-paths, not both: each sets the weight step's paths")
        check(self.estimator in ESTIMATORS, f"estimator {self.estimator!r} not in {ESTIMATORS}")
        check(self.loss in LOSSES, f"loss {self.loss!r} not in {LOSSES}")
        check(self.constraint in CONSTRAINTS,
              f"constraint {self.constraint!r} not in {CONSTRAINTS}")
        check(self.dual_lr > 0, f"dual_lr must be > 0, got {self.dual_lr}")
        check(0 <= self.target_floor < 1,
              f"target_floor must be in [0, 1), got {self.target_floor}")
        check(self.metric in METRICS, f"metric {self.metric!r} not in {METRICS}")
        check(self.target is None or (math.isfinite(self.target) and self.target > 0),
              f"target must be a finite number > 0, got {self.target}")
        check(0 < self.val_size < 1 or (self.val_size >= 10 and float(self.val_size).is_integer()),
              f"val_size must be a fraction in (0, 1) or a whole count >= 10, got "
              f"{self.val_size}")
        check(self.reinforce_samples >= 2, "reinforce_samples must be >= 2")
        check(self.reinforce_reward in REWARDS, f"reinforce_reward not in {REWARDS}")
        check(0 <= self.reinforce_baseline_decay < 1, "reinforce_baseline_decay in [0, 1)")
        check(not self.reinforce_measure or self.strategy == "reinforce",
              "measuring latency end to end (--measure-latency) needs --strategy reinforce")
        check(not self.reinforce_measure or self.metric == "latency",
              "--measure-latency measures latency: give --target-ms, not --target-mflops")
        check(self.measure_threads >= 1, "measure_threads must be >= 1")

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        return from_dict(cls, data, "search config")
