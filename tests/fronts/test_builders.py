"""Front builders: the weight-conditioned model follows its prefix, an MGDA step raises no
term, and every builder ends in a parent run holding its front, hypervolume and children."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.conftest import FAST_TINY, fast_spec
from workbench import tracking
from workbench.fronts.builders import BUILDERS, BuiltFront, build_front
from workbench.fronts.conditioned import conditioned_front
from workbench.methods.multi_objective import conditioning
from workbench.spec.errors import SpecError
from workbench.spec.mlflow_names import TAG_BUILDER
from workbench.spec.run_spec import RunSpec


def test_percentages_sum_to_100_and_the_prefix_names_them():
    assert conditioning.percentages({"answer": 0.333, "brevity": 0.667}) == {
        "answer": 33,
        "brevity": 67,
    }
    assert sum(conditioning.percentages({"a": 1, "b": 1, "c": 1}).values()) == 100
    assert conditioning.weight_prefix({"answer": 30, "brevity": 70}) == "<w answer 30 brevity 70>\n"
    rng = np.random.default_rng(0)
    draws = [conditioning.sample_percentages(rng, ["answer", "brevity"], 1.0) for _ in range(200)]
    assert all(sum(d.values()) == 100 for d in draws)
    firsts = [d["answer"] for d in draws]
    assert min(firsts) < 15 and max(firsts) > 85  # alpha = 1 covers the whole simplex


def test_the_prefix_tokenises_the_same_alone_as_before_a_prompt():
    """Training inserts the prefix's ids; generation tokenises the prefixed prompt as one
    string: both must give the same ids, on every held-out prompt of the two tasks (the fast
    base's byte-level BPE, trained on the same corpus as the default one)."""
    from workbench.data.tasks import TASKS
    from workbench.models.loading import load_base
    from workbench.spec.run_spec import ModelSpec

    tokenizer = load_base(ModelSpec(tiny=FAST_TINY), log=lambda *a: None).tokenizer
    prefix = conditioning.weight_prefix({"answer": 7, "brevity": 93})
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    for task in ("order", "explain"):
        for row in TASKS[task].heldout(48):
            together = tokenizer(prefix + row.prompt, add_special_tokens=False)["input_ids"]
            assert together == ids + tokenizer(row.prompt, add_special_tokens=False)["input_ids"]


def test_conditioned_model_follows_the_weights_in_its_prompt(store_uri):
    """One short conditioned-sft run on the fast base, asked at opposite weights: asked for
    the answer it answers longer and fits the held-out answers better (its answer term, the
    one that weight trains) than asked for brevity. 80 steps, seeds 0, 1, 2: length 8.4, 9.8,
    11.2 against 1.1, 2.1, 3.8; answer NLL 1.26, 1.32, 1.20 against 2.47, 2.29, 1.75. (The
    fast base barely sorts, so its correctness, about 0.1 either way, decides nothing.)"""
    spec = RunSpec.parse(
        fast_spec(
            method="conditioned-sft",
            optimizer={"name": "adamw", "lr": 3e-3},
            train={"steps": 80, "batch_size": 16, "eval_every": 80},
            objectives=[
                {
                    "name": "correctness",
                    "direction": "max",
                    "source": "metric:prefix_accuracy",
                    "term": "answer",
                    "weight": 0.5,
                    "reference": 0,
                },
                {
                    "name": "length",
                    "direction": "min",
                    "source": "metric:length_items",
                    "term": "brevity",
                    "weight": 0.5,
                    "reference": 14,
                },
                {"name": "answer_nll", "direction": "min", "source": "term:answer"},
            ],
        )
    )
    result = conditioned_front(spec, [0.1, 0.9], log=lambda *a: None)
    brief, thorough = (r.objectives for r in result.runs)
    assert thorough["length"] > brief["length"] + 3
    assert thorough["answer_nll"] < brief["answer_nll"] - 0.2
    client = tracking.connect(store_uri)
    for r in result.runs:
        run = client.get_run(r.run_id)
        assert run.data.tags["workbench.kind"] == "evaluation"
        assert run.data.tags["workbench.conditioned.model"] == result.training_run_id
        assert run.data.tags["workbench.parent"] == result.parent_run_id
    assert "sweep/hypervolume" in client.get_run(result.parent_run_id).data.metrics


def test_an_mgda_step_raises_no_term_to_first_order(store_uri):
    """On a training batch inside its region, the gradient of the loss mgda-sft returns (the
    combined direction d) has a non-negative inner product with every term's gradient."""
    from workbench.running.pipeline import RunPipeline

    spec = RunSpec.parse(fast_spec(method="mgda-sft"))
    module = RunPipeline(spec, log=lambda *a: None).prepare().module
    batch = module.collate(list(enumerate(module.encoded[:16])))
    params = [p for p in module.model.parameters() if p.requires_grad]

    def gradient(value):
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                for g, p in zip(grads, params)
            ]
        )

    with torch.no_grad():
        first = module.compute_terms(batch)
    values = torch.stack([first[name].mean() for name in module.term_names]).double()
    module.preference = values / values.norm()  # the region's ray through this batch's losses
    per_example, terms = module.compute_losses(batch)
    assert module._step_extra["mgda/inside_region"] == 1.0
    combined = gradient(per_example.mean())
    assert combined.norm() > 0
    for name in module.term_names:
        term = gradient(terms[name].mean())
        assert float(combined @ term) >= -1e-6 * float(combined.norm() * term.norm()), name


def test_mgda_neighbours_of_the_wrong_length_are_refused_before_a_run():
    from workbench.running.pipeline import RunPipeline

    spec = RunSpec.parse(
        fast_spec(
            method={"name": "mgda-sft", "neighbours": [[0.5, 0.3, 0.2]]},
            data={"source": "order", "train_size": 16, "eval_size": 4},
        )
    )
    with pytest.raises(SpecError, match=r"method.neighbours\[0\] = \[0.5, 0.3, 0.2\]: give 2"):
        RunPipeline(spec, log=lambda *a: None).prepare()


def test_an_unknown_builder_is_named_with_the_choices():
    with pytest.raises(SpecError, match="builder = 'soup': unknown; allowed: sweep, conditioned"):
        build_front("soup", fast_spec(method="mo-sft"), 3)


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_every_builder_ends_in_a_parent_with_its_front(builder, store_uri):
    spec = fast_spec(
        method="mo-sft",
        train={"steps": 4, "batch_size": 8, "eval_every": 4},
        data={"source": "order", "train_size": 64, "eval_size": 8},
    )
    built = build_front(builder, spec, 3, log=lambda *a: None)
    assert isinstance(built, BuiltFront) and built.builder == builder  # one result type
    client = tracking.connect(store_uri)
    parent = client.get_run(built.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_BUILDER] == builder
    prefix = "study" if builder == "search" else "sweep"
    assert parent.data.metrics[f"{prefix}/hypervolume"] == pytest.approx(built.hypervolume)
    assert parent.data.metrics[f"{prefix}/front_size"] >= 1
    children = tracking.runs_frame(client, "tests", parent_run_id=built.parent_run_id, status=None)
    assert len(children) >= 3
    assert "front.json" in {a.path for a in client.list_artifacts(built.parent_run_id)}
    # Named after what differs: the parent after its builder, no child by MLflow's random
    # adjective-noun-number (a weight, a coefficient, a trial's values, the conditioned model).
    assert parent.info.run_name == f"{builder} front"
    names = [c["run_name"] for c in children]
    assert not [n for n in names if re.fullmatch(r"[a-z]+-[a-z]+-\d+", n)], names
    assert any(re.search(r"correctness=0\.\d|linear c=", n) for n in names), names
    trained = {"sweep": 3, "conditioned": 1, "merging": 2, "search": 3, "mgda": 3}[builder]
    assert len(built.training_run_ids) == trained
    if builder != "search":  # a pruned trial stops early
        assert built.training_steps == 4 * trained


def test_the_cli_names_an_unknown_builder_before_reading_the_spec(capsys, tmp_path):
    from workbench.cli.main import main

    assert main(["build", "soup", str(tmp_path / "missing.yaml"), "--points", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: builder = 'soup': unknown; allowed: sweep, conditioned, merging, search, mgda"
    )
