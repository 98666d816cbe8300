"""The training engine every loop (search, training) runs on.

- `epochs.py`           the run skeleton: resume, checkpoints between and inside epochs,
                        progress, stopping and divergence
- `runtime.py`          device, threads, seeding, atomic checkpoints, run folders
- `run_lock.py`         one writer per run folder (`flock`)
- `stopping.py`         stopping on request (SIGTERM/SIGUSR1) with a checkpoint
- `divergence.py`       a loss or parameter that became NaN/inf stops the run, saying why
- `optimizer.py`        the weights' SGD (Nesterov, no decay on BatchNorm and biases but in
                        the reference's search)
- `precision.py`        mixed precision (`--precision auto|fp32|bf16|fp16`)
- `training_speed.py`   `--precision auto` on a CPU and `--compile auto`, by timed steps
- `distributed.py`      PyTorch DDP under `torchrun`
- `memory.py`           what a network holds in memory; `--batch-size auto`
- `tensorboard_log.py`  a run folder's TensorBoard event files
"""
