"""Training a derived network from scratch, the last step of ProxylessNAS.

- `trainer.py`  `TrainConfig`, `train` (a network from its architecture, resumable) and the
                epoch and evaluation loops
"""
