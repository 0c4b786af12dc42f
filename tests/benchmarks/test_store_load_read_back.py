"""benchmarks/store_load.py's read-back: a resend with a new timestamp is a duplicate, a point
stored with another value is wrong, a step never stored is lost."""

from __future__ import annotations

import importlib

from mlflow.entities import Metric

from tests.conftest import ROOT


def test_read_back_counts_resends_by_step_whatever_their_timestamps(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    store_load = importlib.import_module("store_load")
    sent = {step: store_load.sent_value(7, 2, step) for step in range(4)}
    assert len(set(sent.values())) == 4  # a point stored under another step shows
    history = [
        Metric("train/loss", sent[0], 1000, 0),
        Metric("train/loss", sent[0], 2000, 0),  # the same point again, a new timestamp
        Metric("train/loss", sent[1], 1000, 1),
        Metric("train/loss", sent[1] + 1e-6, 1000, 2),  # step 2 holds another value
    ]  # step 3 never stored
    assert store_load.compare_history(history, sent) == {"lost": 1, "duplicated": 1, "wrong": 1}
    exact = [Metric("train/loss", v, 1000, s) for s, v in sent.items()]
    assert store_load.compare_history(exact, sent) == {"lost": 0, "duplicated": 0, "wrong": 0}
