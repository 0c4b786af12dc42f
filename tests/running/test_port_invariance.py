"""SFT and MO-SFT trajectories pinned across the move to method plugins.

The numbers below were produced by the code before methods, adapters, optimizers and
schedules became registry entries (same fast tiny base, seed, data and steps). The port
must reproduce them to float tolerance: same losses at every step, same learning rates,
same final objectives. A change that alters them on purpose must say so and update them.
"""

from __future__ import annotations

import pytest

import workbench
from tests.conftest import fast_spec
from workbench import tracking

pytestmark = pytest.mark.slow

ARITHMETIC = {"source": "arithmetic", "train_size": 200, "eval_size": 16}
SPECS = {
    "mo-sft": fast_spec(),
    "sft-lora": fast_spec(data=ARITHMETIC, method="sft", adapter={"name": "lora", "r": 4}),
    "sft-kernels": fast_spec(
        data=ARITHMETIC,
        method="sft",
        kernels="torch",
        optimizer={"name": "sgd", "lr": 0.01},
        train={
            "steps": 10,
            "batch_size": 8,
            "eval_every": 5,
            "scheduler": "cosine",
            "warmup_steps": 3,
        },
    ),
}
BEFORE = {
    "mo-sft": {
        "objectives": {"correctness": 0.01818181818181818, "length": 0.75},
        "loss": [
            3.007672071456909,
            2.6077218055725098,
            2.3684659004211426,
            2.3231372833251953,
            2.3035690784454346,
            2.2213995456695557,
            2.1443512439727783,
            2.143064022064209,
            2.0926406383514404,
            2.091054677963257,
        ],
        "lr": [0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003],
    },
    "sft-lora": {
        "objectives": {"exact_match": 0.0},
        "loss": [
            3.0953853130340576,
            3.0370004177093506,
            2.938655376434326,
            2.8643689155578613,
            2.9508111476898193,
            2.8619656562805176,
            3.0388150215148926,
            3.1268186569213867,
            3.051677703857422,
            3.056619644165039,
        ],
        "lr": [0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003, 0.0003],
    },
    "sft-kernels": {
        "objectives": {"exact_match": 0.0},
        "loss": [
            3.0953853130340576,
            3.0380454063415527,
            2.9109838008880615,
            2.7859561443328857,
            2.787796974182129,
            2.676784038543701,
            2.8057479858398438,
            2.82373046875,
            2.6712534427642822,
            2.7241861820220947,
        ],
        "lr": [
            0.006666666666666666,
            0.01,
            0.01,
            0.009504844339512096,
            0.008117449009293669,
            0.006112604669781572,
            0.003887395330218428,
            0.0018825509907063327,
            0.0004951556604879049,
            0.0,
        ],
    },
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_trajectory_is_unchanged_by_the_port(name, store_uri):
    result = workbench.run(SPECS[name], log=lambda *a: None)
    client = tracking.connect()
    history = {
        key: [v for _, v in tracking.metric_history(client, result.run_id, key)]
        for key in ("train/loss", "train/lr")
    }
    assert history["train/loss"] == pytest.approx(BEFORE[name]["loss"], rel=1e-5)
    assert history["train/lr"] == pytest.approx(BEFORE[name]["lr"], rel=1e-9)
    assert result.objectives == pytest.approx(BEFORE[name]["objectives"], abs=1e-9)
