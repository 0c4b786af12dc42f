"""Studies over many runs: weight sweeps and Optuna searches."""
