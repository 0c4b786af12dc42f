"""The names the workbench gives things in MLflow: tags, metric keys and prefixes, artifacts,
end statuses. DESIGN's "Names in MLflow" table as code (docs/concepts.md).

Kept apart from everything that imports MLflow, so that code which only reads these names
(the listing commands, fronts, liveness, the widgets) does not pay MLflow's import. Code below
the tracking layer (the methods, the data encoders, the spec) names its own metrics where it
computes them, each key built from the prefixes and keys listed here.
"""

from __future__ import annotations

# -- tags: what a run is (the plugins a run imports: workbench.spec.plugins.TAG) ------

# What a run is: a training run, a sweep's or study's parent, an evaluation (absent: a run).
TAG_KIND = "workbench.kind"
KIND_RUN = "run"
KIND_SWEEP = "sweep"
KIND_STUDY = "study"
KIND_EVALUATION = "evaluation"
TAG_METHOD = "workbench.method"
TAG_ADAPTER = "workbench.adapter"
TAG_OPTIMIZER = "workbench.optimizer"
TAG_PARENT = "workbench.parent"
# The fused kernels that actually ran ("none (kernels: off)" when turned off).
TAG_KERNELS = "workbench.kernels"
# The malloc the run's process ran on ("mimalloc X.Y.Z" or "system").
TAG_ALLOCATOR = "workbench.allocator"
TAG_BASE = "workbench.base"
# Who made a run (a student on a class board, a lab member): from WORKBENCH_AUTHOR when set.
TAG_AUTHOR = "workbench.author"
AUTHOR_ENV = "WORKBENCH_AUTHOR"
# Which front builder made a parent run (sweep, conditioned, merging, search, mgda).
TAG_BUILDER = "workbench.builder"
# A merged run: its merge method, and the runs it merged.
TAG_MERGE = "workbench.merge"
TAG_MERGE_SOURCES = "workbench.merge.sources"
# A search: the study of a parent run and the trial of a child; its storage, sampler, pruning.
TAG_STUDY = "workbench.study"
TAG_TRIAL = "workbench.trial"
TAG_STORAGE = "workbench.storage"
TAG_SAMPLER = "workbench.sampler"
TAG_PRUNING = "workbench.pruning"

# -- tags: how a run ends, and its signs of life --------------------------------------------

TAG_ERROR = "workbench.error"
# Refreshed by every open recorder, so a dead run can be told from a slow one.
HEARTBEAT_TAG = "workbench.heartbeat"
# What a launched run is doing before it trains (building or loading its base), by PhaseBeat.
PHASE_TAG = "workbench.phase"
# Set with the error when a run is ended FAILED from outside because its process seemed gone.
# The run's own process, if it still lives, takes such a verdict back (tracking.store).
DECLARED_DEAD_TAG = "workbench.declared_dead"
# What a withdrawn verdict said and when, kept on the run for the record.
TAG_WITHDRAWN_VERDICT = "workbench.withdrawn_verdict"
# The process of a launched run: its id, its start mark and its host (liveness), its log file.
PID_TAG = "workbench.pid"
START_TAG = "workbench.process_start"
HOST_TAG = "workbench.host"
LOG_TAG = "workbench.log"
# The torch threads a run took of the machine's cores (core sharing).
THREADS_TAG = "workbench.threads"
# Whether a run's training steps ran compiled (train.compile): ``on``, or ``off (why)``.
COMPILE_TAG = "workbench.compile"

# -- metrics ---------------------------------------------------------------------------------

TRAIN_PREFIX = "train/"  # the training loss and its terms
LOSS_KEY = "train/loss"
LR_KEY = "train/lr"
OBJECTIVE_PREFIX = "objective/"  # objective values at each evaluation
EVAL_PREFIX = "eval/"  # held-out metrics at each evaluation
REWARD_PREFIX = "reward/"  # reward/<name>/mean, reward/<name>/std (RL)
REWARD_TOTAL_KEY = "reward/total"
PREF_PREFIX = "pref/"  # preference debugging: log-probs, margins, accuracy
# What a method logs of its own, under its name: MGDA's region and coefficients, GRPO's
# clipping and KL, RAFT's kept completions.
MGDA_PREFIX = "mgda/"  # mgda/inside_region, mgda/direction_norm, mgda/coefficient/<term>
GRPO_PREFIX = "grpo/"  # grpo/clip_ratio, grpo/ratio, grpo/kl
RAFT_PREFIX = "raft/"  # raft/kept, raft/kept_total
KERNELS_PREFIX = "kernels/"  # kernels/<op>_calls: how often each fused op ran
PERF_PREFIX = "perf/"  # cost in time and memory
TOKENS_KEY = "perf/tokens"  # a step's tokens; sent as perf/tokens_per_s
TOKENS_PER_S_KEY = "perf/tokens_per_s"
STEP_TIME_KEY = "perf/step_s"
PEAK_MEM_KEY = "perf/peak_mem_mb"
TRAIN_TIME_KEY = "perf/train_time_s"
COST_PREFIX = "cost/"
TRAINABLE_PARAMS_KEY = "cost/trainable_params"
# The training rows a run trains on (after data.select): its data budget.
TRAIN_EXAMPLES_KEY = "cost/train_examples"
# Where each run-level cost (the spec's cost:<name>) is stored: read back by the fronts of
# finished runs for every run, whether or not it declared the cost as an objective.
COST_METRIC_KEYS = {
    "trainable_params": TRAINABLE_PARAMS_KEY,
    "peak_mem_mb": PEAK_MEM_KEY,
    "train_time_s": TRAIN_TIME_KEY,
    "train_examples": TRAIN_EXAMPLES_KEY,
    "step_s": "cost/step_s",
    "tokens_per_s": "cost/tokens_per_s",
}
DATA_PREFIX = "data/"  # the encoded data: rows, truncated and dropped rows, tokens
# With data.corrupt_fraction and data.select: how well the dropped rows find the corrupted ones.
DROPPED_PRECISION_KEY = "data/dropped_corrupted_precision"
DROPPED_RECALL_KEY = "data/dropped_corrupted_recall"
# A sweep's or study's parent: <prefix>/hypervolume, <prefix>/base_hypervolume,
# <prefix>/front_size; the prefix is the parent's kind.
SWEEP_PREFIX = "sweep/"
STUDY_PREFIX = "study/"

# -- artifacts and files ---------------------------------------------------------------------

SPEC_ARTIFACT = "spec.yaml"
ERROR_ARTIFACT = "error.txt"
FRONT_ARTIFACT = "front.json"
# The rows data.select kept (ids into the training rows), every row's score, the selector's
# settings, and the rows data.corrupt_fraction corrupted.
SELECTION_ARTIFACT = "data_selection.json"
# Metrics a store could not take, saved under the local store folder for a later replay.
FALLBACK_FOLDER = "unsent"

END_STATUSES = ("FINISHED", "FAILED", "KILLED")
