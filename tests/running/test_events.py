"""Run events: an observer hears the run's start, every optimizer step, each evaluation and the
end, and every record the MLflow store gets (data statistics, costs, peak memory, the kernels
that ran); the recorder can be swapped for another observer; an observer can stop a run; a
failing observer does not stop training. Also the held-out value of
a ``term:`` objective, the learning-rate schedule from the registry, and a model evaluated
without training, each against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

import workbench
from tests.conftest import fast_spec, own_store
from workbench import tracking
from workbench.data.encode import collate, encode_rows
from workbench.data.sources import load_rows
from workbench.models.loading import load_base
from workbench.running.events import RunObserver

pytestmark = pytest.mark.slow

STEPS, EVAL_EVERY, WARMUP = 6, 3, 2


class Recorder(RunObserver):
    """Keeps every event in memory: a second observer beside the MLflow recorder."""

    def __init__(self):
        self.calls = []
        self.tags, self.params, self.statistics = {}, {}, {}
        self.costs: dict[int, dict[str, float]] = {}
        self.kernels = None

    def on_tags(self, tags):
        self.tags.update(tags)

    def on_params(self, params):
        self.params.update(params)

    def on_data_statistics(self, statistics):
        self.statistics.update(statistics)

    def on_costs(self, step, costs):
        self.costs.setdefault(step, {}).update(costs)

    def on_kernels(self, step, ran, counts):
        self.kernels = (step, ran, dict(counts))

    def on_start(self, context):
        self.calls.append(("start", context.run_id, context.total_steps))

    def on_step(self, step, metrics):
        self.calls.append(("step", step, dict(metrics)))

    def on_evaluation(self, evaluation):
        self.calls.append(("evaluation", evaluation.step, dict(evaluation.objectives)))

    def on_end(self, status, error=None, details=None):
        self.calls.append(("end", status, error))


def term_spec(train=None):
    objectives = [
        {
            "name": "correctness",
            "direction": "max",
            "source": "metric:prefix_accuracy",
            "term": "answer",
            "weight": 0.6,
            "reference": 0,
        },
        {
            "name": "length",
            "direction": "min",
            "source": "metric:length_items",
            "term": "brevity",
            "weight": 0.4,
            "reference": 14,
        },
        {"name": "answer_nll", "direction": "min", "source": "term:answer"},
    ]
    train = train or {
        "steps": STEPS,
        "batch_size": 8,
        "eval_every": EVAL_EVERY,
        "scheduler": "linear",
        "warmup_steps": WARMUP,
    }
    return fast_spec(objectives=objectives, optimizer={"name": "sgd", "lr": 0.05}, train=train)


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    with own_store(tmp_path_factory, "events-store"):
        observer = Recorder()
        result = workbench.run(term_spec(), observers=[observer], log=lambda *a: None)
        yield observer, result, tracking.connect()


def test_observer_hears_start_each_step_each_evaluation_and_the_end(observed):
    observer, result, _ = observed
    kinds = [c[0] for c in observer.calls]
    assert observer.calls[0] == ("start", result.run_id, STEPS)
    assert [c[1] for c in observer.calls if c[0] == "step"] == list(range(1, STEPS + 1))
    assert [c[1] for c in observer.calls if c[0] == "evaluation"] == [0, EVAL_EVERY, STEPS]
    assert observer.calls[-1] == ("end", "FINISHED", None)
    # The evaluation at a step comes before that step's metrics (what resume relies on).
    assert (
        kinds.index("evaluation", 2)
        < [i for i, c in enumerate(observer.calls) if c[:2] == ("step", EVAL_EVERY)][0]
    )
    steps = [c[2] for c in observer.calls if c[0] == "step"]
    assert all({"train/loss", "train/answer", "train/brevity", "train/lr"} <= set(m) for m in steps)


def test_a_second_observer_gets_the_records_the_store_gets(observed):
    """Data statistics, costs, peak memory and the kernels that ran are events: the MLflow
    recorder stores what an in-memory observer beside it hears, value for value."""
    observer, result, client = observed
    run = client.get_run(result.run_id)

    def stored(key):
        return {m.step: m.value for m in client.get_metric_history(result.run_id, key)}

    assert observer.statistics and {"data/rows", "data/truncated_rows"} <= set(observer.statistics)
    for key, value in observer.statistics.items():
        assert stored(key) == {0: pytest.approx(value)}, key
    assert stored("cost/trainable_params") == {0: observer.costs[0]["cost/trainable_params"]}
    assert set(observer.costs[STEPS]) == {
        "perf/peak_mem_mb",
        "perf/train_time_s",
        "cost/step_s",
        "cost/tokens_per_s",
    }
    for key, value in observer.costs[STEPS].items():
        assert stored(key) == {STEPS: pytest.approx(value)}, key
    step, ran, counts = observer.kernels
    assert step == STEPS and run.data.tags["workbench.kernels"] == ran != "pending"
    for key, value in counts.items():
        assert stored(key) == {STEPS: pytest.approx(value)}, key
    assert run.data.tags["workbench.base"] == observer.tags["workbench.base"]
    assert {k: v for k, v in run.data.params.items() if k.startswith("base/")} == observer.params


class EndsTheRun(RunObserver):
    """In place of the MLflow recorder: records nothing, only ends the MLflow run."""

    def __init__(self, recorder):
        self.recorder = recorder

    def on_end(self, status, error=None, details=None):
        self.recorder.finish(status, error, details=details)


def test_the_recorder_can_be_swapped_for_another_observer(store_uri):
    memory = Recorder()
    result = workbench.run(
        term_spec(train={"steps": 2, "batch_size": 4, "eval_every": 2}),
        observers=[memory],
        record_with=lambda recorder, log_every, log: EndsTheRun(recorder),
        log=lambda *a: None,
    )
    run = tracking.connect().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert not run.data.metrics and "workbench.base" not in run.data.tags  # nothing recorded
    assert [c[1] for c in memory.calls if c[0] == "step"] == [1, 2]
    assert memory.statistics["data/rows"] > 0 and memory.costs[2]["perf/peak_mem_mb"] >= 0
    assert memory.tags["workbench.base"] and memory.kernels is not None


def test_learning_rate_follows_the_registered_schedule(observed):
    observer, _, _ = observed
    lrs = [c[2]["train/lr"] for c in observer.calls if c[0] == "step"]
    # After optimizer step s (1-based) the scheduler has stepped s times: factor(s).
    expected = []
    for s in range(1, STEPS + 1):
        factor = (s + 1) / WARMUP if s < WARMUP else max(0.0, 1 - (s - WARMUP) / (STEPS - WARMUP))
        expected.append(0.05 * factor)
    assert lrs == pytest.approx(expected)


def test_term_objective_is_the_held_out_masked_nll(observed):
    """objective/answer_nll equals the mean NLL of the held-out answers' tokens, recomputed in
    float64 from the trained model's logits."""
    _, result, client = observed
    spec = workbench.RunSpec.parse(term_spec())
    _, eval_rows = load_rows(spec.data, spec.train.seed)
    base = load_base(spec.model, log=lambda *a: None)
    model_dir = client.download_artifacts(result.run_id, "model")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    encoded, _ = encode_rows(base.tokenizer, eval_rows, spec.train.max_length)
    batch = collate(encoded, base.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double()[:, :-1], dim=-1)
    targets = batch["labels"][:, 1:]
    mask = (targets != -100) & (batch["segments"][:, 1:] == 1)
    token = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_row = -(token * mask).sum(1) / mask.sum(1).clamp(min=1)
    assert result.objectives["answer_nll"] == pytest.approx(float(per_row.mean()), rel=1e-4)
    # Measured on the trained model, not the base (the brevity term may well raise it).
    assert result.objectives["answer_nll"] != pytest.approx(result.trajectory[0][1]["answer_nll"])


def test_evaluate_model_records_the_base_as_its_own_run(observed, monkeypatch):
    _, result, client = observed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    base_eval = workbench.evaluate_model(term_spec(), run_name="base")
    run = client.get_run(base_eval.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["workbench.kind"] == "evaluation"
    # The same spec's run measured the base at step 0: the same numbers.
    assert base_eval.objectives == pytest.approx(result.trajectory[0][1])
    assert {
        m.step for m in client.get_metric_history(base_eval.run_id, "objective/answer_nll")
    } == {0}


class StopAfter(RunObserver):
    def __init__(self, step):
        self.step, self.context = step, None

    def on_start(self, context):
        self.context = context

    def on_step(self, step, metrics):
        if step >= self.step:
            self.context.request_stop("pruned: not promising")


class Broken(RunObserver):
    def on_step(self, step, metrics):
        raise RuntimeError("a display problem")


def test_an_observer_can_stop_a_run_and_a_broken_one_is_detached(store_uri):
    spec = term_spec(train={"steps": 20, "batch_size": 4, "eval_every": 50})
    with pytest.raises(KeyboardInterrupt):
        workbench.run(spec, observers=[Broken(), StopAfter(2)], log=lambda *a: None)
    client = tracking.connect()
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["workbench.error"] == "pruned: not promising"
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == 2
    assert math.isfinite(run.data.metrics["train/loss"])
