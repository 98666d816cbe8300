"""The whole job and what is read and drawn from finished runs.

- `run.py`          `run_pipeline`: profile, search, retrain, evaluate, measure, report.md
- `budgets.py`      `--budget quick|standard|thorough|paper`: how long `run` searches and
                    retrains
- `run_folders.py`  what a finished folder or file says about its network
- `results.py`      `RunResult`: what a finished run found (`results.json`)
- `report.py`       a run's `report.md`, beside its plots
- `plots.py`        the plots (PNG) of searches, trainings and runs
- `pareto.py`       `proxyless compare`: a Pareto picture of finished folders
"""
