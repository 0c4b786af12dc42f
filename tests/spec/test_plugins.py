"""A method, a metric and a reward defined outside the package, registered through the public
calls, and run in this process and in a background process.

The method is unlikelihood training (Welleck et al., 2019): the likelihood of the chosen
completion plus ``alpha`` times -log(1 - p) of each token of a negative completion, which
pushes those tokens' probabilities down. It trains on preference pairs (the built-in task's
pairs: a corrupted answer as the rejected completion). Nothing in ``workbench/`` names it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field

import workbench
from tests.conftest import fast_spec
from workbench import tracking
from workbench.methods.base import WorkbenchModule
from workbench.methods.sft import losses as sft_losses
from workbench.spec import registry
from workbench.spec.errors import SpecError

pytestmark = pytest.mark.slow


class UnlikelihoodParams(workbench.MethodParams):
    alpha: float = Field(0.5, ge=0, description="Weight of the unlikelihood term.")


class UnlikelihoodModule(WorkbenchModule):
    """L = NLL(chosen) + alpha * mean_t -log(1 - p(rejected_t))."""

    def compute_losses(self, batch):
        n = int(batch["n_pairs"])
        logp, mask, _ = self.token_stats(batch)
        likelihood = sft_losses.masked_mean_nll(logp[:n], mask[:n])
        p_rejected = logp[n:].exp().clamp(max=1 - 1e-6)
        counts = mask[n:].sum(dim=1).clamp(min=1)
        unlikelihood = -(torch.log1p(-p_rejected) * mask[n:]).sum(dim=1) / counts
        total = likelihood + self.params.alpha * unlikelihood
        return total, {"likelihood": likelihood, "unlikelihood": unlikelihood}


def starts_with_space(completion: str, example: dict) -> float:
    return float(completion.startswith(" "))


def digit_share(completion: str, example: dict) -> float:
    """Share of the generated characters that are digits."""
    return sum(c.isdigit() for c in completion) / max(1, len(completion))


workbench.register_method(
    "unlikelihood-test",
    module=UnlikelihoodModule,
    params=UnlikelihoodParams,
    row_kind="preference",
    terms={
        "likelihood": "NLL of the chosen completion",
        "unlikelihood": "mean -log(1 - p) over the rejected completion's tokens",
    },
    summary="Likelihood on chosen completions, unlikelihood on rejected ones.",
    formula="L = NLL(y+) + alpha * mean_t -log(1 - p(y-_t | y-_<t, x))",
    paper="Neural Text Generation with Unlikelihood Training (Welleck et al., 2019)",
)
workbench.register_metric("starts_with_space", starts_with_space)
workbench.register_reward("digit_share", digit_share)

OBJECTIVES = [
    {"name": "rejected_ul", "direction": "min", "source": "term:unlikelihood"},
    {"name": "space", "direction": "max", "source": "metric:starts_with_space"},
    {"name": "digits", "direction": "max", "source": "reward:digit_share"},
]


def plugin_spec(**extra):
    return fast_spec(
        method={"name": "unlikelihood-test", "alpha": 0.25},
        objectives=OBJECTIVES,
        train={"steps": 6, "batch_size": 8, "eval_every": 3},
        **extra,
    )


def check_recorded(run_id: str) -> None:
    client = tracking.connect()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["workbench.method"] == "unlikelihood-test"
    # `workbench resume` imports the module that registered the method from this tag.
    assert run.data.tags["workbench.plugins"] == __name__
    text = Path(client.download_artifacts(run_id, "spec.yaml")).read_text()
    assert yaml.safe_load(text)["method"] == {"name": "unlikelihood-test", "alpha": 0.25}
    for key in ("train/loss", "train/likelihood", "train/unlikelihood"):
        assert [m.step for m in client.get_metric_history(run_id, key)][-1] == 6, key
    for name in ("rejected_ul", "space", "digits"):
        history = client.get_metric_history(run_id, f"objective/{name}")
        assert sorted(m.step for m in history) == [0, 3, 6], name
    # The held-out unlikelihood term is a positive loss value; the text scores are shares.
    ul = [m.value for m in client.get_metric_history(run_id, "objective/rejected_ul")]
    assert all(v > 0 for v in ul)
    for name in ("space", "digits"):
        assert all(
            0 <= m.value <= 1 for m in client.get_metric_history(run_id, f"objective/{name}")
        )


def test_plugin_method_runs_in_process_with_its_parameter_terms_metric_and_reward(store_uri):
    spec = workbench.RunSpec.parse(plugin_spec())
    assert spec.method.alpha == 0.25
    result = workbench.run(spec, log=lambda *a: None)
    check_recorded(result.run_id)
    # The reward scores what the model generated: recompute it from the logged samples.
    assert set(result.objectives) == {"rejected_ul", "space", "digits"}


def test_plugin_method_runs_in_a_background_process(store_uri):
    handle = workbench.launch(plugin_spec())
    assert handle.wait(timeout=600) == "FINISHED", Path(handle.log_path).read_text()[-3000:]
    check_recorded(handle.run_id)


def test_unknown_plugin_parameter_is_refused_in_one_line():
    with pytest.raises(SpecError) as info:
        workbench.RunSpec.parse(fast_spec(method={"name": "unlikelihood-test", "alpah": 1}))
    assert "method.alpah = 1: unknown field; check its spelling; allowed: alpha, name" in str(
        info.value
    )


def test_a_method_defined_in_a_notebook_cell_is_refused_at_launch_with_the_fix(store_uri):
    notebook_module = type("CellModule", (UnlikelihoodModule,), {"__module__": "__main__"})
    workbench.register_method(
        "cell-method",
        module=notebook_module,
        row_kind="preference",
        terms=("likelihood", "unlikelihood"),
    )
    try:
        with pytest.raises(SpecError, match="notebook cell") as info:
            workbench.launch(fast_spec(method="cell-method", objectives=OBJECTIVES))
        assert "move it into a .py file" in str(info.value)
        client = tracking.connect()
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not experiments or client.search_runs(experiments) == []  # no run was created
    finally:
        registry.METHODS.pop("cell-method")


def test_built_in_names_cannot_be_replaced():
    with pytest.raises(ValueError, match="built-in method"):
        workbench.register_method("sft", module=UnlikelihoodModule)
    with pytest.raises(ValueError, match="built-in metric"):
        workbench.register_metric("exact_match", starts_with_space)


def test_no_file_in_the_package_names_the_plugin():
    package = Path(workbench.__file__).parent
    found = subprocess.run(
        ["grep", "-ril", "unlikelihood", str(package)], capture_output=True, text=True
    )
    assert found.stdout == ""
