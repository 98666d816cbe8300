"""How long `proxyless run` searches and retrains: `--budget quick|standard|thorough|paper`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyless.errors import ProxylessError


@dataclass(frozen=True)
class Budget:
    """How long `run` searches and retrains (`proxyless run --budget NAME`), and any other
    settings the budget fixes (an option given on the command line wins over them all)."""

    warmup_epochs: int
    epochs: int                 # search epochs after the warm-up
    train_limit: int | None     # training images per search epoch (None: all)
    arch_every: int
    retrain_images: int         # images seen while retraining: epochs = this / its images
    wall_time: str = ""         # on 2 CPU cores, full Fashion-MNIST, profiling included
    scaled: bool = True         # epochs scaled to the data's size; False: taken as they are
    retrain: int | None = None  # retraining epochs as they are (instead of retrain_images)
    total_batch: bool = False   # its batch_size is the total over torchrun's ranks
    search: tuple[tuple[str, object], ...] = ()  # other SearchConfig settings
    train: tuple[tuple[str, object], ...] = ()   # other TrainConfig settings

    def retrain_epochs(self, train_images: int) -> int:
        """As many epochs as see `retrain_images` images: a small data set gets more."""
        if self.retrain is not None:
            return self.retrain
        return max(1, round(self.retrain_images / max(train_images, 1)))

    def search_epochs(self, train_images: int) -> tuple[int, int]:
        """Warm-up and search epochs that see as many images as on full Fashion-MNIST: on a
        small data set a few epochs are a few dozen α steps, too few to meet the target."""
        if not self.scaled:
            return self.warmup_epochs, self.epochs
        reference = self.train_limit or FASHION_TRAIN_IMAGES
        scale = reference / min(reference, max(train_images, 1))
        return round(self.warmup_epochs * scale), max(2, round(self.epochs * scale))

    def describe(self) -> str:
        if not self.scaled:
            settings = ", ".join(f"{k} {v}" for k, v in self.search)
            return (f"{self.warmup_epochs}+{self.epochs} search epochs, retraining "
                    f"{self.retrain} epochs; {settings} ({self.wall_time})")
        images = "all" if self.train_limit is None else f"{self.train_limit:,}"
        return (f"{self.warmup_epochs}+{self.epochs} search epochs on {images} images, "
                f"retraining on {self.retrain_images:,} images "
                f"({self.retrain_epochs(FASHION_ALL_TRAIN_IMAGES)} "
                f"epochs of Fashion-MNIST), {self.wall_time}")


FASHION_TRAIN_IMAGES = 54000  # full Fashion-MNIST less its validation split: what budgets mean
FASHION_ALL_TRAIN_IMAGES = 60000  # ... and with it: what the retraining trains on

# The paper's ImageNet protocol, from the authors' code (github.com/mit-han-lab/proxylessnas;
# AS = search/imagenet_arch_search.py, NM = search/nas_manager.py, RX =
# search/imagenet_run_exp.py; argparse defaults):
#   warm-up 40 epochs (AS --warmup_epochs), cosine from 0.05 (NM warm_up: lr_max = 0.05) on
#   random single paths (NM warm_up: reset_binary_gates): warmup_lr, warmup_parent 0;
#   search 120 epochs (AS --n_epochs), batch 256 (AS --train_batch_size), SGD Nesterov
#   (AS --no_nesterov off) lr 0.025 cosine (AS --init_lr, --lr_schedule_type), weight decay
#   4e-5 (AS --weight_decay), label smoothing 0.1 (AS --label_smoothing);
#   50,000 validation images held out of the training set (AS --valid_size);
#   α: Adam lr 1e-3, betas (0, 0.999), eps 1e-8 (AS --arch_lr, --arch_adam_beta1/2,
#   --arch_adam_eps), one step every 5 weight steps (AS --grad_update_arch_param_every),
#   none in the first epoch (NM train: `if epoch > 0`), binarization full_v2 (AS
#   --grad_binary_mode; our `recompute`), mul#log 0.2 / 0.3 (AS --grad_reg_loss_*; our
#   defaults) as a soft loss alone (NM add_regularization_loss: no constraint, so
#   constraint "soft"), no entropy term (decide 0: the paper's loss);
#   retraining 300 epochs (RX --n_epochs), batch 256 (RX --train_batch_size), lr 0.05 cosine
#   (RX --init_lr), weight decay 4e-5 not on BatchNorm (RX --weight_decay, --no_decay_keys
#   bn), label smoothing 0.1, dropout 0.1 for the mobile model (search/README.md: 0.3 GPU and
#   mobile_14, 0.2 CPU; run --retrain-dropout): our TrainConfig defaults;
#   colour jitter (search/data_providers/imagenet.py, build_train_transform): 'normal' in
#   the search (AS --distort_color), 'strong' in the retraining (RX --distort_color): our
#   color_jitter, of streamed image folders;
#   weight decay on BatchNorm too in the search (AS --no_decay_keys None): decay_bn;
#   no α step for a block whose active op is zero (search/modules/mix_op.py,
#   MixedEdge.set_arch_param_grad): zero_alpha skip.
# In every budget, as theirs: he_fout initialisation of every network (AS and RX
# --model_init; utils/my_modules.py, init_model), and the retraining on the whole training
# set (RX: no --valid_size). Not reproduced: see docs/search.md, "Budgets".
PAPER = Budget(40, 120, None, 5, 0, "days on 8 GPUs; see docs/search.md's estimate",
               scaled=False, retrain=300, total_batch=True,
               search=(("batch_size", 256), ("lr", 0.025), ("warmup_lr", 0.05),
                       ("warmup_parent", 0.0), ("arch_lr", 1e-3), ("estimator", "recompute"),
                       ("decide", 0.0), ("constraint", "soft"), ("val_size", 50000),
                       ("zero_alpha", "skip"), ("decay_bn", True),
                       ("color_jitter", "normal")),
               train=(("color_jitter", "strong"),))

# Wall times on the 2-core Xeon the project is built on, profiling included: quick measured
# (`bench/make_run_time.sh` on a fresh clone, empty cache; see bench/README.md); the others
# estimated from the rates of 2026-12-07 (search ~490 images/s with its α steps, retraining
# ~850/s). quick retrains on 360,000 images: 60 epochs of the built-in 6,000 reach the top-1
# of 90 (89.33 +- 0.61% against 89.63 +- 0.74%, 3 seeds: bench/retrain_length.py, issue #35).
BUDGETS = {
    "quick": Budget(2, 3, 20000, 2, 6 * 60000, "~11 min"),
    "standard": Budget(3, 8, None, 2, 20 * 54000, "~45 min (estimated)"),
    "thorough": Budget(5, 20, None, 1, 50 * 54000, "~1.7 h (estimated)"),
    "paper": PAPER,
}


def fill_from_budget(options: dict[str, Any], name: str, defaults: dict[str, Any],
                     ranks: int = 1) -> None:
    """Lay budget `name` over `options` (a command's options by name; None: not given), then
    `defaults` (the search config's) under what is still None: an option given wins over
    the budget, the budget over the defaults. A budget that scales its lengths to the data
    (all but `paper`) leaves the warm-up, search and retraining epochs None: they are
    decided once the data is read (`Budget.search_epochs`, `Budget.retrain_epochs`). Under
    torchrun (`ranks` > 1), a budget whose batch is the total (the paper's) splits it."""
    budget, filled = BUDGETS[name], set()
    settings: dict[str, Any] = {"train_limit": budget.train_limit,
                                "arch_every": budget.arch_every}
    if budget.scaled:
        filled |= {key for key in ("warmup_epochs", "epochs") if options.get(key) is None}
    else:
        settings |= {"warmup_epochs": budget.warmup_epochs, "epochs": budget.epochs,
                     "retrain_epochs": budget.retrain}
    for key, value in {**settings, **dict(budget.search)}.items():
        if options.get(key) is None:
            options[key] = value
            filled.add(key)
    for key, value in list(options.items()):
        if value is None and key not in filled and defaults.get(key) is not None:
            options[key] = defaults[key]
    if "batch_size" in filled and budget.total_batch and ranks > 1:
        # the authors' batch is one process's: under torchrun, each rank takes its share
        if options["batch_size"] % ranks:
            raise ProxylessError(f"--budget {name}: its batch of {options['batch_size']} does "
                                 f"not split over {ranks} ranks; give --batch-size (per GPU)")
        options["batch_size"] //= ranks
