"""``data.online_batch``: each training step draws ``pool_factor`` times its batch and trains on
the rows picked by their loss under the current weights and their diversity. Checked against
an independent reading of the pool (every row's loss from its own forward, the top rows by
hand), through a whole run, and for the specs it refuses."""

from __future__ import annotations

import copy

import pytest
import torch

import workbench
from tests.conftest import fast_spec
from tests.running.test_train_options import Watch
from workbench.data.sources import load_rows
from workbench.methods.reference import build_reference
from workbench.models.adapters.applying import apply_adapter
from workbench.models.loading import load_base
from workbench.spec import registry
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec


def module_for(spec_dict: dict, base):
    spec = RunSpec.parse(spec_dict)
    model = copy.deepcopy(base.model)
    reference = build_reference(spec, model)
    trained = apply_adapter(model, spec.adapter)
    row_kind = registry.ROW_KINDS[registry.METHODS[spec.method.name].row_kind]
    train_rows, eval_rows = load_rows(spec.data, spec.train.seed, row_kind=row_kind.name)
    encoded, _ = registry.resolve(row_kind.encode)(
        base.tokenizer, train_rows[:24], spec.train.max_length
    )
    module = registry.load_module_class(spec.method.name)(
        spec, trained, base.tokenizer, encoded, None, reference=reference,
        rows={"train": train_rows, "eval": eval_rows},
    )  # fmt: skip
    return module


@pytest.fixture(scope="module")
def base():
    return load_base(RunSpec.parse(fast_spec()).model, log=lambda *a: None)


def one_row_loss(module, index: int, row) -> float:
    """A row's completion NLL from a forward of that row alone (no padding beside it)."""
    batch = module.collate([(index, row)])
    with torch.no_grad():
        per_row, _ = module.compute_losses(batch)
    return float(per_row[0])


def test_with_no_diversity_weight_the_highest_loss_rows_of_the_pool_train(base):
    spec = fast_spec(
        method="sft", data={"online_batch": {"pool_factor": 3, "diversity_weight": 0}},
        train={"batch_size": 4},
    )  # fmt: skip
    module = module_for(spec, base)
    module.model.eval()
    items = list(enumerate(module.encoded))[:12]
    pool = module.collate(items)
    picked = module.pick_online(pool)
    losses = {i: one_row_loss(module, i, row) for i, row in items}
    by_hand = sorted(losses, key=lambda i: -losses[i])[:4]
    assert sorted(picked["index"].tolist()) == sorted(by_hand), losses
    # Every tensor of the batch keeps the picked rows, aligned.
    for key in ("input_ids", "attention_mask", "labels"):
        rows = {int(i): r for i, r in zip(pool["index"], pool[key])}
        for i, row in zip(picked["index"].tolist(), picked[key]):
            assert torch.equal(row, rows[i]), key
    assert module._step_extra["select/picked_loss"] > module._step_extra["select/pool_loss"]


def test_the_diversity_weight_changes_which_rows_train(base):
    """Greedy picks by loss plus distance to the rows already picked: with a heavy weight
    on diversity the batch is not the top of the pool by loss."""
    picks = {}
    for weight in (0.0, 10.0):
        spec = fast_spec(
            method="sft", data={"online_batch": {"pool_factor": 4, "diversity_weight": weight}},
            train={"batch_size": 4},
        )  # fmt: skip
        module = module_for(spec, base)
        pool = module.collate(list(enumerate(module.encoded))[:16])  # the same pool both times
        picks[weight] = set(module.pick_online(pool)["index"].tolist())
    assert picks[0.0] != picks[10.0], picks


def test_a_run_with_online_batches_trains_on_harder_rows_than_it_draws(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    spec = fast_spec(
        method="sft",
        data={"online_batch": {"pool_factor": 4, "diversity_weight": 0.5}},
        train={"steps": 4, "batch_size": 4, "eval_every": 4},
    )
    watch = Watch()
    result = workbench.run(spec, log=watch.log, observers=[watch])
    assert result.status == "FINISHED"
    picked, pool = watch.series("select/picked_loss"), watch.series("select/pool_loss")
    assert len(picked) == 4
    assert all(p > q for p, q in zip(picked, pool)), (picked, pool)
    # The step trained on the batch, not the pool: its loss is the picked rows' (the scoring
    # pass ran in eval mode; the tiny base has no dropout, so the two agree).
    losses = watch.series("train/loss")
    assert all(abs(loss - p) < 1e-4 for loss, p in zip(losses, picked)), (losses, picked)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"method": "dpo"}, "method 'dpo' trains on preference rows"),
        ({"data": {"online_batch": {"pool_factor": 1}}}, "pool_factor"),
        ({"data": {"online_batch": {"pool": 4}}}, "pool"),
    ],
)
def test_specs_online_batches_cannot_train_are_refused(section, message):
    spec = fast_spec(data={"online_batch": {"pool_factor": 4}})
    for key, value in section.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    with pytest.raises(SpecError, match=message):
        RunSpec.parse(spec)
