"""A data selector on the real instruct model (SmolLM2-135M-Instruct): the confidence filter
scores a handful of a task's rows through the model's chat template and keeps its budget."""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.data.corruption import corrupt_labels
from workbench.data.selection.selecting import Candidates, select_rows
from workbench.data.tasks import TASKS
from workbench.spec import components


def test_the_confidence_filter_keeps_its_budget_on_the_real_model(real_model_folder):
    tokenizer = AutoTokenizer.from_pretrained(real_model_folder)
    model = AutoModelForCausalLM.from_pretrained(real_model_folder).eval()
    rows = corrupt_labels(TASKS["addition"].rows(8, seed=0), 0.25, seed=0)
    candidates = Candidates(rows, model, tokenizer, 64, 8, "addition", [])
    settings = components.SELECTORS["confidence"].params(name="confidence", budget=6)
    before = [p.detach().clone() for p in model.parameters()]
    selection = select_rows(candidates, settings, seed=0)
    assert len(selection.chosen) == len(set(selection.chosen)) == 6
    assert len(selection.scores) == 8 and all(math.isfinite(s) for s in selection.scores)
    # Plausibility is a log-prob gap to the model's own top tokens: never above 0.
    assert max(selection.scores) <= 1e-6
    # The kept rows are the most plausible ones.
    dropped = set(range(8)) - set(selection.chosen)
    assert min(selection.scores[i] for i in selection.chosen) >= max(
        selection.scores[i] for i in dropped
    )
    assert select_rows(candidates, settings, seed=0).chosen == selection.chosen
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
