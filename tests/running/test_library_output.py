"""Known library noise stays out of a run's output, and nothing else is hidden; a launched run
reads at a glance in MLflow (its name, the base's scores as params)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, own_store
from workbench.running.library_output import quiet_libraries

GRADIENT_CHECKPOINTING = (
    "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use "
    "`is_activation_checkpointing` instead."
)


def test_the_gradient_checkpointing_deprecation_is_hidden_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn(GRADIENT_CHECKPOINTING, FutureWarning, stacklevel=1)
            # The same words in another category, and another FutureWarning, still show.
            warnings.warn(GRADIENT_CHECKPOINTING, UserWarning, stacklevel=1)
            warnings.warn("`other_property` is deprecated", FutureWarning, stacklevel=1)
    assert [(w.category, str(w.message)) for w in seen] == [
        (UserWarning, GRADIENT_CHECKPOINTING),
        (FutureWarning, "`other_property` is deprecated"),
    ]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One launched LoRA run on the fast tiny base (peft wraps the model, which is where
    transformers warned), run to the end: (its MLflow run, its log)."""
    from workbench.running.launcher import launch

    with own_store(tmp_path_factory, "store") as uri, pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        spec = fast_spec(
            method="sft",
            adapter={"name": "lora", "r": 4},
            train={"steps": 2, "batch_size": 8, "eval_every": 2, "log_every": 1},
            tracking={"experiment": "noise", "log_model": False},
        )
        handle = launch(spec)
        # A cold fast base builds in about 30 s on 2 idle cores, then 2 steps take seconds.
        status = handle.wait(timeout=600)
        log = Path(handle.log_path).read_text()
        assert status == "FINISHED", log[-3000:]
        yield MlflowClient(uri).get_run(handle.run_id), log


def test_a_launched_runs_log_has_no_gradient_checkpointing_warning(launched):
    _, log = launched
    assert "run ended FINISHED" in log
    assert "is_gradient_checkpointing" not in log, log[-3000:]
    assert "FutureWarning" not in log, log[-3000:]


def test_a_launched_run_without_a_name_is_named_after_its_method_and_data(launched):
    run, _ = launched
    assert run.info.run_name == run.data.tags["mlflow.runName"] == "sft order"


def test_the_base_scores_are_params_not_constant_metrics(launched):
    run, _ = launched
    scores = {k: v for k, v in run.data.params.items() if k.startswith("base/exact_match/")}
    assert set(scores) == {
        f"base/exact_match/{t}" for t in ("arithmetic", "reverse", "sort", "order")
    }
    assert all(0.0 <= float(v) <= 1.0 for v in scores.values())
    assert not [k for k in run.data.metrics if k.startswith("base/")]
