"""The search's settings: one typed dataclass, saved with every checkpoint and run folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from proxyless.config_io import from_dict, setting, settings_problem
from proxyless.data.decode import COLOR_JITTERS
from proxyless.engine.runtime import RuntimeConfig
from proxyless.errors import ProxylessError
from proxyless.model.shared_weights import WEIGHT_SHARING
from proxyless.search.losses import LOSSES

ESTIMATORS = ("two", "recompute")
STRATEGIES = ("gradient", "reinforce")
METRICS = ("latency", "flops")
CONSTRAINTS = ("dual", "soft")
REWARDS = ("mnas", "reference")
ZERO_ALPHA = ("update", "skip")


@dataclass
class SearchConfig(RuntimeConfig):
    """The search's settings; the runtime's (seed, device, threads, ...) are
    `RuntimeConfig`'s."""

    # names of earlier versions, read once (config.json, checkpoints): one name per setting,
    # the option's, since 2026-12-07
    RENAMED: ClassVar[dict[str, str]] = {"reinforce_reward": "reward", "reinforce_w": "reward_w",
                                         "reinforce_measure": "measure_latency"}

    strategy: str = setting("gradient", "gradient (binarized paths, ProxylessNAS-G) or "
                                        "reinforce (ProxylessNAS-R)", choices=STRATEGIES)
    epochs: int = setting(4, "search epochs, after the warm-up (>= 2: no α step in the "
                                  "first)", at_least=1)
    warmup_epochs: int = setting(2, "weight-only epochs first (see warmup_parent), then "
                                    "random paths", at_least=0)
    weight_sharing: str = setting(
        "separate", "separate: every candidate has its own weights (the paper); entangled: a "
                    "block's candidates are slices of one kernel (centre kernels, first "
                    "channels), so every step trains what every path uses",
        choices=WEIGHT_SHARING)
    warmup_parent: float = setting(0.3, "share of the warm-up that trains only the largest "
                                        "path, which then seeds the others; 0: the paper's",
                                  at_least=0, below=1)
    batch_size: int = setting(128, "images per weight step, per process", at_least=1)
    lr: float = setting(0.05, "weights' learning rate (SGD Nesterov, cosine per phase)",
                         above=0)
    warmup_lr: float | None = setting(None, "the warm-up's starting learning rate (default: lr)",
                                       above=0)
    momentum: float = setting(0.9, "weights' SGD momentum", option=None, at_least=0,
                               below=1)
    weight_decay: float = setting(4e-5, "weights' decay (see decay_bn)", option=None)
    decay_bn: bool = setting(False, "weight decay on BatchNorm parameters and biases too, as "
                                    "the reference code's search (--budget paper); the "
                                    "retraining never decays them")
    label_smoothing: float = setting(0.1, "label smoothing of the weights' loss", option=None)
    arch_lr: float = setting(0.1, "α's learning rate (Adam); the reference's 1e-3 is tuned "
                                  "for ~10^5 α steps, small data gives 10^2-10^3", above=0)
    arch_beta1: float = setting(0.0, "α's Adam beta1 (the reference's 0)", option=None,
                                 at_least=0, below=1)
    arch_beta2: float = setting(0.999, "α's Adam beta2", option=None, at_least=0, below=1)
    arch_eps: float = setting(1e-8, "α's Adam epsilon", option=None)
    arch_every: int = setting(5, "one α step every this many weight steps", at_least=1)
    decide: float = setting(0.03, "weight of the entropy term in the architecture loss: it "
                                  "settles the blocks the data leaves undecided "
                                  "(search/losses.py); 0: the paper's loss", at_least=0)
    fair_paths: bool = setting(False, "each weight step trains every candidate of every "
                                      "block once (FairNAS strict fairness; ~N times the "
                                      "compute per step) instead of one path drawn from p")
    sandwich: bool = setting(False, "each weight step trains the largest path, the smallest "
                                    "and one drawn from p, the two distilled from the "
                                    "largest's predictions (BigNAS's sandwich rule; ~3 times "
                                    "the compute per step)")
    estimator: str = setting("two", "α's gradient: two (the paper's two-path architecture "
                                    "step) or recompute (the reference code's full_v2)",
                             choices=ESTIMATORS)
    zero_alpha: str = setting(
        "update", "an α step whose active path in a block is zero: update that block's α "
                  "(ours) or skip it, its latency gradient too (the reference code's "
                  "mix_op.py; --budget paper); the gradient strategy's", choices=ZERO_ALPHA)
    loss: str = setting("mul-log", "how latency enters α's loss (search/losses.py)",
                        choices=LOSSES)
    loss_a: float = setting(0.2, "mul-log's α (the paper's 0.2)", option=None)
    loss_b: float = setting(0.3, "mul-log's β (the paper's 0.3)", option=None)
    loss_lambda: float = setting(0.1, "add-linear's λ", option=None)
    constraint: str = setting("dual", "dual: Lagrange multipliers make the target bind the "
                                      "derived network; soft: the paper's loss alone, as "
                                      "--budget paper has it", choices=CONSTRAINTS)
    dual_lr: float = setting(0.05, "the multiplier's step per architecture step", above=0)
    target_floor: float = setting(0.95, "with constraint dual, the found network must also "
                                        "reach this share of the target (0.95: it lands in "
                                        "[0.95 T, T] by the table); 0: the target only bounds "
                                        "it from above", at_least=0, below=1)
    metric: str = setting("latency", "what target constrains: latency (ms) or flops (MMACs)",
                          option="--target-ms / --target-mflops", choices=METRICS)
    target: float | None = setting(None, "the target (None: accuracy only)",
                                   option="--target-ms / --target-mflops", above=0)
    val_size: float = setting(0.1, "held out of the training split for α: a fraction below "
                                   "1 (per class), or an image count")
    color_jitter: str = setting("none", "colour jitter of streamed training images (the "
                                        "reference code's: normal, the search's under "
                                        "--budget paper; strong)", choices=tuple(COLOR_JITTERS))
    train_limit: int | None = setting(None, "training images per search epoch (default: all)",
                                      at_least=1)
    eval_limit: int | None = setting(2000, "validation images the argmax network is "
                                           "evaluated on each epoch", option=None,
                                    at_least=1)
    reinforce_samples: int = setting(10, "REINFORCE: architectures per α update", at_least=2)
    reward: str = setting("mnas", "REINFORCE's reward: mnas ACC·(LAT/T)^w, reference "
                                  "ACC·(T/LAT)^0.1", choices=REWARDS)
    reward_w: float = setting(-0.07, "REINFORCE: the mnas reward's exponent w")
    reinforce_baseline_decay: float = setting(0.9, "REINFORCE: the moving baseline's decay",
                                              option=None, at_least=0, below=1)
    measure_latency: bool = setting(False, "REINFORCE: measure each sampled network end to "
                                           "end instead of the table")
    measure_threads: int = setting(1, "... measured with this many threads where there is no "
                                      "table", option=None, at_least=1)

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ProxylessError(f"search config: {message}")

        problem = settings_problem(self)  # the ranges and choices each setting declares
        check(problem is None, problem or "")
        check(self.epochs >= 2, f"epochs must be >= 2 (no α step in the first search epoch), "
                                f"got {self.epochs}")
        check(not (self.sandwich and self.fair_paths),
              "choose --sandwich or --fair-paths, not both: each sets the weight step's paths")
        check(0 < self.val_size < 1 or (self.val_size >= 10 and float(self.val_size).is_integer()),
              f"val_size must be a fraction in (0, 1) or a whole count >= 10, got "
              f"{self.val_size}")
        check(not self.measure_latency or self.strategy == "reinforce",
              "measuring latency end to end (--measure-latency) needs --strategy reinforce")
        check(not self.measure_latency or self.metric == "latency",
              "--measure-latency measures latency: give --target-ms, not --target-mflops")

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        return from_dict(cls, data, "search config")
