"""Running a spec: the pipeline and its events, optimizers and schedules, evaluation, launcher,
preflight, checkpoints, strategies, cluster, liveness, core sharing."""
