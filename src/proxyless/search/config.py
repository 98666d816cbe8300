"""The search's settings: one typed dataclass, saved with every checkpoint and run folder."""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxyless.config_io import from_dict, settings_problem
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

    strategy: str = "gradient"      # gradient (binarized paths) or reinforce
    epochs: int = 4                 # search epochs, after the warm-up
    warmup_epochs: int = 2          # weights only (see warmup_parent), then random paths
    weight_sharing: str = "separate"  # separate: each candidate its own weights (the paper);
                                    # entangled: candidates are slices of one kernel
    warmup_parent: float = 0.3      # share of the warm-up that trains only the largest path,
                                    # which then seeds the others; 0: the paper's warm-up
    batch_size: int = 128
    lr: float = 0.05                # weights: SGD Nesterov, cosine per phase
    warmup_lr: float | None = None  # the warm-up's starting rate (None: lr)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    arch_lr: float = 0.1            # α: Adam, betas (0, 0.999). The reference's 1e-3 is
    arch_beta1: float = 0.0         # tuned for ~10^5 α steps; small data gives ~10^2-10^3.
    arch_beta2: float = 0.999
    arch_eps: float = 1e-8
    arch_every: int = 5             # one α step every `arch_every` weight steps
    decide: float = 0.03            # β of the entropy term that settles near ties (losses.py);
                                    # 0: the paper's loss
    fair_paths: bool = False        # weight steps train every candidate once (FairNAS), not
                                    # one path drawn from p; costs N forward/backward passes
    sandwich: bool = False          # weight steps train the largest path, the smallest and
                                    # one drawn from p, the two distilled from the largest
                                    # (BigNAS's sandwich rule); 3 passes per step
    estimator: str = "two"          # two (the paper's) or recompute (reference's full_v2)
    loss: str = "mul-log"
    loss_a: float = 0.2
    loss_b: float = 0.3
    loss_lambda: float = 0.1
    constraint: str = "dual"        # dual: the target also binds the argmax network through
                                    # a Lagrange multiplier (see losses.py); soft: paper only
    dual_lr: float = 0.05           # the multiplier's step per architecture step
    target_floor: float = 0.95      # dual: the result must also reach this share of the
                                    # target (two-sided, see losses.py); 0: at most T only
    metric: str = "latency"         # what `target` constrains: latency (ms) or flops (MMACs)
    target: float | None = None     # None: accuracy only
    val_size: float = 0.1           # held out of the training split for α: a fraction
                                    # below 1 (per class), or an image count
    train_limit: int | None = None  # use at most this many training images per epoch
    eval_limit: int | None = 2000   # validate the argmax network on this many val images
    reinforce_samples: int = 10     # REINFORCE: architectures per α update
    reinforce_reward: str = "mnas"  # mnas: ACC·(LAT/T)^w;  reference: ACC·(T/LAT)^0.1
    reinforce_w: float = -0.07
    reinforce_baseline_decay: float = 0.9
    reinforce_measure: bool = False  # REINFORCE: LAT measured end to end, not from the table
    measure_threads: int = 1        # ... with this many threads where there is no table

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
