"""The names tracking gives things in MLflow: tags, artifacts, end statuses
(docs/concepts.md, "Names in MLflow").

Kept apart from everything that imports MLflow, so that code which only reads these names
(the listing commands, fronts, liveness) does not pay MLflow's import.
"""

from __future__ import annotations

# Refreshed by every open recorder, so a dead run can be told from a slow one.
HEARTBEAT_TAG = "workbench.heartbeat"

TAG_METHOD = "workbench.method"
TAG_ADAPTER = "workbench.adapter"
TAG_OPTIMIZER = "workbench.optimizer"
TAG_PARENT = "workbench.parent"
TAG_ERROR = "workbench.error"
# Set with the error when a run is ended FAILED from outside because its process seemed gone.
# The run's own process, if it still lives, takes such a verdict back (tracking.store).
DECLARED_DEAD_TAG = "workbench.declared_dead"
# What a withdrawn verdict said and when, kept on the run for the record.
TAG_WITHDRAWN_VERDICT = "workbench.withdrawn_verdict"
# Who made a run (a student on a class board, a lab member): from WORKBENCH_AUTHOR when set.
TAG_AUTHOR = "workbench.author"
AUTHOR_ENV = "WORKBENCH_AUTHOR"
OBJECTIVE_PREFIX = "objective/"
SPEC_ARTIFACT = "spec.yaml"
ERROR_ARTIFACT = "error.txt"
FALLBACK_FOLDER = "unsent"
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
# What a launched run is doing before it trains (building or loading its base), by PhaseBeat.
PHASE_TAG = "workbench.phase"
