"""Pruning a trial while it trains, by a rule over its objectives and the completed trials'.

Optuna's pruners and ``Trial.should_prune`` are single-objective only, so a
:class:`TrialPruner` observer hears each evaluation of a trial's run, stores the point on
the trial (user attribute ``objectives_at_step_<step>``) and asks a pruning rule (a
:class:`PruneQuery` -> a reason or None); the default rule, :func:`prune_dominated`,
prunes a trial whose intermediate point is dominated by a completed trial's point at the
same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workbench.running.events import Evaluation, RunContext, RunObserver
from workbench.spec import registry
from workbench.spec.errors import SpecError
from workbench.spec.objective_source import direction_sign
from workbench.spec.run_spec import RunSpec

# Trial user attributes the pruner writes: the objectives at each evaluation, the MLflow run.
STEP_ATTR = "objectives_at_step_"
RUN_ATTR = "mlflow_run_id"


@dataclass
class PruneQuery:
    """What a pruning rule sees at one evaluation of a running trial."""

    trial_number: int
    step: int
    values: dict[str, float]  # this trial's objectives at ``step``
    directions: dict[str, str]  # objective -> 'min' | 'max'
    completed: dict[int, dict[int, dict[str, float]]]  # completed trial -> step -> objectives


def dominates(
    a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]
) -> bool:
    """Whether point ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for name, direction in directions.items():
        lower_is_better = -direction_sign(direction)
        x, y = lower_is_better * a[name], lower_is_better * b[name]
        if x > y:
            return False
        better = better or x < y
    return better


def prune_dominated(query: PruneQuery) -> str | None:
    """Prune when a completed trial's point at the same step dominates this trial's point
    (the objectives it lacks at that step are not compared)."""
    if any(not math.isfinite(v) for v in query.values.values()):
        return f"an objective is not finite at step {query.step}"
    for number, by_step in sorted(query.completed.items()):
        other = by_step.get(query.step)
        if other is None or any(n not in other for n in query.directions):
            continue
        if dominates(other, query.values, query.directions):
            shown = ", ".join(
                f"{n}={query.values[n]:.4g} vs {other[n]:.4g}" for n in query.directions
            )
            return f"dominated by completed trial {number} at step {query.step} ({shown})"
    return None


def prune_never(query: PruneQuery) -> str | None:
    return None


PRUNING_RULES: dict[str, Callable[[PruneQuery], str | None]] = {
    "dominated": prune_dominated,
    "none": prune_never,
}


def resolve_rule(name: str) -> Callable[[PruneQuery], str | None]:
    """A built-in rule by name, or a function named ``module:function``."""
    if name in PRUNING_RULES:
        return PRUNING_RULES[name]
    if ":" not in name:
        raise SpecError(
            f"search.pruning = {name!r}: unknown rule; allowed: "
            f"{', '.join(PRUNING_RULES)}, or 'module:function'"
        )
    try:
        rule = registry.resolve(name)
    except (ImportError, AttributeError) as err:
        raise SpecError(f"search.pruning = {name!r}: cannot be imported ({err})") from None
    if not callable(rule):
        raise SpecError(f"search.pruning = {name!r}: not a function")
    return rule


class TrialPruner(RunObserver):
    """Reports a trial's objectives at each evaluation to its Optuna trial and stops the run
    (``context.request_stop``: it ends KILLED with the reason) when the rule says so.

    Never at step 0 (the base model, the same for every trial) nor at the last step (the run
    is finishing anyway).
    """

    def __init__(
        self, study, trial, spec: RunSpec, rule: Callable[[PruneQuery], str | None], rule_name: str
    ):
        self.study, self.trial, self.rule, self.rule_name = study, trial, rule, rule_name
        self.directions = {o.name: o.direction for o in spec.objectives}
        self.total_steps = spec.train.steps
        self.context: RunContext | None = None
        self.reason: str | None = None

    def on_start(self, context: RunContext) -> None:
        self.context = context
        self.trial.set_user_attr(RUN_ATTR, context.run_id)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        values = {
            n: float(evaluation.objectives[n])
            for n in self.directions
            if n in evaluation.objectives
        }
        self.trial.set_user_attr(f"{STEP_ATTR}{evaluation.step}", values)
        if evaluation.step == 0 or evaluation.step >= self.total_steps or self.reason is not None:
            return
        if len(values) < len(self.directions):
            return
        query = PruneQuery(
            self.trial.number,
            evaluation.step,
            values,
            self.directions,
            completed_points(self.study),
        )
        reason = self.rule(query)
        if reason:
            self.reason = f"pruned by the {self.rule_name} rule: {reason}"
            self.trial.set_user_attr("pruned", self.reason)
            self.context.request_stop(self.reason)


def completed_points(study) -> dict[int, dict[int, dict[str, float]]]:
    """Each completed trial's objectives at each evaluation step, from its user attributes."""
    from optuna.trial import TrialState

    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        out[t.number] = {
            int(k[len(STEP_ATTR) :]): v for k, v in t.user_attrs.items() if k.startswith(STEP_ATTR)
        }
    return out
