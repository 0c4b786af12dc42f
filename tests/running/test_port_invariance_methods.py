"""Preference, RL-with-rewards and multi-objective trajectories pinned for a layout change.

The numbers below were produced by the code before the package was arranged into a folder
per layer and per method family (same fast tiny base, seed, data and steps). The rearranged
code must reproduce them to float tolerance: the same loss, learning rate and method metrics
(preference log-probs, rewards and margins; sampled rewards, ratios and KL; term losses and
MGDA coefficients) at every step, and the same final objectives. A change that alters them on
purpose must say so and update them.

Only the stable public names are used (``workbench.run``, ``tests.conftest.fast_spec`` and
MLflow's own client), so the test reads the same before and after the move. Each run was
bitwise identical across repeated runs and between 1 and 2 threads, the tiny base rebuilt
each time. Across CPU kinds they are not: torch's kernels round differently (the tiny base
itself differs by CPU kind, docs/running.md). Pinned on an Intel Xeon and rerun on an AMD EPYC,
the values differed by at most 1.6e-5 relative (the log-probs, about -78, by 1.2e-3) and 6.2e-5
absolute on what is a difference of such values (``pref/chosen_rewards``, ``pref/margin``, the
MGDA coefficients), so the tolerance is 1e-4 relative or 5e-4 absolute: about ten times that
rounding, and far below what a changed loss, encoding or data order moves.
"""

from __future__ import annotations

import mlflow
import pytest

import workbench
from tests.conftest import fast_spec

pytestmark = pytest.mark.slow

SHORT = {"steps": 8, "batch_size": 8, "eval_every": 8}
SORT = {"source": "sort", "train_size": 64, "eval_size": 8}
REVERSE = {"source": "reverse", "train_size": 64, "eval_size": 8}
ORDER = {"source": "order", "train_size": 64, "eval_size": 8}
ADAMW = {"name": "adamw", "lr": 3e-3}
PAIRS = [
    {"name": "accuracy", "direction": "max", "source": "term:reward_accuracy", "reference": 0},
    {"name": "margin", "direction": "max", "source": "term:reward_margin", "reference": 0},
]
REWARDS = [
    {"name": "correct", "direction": "max", "source": "reward:correct", "weight": 0.5},
    {"name": "brevity", "direction": "max", "source": "reward:brevity", "weight": 0.5},
]
TERMS = [
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
]
SAMPLED = {
    "train": {"steps": 8, "batch_size": 4, "eval_every": 8},
    "eval": {"max_new_tokens": 8, "samples_logged": 2},
}

SPECS = {
    "dpo": fast_spec(
        method={"name": "dpo", "beta": 0.1},
        data=SORT,
        objectives=PAIRS,
        optimizer=ADAMW,
        train={**SHORT, "scheduler": "cosine", "warmup_steps": 2},
    ),
    "kto": fast_spec(method="kto", data=SORT, objectives=PAIRS[:1], optimizer=ADAMW, train=SHORT),
    "grpo": fast_spec(
        method={
            "name": "grpo",
            "group_size": 4,
            "max_completion_length": 8,
            "num_iterations": 2,
            "beta": 0.05,
        },
        data=REVERSE,
        adapter={"name": "lora", "r": 4},
        objectives=REWARDS,
        optimizer=ADAMW,
        **SAMPLED,
    ),
    "raft": fast_spec(
        method={"name": "raft", "group_size": 4, "max_completion_length": 8},
        data=REVERSE,
        objectives=REWARDS,
        optimizer=ADAMW,
        **SAMPLED,
    ),
    "mgda-sft": fast_spec(
        method="mgda-sft", data=ORDER, objectives=TERMS, optimizer=ADAMW, train=SHORT
    ),
    "conditioned-sft": fast_spec(
        method="conditioned-sft", data=ORDER, objectives=TERMS, optimizer=ADAMW, train=SHORT
    ),
}

BEFORE = {
    "conditioned-sft": {
        "objectives": {"correctness": 0.09172979797979797, "length": 2.5},
        "train/loss": [
            3.0647311210632324,
            2.545827627182007,
            1.9535826444625854,
            2.1077873706817627,
            1.894883155822754,
            1.8740086555480957,
            1.854247808456421,
            1.2778668403625488,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
        ],
        "train/answer": [
            2.6170220375061035,
            2.692317008972168,
            2.910463809967041,
            3.088799238204956,
            2.785362720489502,
            2.552034378051758,
            2.5554308891296387,
            2.494961977005005,
        ],
        "train/brevity": [
            3.907057523727417,
            2.414177179336548,
            1.3248291015625,
            0.9896945953369141,
            0.962826669216156,
            1.1157718896865845,
            0.9166783690452576,
            0.9204429984092712,
        ],
    },
    "dpo": {
        "objectives": {"accuracy": 0.25, "margin": 0.022608475759625435},
        "train/loss": [
            0.6931471824645996,
            0.6742020845413208,
            0.7562257051467896,
            0.6770141124725342,
            0.6958343982696533,
            0.6870497465133667,
            0.6255796551704407,
            0.6772552728652954,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.002799038105676658,
            0.0022500000000000003,
            0.0015,
            0.0007500000000000003,
            0.00020096189432334193,
            0.0,
        ],
        "pref/margin": [
            0.0,
            0.04718265309929848,
            -0.11560032516717911,
            0.03664239123463631,
            0.0031806379556655884,
            0.012379550375044346,
            0.14971166849136353,
            0.04409003257751465,
        ],
        "pref/accuracy": [
            0.0,
            0.375,
            0.125,
            0.625,
            0.5,
            0.625,
            0.875,
            0.375,
        ],
        "pref/chosen_logps": [
            -30.591224670410156,
            -32.74740219116211,
            -44.58707046508789,
            -35.34125900268555,
            -34.43743133544922,
            -30.536235809326172,
            -36.539894104003906,
            -30.83536148071289,
        ],
        "pref/rejected_logps": [
            -29.042457580566406,
            -31.46466827392578,
            -41.11216354370117,
            -34.17158508300781,
            -32.18135070800781,
            -26.280488967895508,
            -38.35374450683594,
            -31.02021026611328,
        ],
        "pref/chosen_rewards": [
            0.0,
            -0.2727561593055725,
            -1.5053929090499878,
            -0.8615090847015381,
            -0.45749348402023315,
            -0.17974944412708282,
            -0.21534855663776398,
            -0.2904777526855469,
        ],
        "pref/rejected_rewards": [
            0.0,
            -0.3199388086795807,
            -1.3897924423217773,
            -0.8981515169143677,
            -0.46067413687705994,
            -0.1921290010213852,
            -0.3650602102279663,
            -0.3345677852630615,
        ],
    },
    "grpo": {
        "objectives": {"correct": 0.0, "brevity": 1.0},
        "train/loss": [
            0.0,
            -0.012398362159729004,
            0.00403238832950592,
            -0.024449076503515244,
            0.010106340050697327,
            -0.014213815331459045,
            0.03138598054647446,
            -0.013530761003494263,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
        ],
        "reward/total": [
            0.353515625,
            0.353515625,
            0.416015625,
            0.416015625,
            0.40234375,
            0.40234375,
            0.423828125,
            0.423828125,
        ],
        "reward/brevity/mean": [
            0.70703125,
            0.70703125,
            0.83203125,
            0.83203125,
            0.8046875,
            0.8046875,
            0.84765625,
            0.84765625,
        ],
        "reward/brevity/std": [
            0.1338995099067688,
            0.1338995099067688,
            0.10297989100217819,
            0.10297989100217819,
            0.1247556209564209,
            0.1247556209564209,
            0.14652343094348907,
            0.14652343094348907,
        ],
        "reward/correct/mean": [
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
        "grpo/kl": [
            0.0,
            0.05506746470928192,
            0.05627163499593735,
            0.1135048121213913,
            0.1272607445716858,
            0.21782530844211578,
            0.3714139759540558,
            0.48414355516433716,
        ],
        "grpo/ratio": [
            1.0,
            0.9920077323913574,
            1.0,
            1.0096722841262817,
            1.0,
            0.9833167195320129,
            1.0,
            1.0043447017669678,
        ],
        "grpo/clip_ratio": [
            0.0,
            0.37142857909202576,
            0.0,
            0.11267605423927307,
            0.0,
            0.17105263471603394,
            0.0,
            0.0833333358168602,
        ],
        "grpo/completion_length": [
            6.5625,
            6.5625,
            4.4375,
            4.4375,
            4.75,
            4.75,
            3.75,
            3.75,
        ],
    },
    "kto": {
        "objectives": {"accuracy": 0.5},
        "train/loss": [
            0.5,
            0.5197279453277588,
            0.6253578662872314,
            0.5402143001556396,
            0.2882266044616699,
            0.6243919134140015,
            0.3743788003921509,
            0.626900851726532,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
        ],
        "pref/accuracy": [
            0.5,
            0.5,
            0.375,
            0.5,
            0.75,
            0.375,
            0.625,
            0.375,
        ],
        "pref/chosen_logps": [
            -28.64687728881836,
            -43.601688385009766,
            -70.76212310791016,
            -59.12017822265625,
            -78.69977569580078,
            -94.15480041503906,
            -84.0503158569336,
            -99.10071563720703,
        ],
        "pref/rejected_logps": [
            -27.683359146118164,
            -39.86705017089844,
            -59.01429748535156,
            -42.01433563232422,
            -54.58399963378906,
            -93.7188720703125,
            -106.00557708740234,
            -76.758544921875,
        ],
        "pref/logps": [
            -28.165119171142578,
            -41.73436737060547,
            -66.356689453125,
            -50.567256927490234,
            -60.61294174194336,
            -93.9913330078125,
            -97.7723617553711,
            -90.72239685058594,
        ],
        "pref/chosen_rewards": [
            0.0,
            -1.4274258613586426,
            -3.826223373413086,
            -3.1732230186462402,
            -4.438319206237793,
            -6.181253433227539,
            -5.745595455169678,
            -7.007116794586182,
        ],
        "pref/rejected_rewards": [
            0.0,
            -1.2103749513626099,
            -3.2791664600372314,
            -1.998943567276001,
            -3.0686426162719727,
            -5.937042236328125,
            -7.307792663574219,
            -5.456829071044922,
        ],
        "pref/kl": [
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
    },
    "mgda-sft": {
        "objectives": {"correctness": 0.020833333333333332, "length": 8.125},
        "train/loss": [
            2.057509422302246,
            3.5152692794799805,
            2.5105481147766113,
            2.32271146774292,
            2.3515918254852295,
            2.154048442840576,
            2.075617551803589,
            2.0250887870788574,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
        ],
        "train/answer": [
            2.057509422302246,
            3.522108316421509,
            3.162114143371582,
            2.5425844192504883,
            2.350377321243286,
            2.154048442840576,
            2.035886764526367,
            1.9539778232574463,
        ],
        "train/brevity": [
            4.260022163391113,
            3.258678913116455,
            1.3973687887191772,
            1.670285940170288,
            2.4023993015289307,
            3.025177240371704,
            2.6823744773864746,
            2.52425479888916,
        ],
        "mgda/coefficient/answer": [
            1.0,
            0.9740374088287354,
            0.6307876110076904,
            0.7479384541511536,
            0.9766537547111511,
            1.0,
            0.9385433197021484,
            0.8753045797348022,
        ],
        "mgda/coefficient/brevity": [
            0.0,
            0.02596260979771614,
            0.3692123591899872,
            0.2520615756511688,
            0.02334626205265522,
            0.0,
            0.061456672847270966,
            0.12469539046287537,
        ],
        "mgda/direction_norm": [
            1.9713828656599806,
            33.882646184383304,
            3.2827336931431494,
            1.8498912849328155,
            2.1140210102272254,
            1.6305048412569065,
            1.238522807408398,
            1.8816670124761377,
        ],
    },
    "raft": {
        "objectives": {"correct": 0.0, "brevity": 1.0},
        "train/loss": [
            4.3496198654174805,
            1.632110357284546,
            1.769884705543518,
            0.7080478072166443,
            0.543411374092102,
            0.4119044840335846,
            0.31306082010269165,
            0.23308423161506653,
        ],
        "train/lr": [
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
            0.003,
        ],
        "reward/total": [
            0.353515625,
            0.46875,
            0.4609375,
            0.478515625,
            0.494140625,
            0.48828125,
            0.494140625,
            0.490234375,
        ],
        "reward/brevity/mean": [
            0.70703125,
            0.9375,
            0.921875,
            0.95703125,
            0.98828125,
            0.9765625,
            0.98828125,
            0.98046875,
        ],
        "reward/correct/mean": [
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
        "raft/kept": [
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
        ],
        "raft/kept_total": [
            0.421875,
            0.4921875,
            0.4921875,
            0.5,
            0.5,
            0.5,
            0.5,
            0.5,
        ],
        "raft/completion_length": [
            6.5625,
            2.25,
            2.625,
            2.0625,
            1.25,
            1.4375,
            1.1875,
            1.3125,
        ],
    },
}


def _history(client: mlflow.tracking.MlflowClient, run_id: str, key: str) -> list[float]:
    """The values of ``key`` by step (a point the store took twice, on a retried batch, once)."""
    points = {(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)}
    return [value for _, _, value in sorted(points)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_method_trajectory_is_unchanged_by_the_layout(name, store_uri):
    result = workbench.run(SPECS[name], log=lambda *a: None)
    client = mlflow.tracking.MlflowClient(store_uri)
    expected = BEFORE[name]
    for key, values in expected.items():
        if key == "objectives":
            continue
        if key == "train/lr":
            close = pytest.approx(values, rel=1e-9)
        else:
            close = pytest.approx(values, rel=1e-4, abs=5e-4)
        assert _history(client, result.run_id, key) == close, key
    assert result.objectives == pytest.approx(expected["objectives"], rel=1e-4, abs=5e-4)
