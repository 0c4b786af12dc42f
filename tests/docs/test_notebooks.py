"""The teaching notebooks run top to bottom (with smaller parameters injected)."""

from __future__ import annotations

import base64
import json
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.conftest import FAST_TINY, ROOT
from workbench.fronts import plots

NOTEBOOKS = ROOT / "notebooks"


def _inject(nb, **params) -> None:
    """Append overrides to the cell tagged "parameters" (what papermill does)."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(
        f"{k} = {v!r}" for k, v in params.items()
    )


def _execute(name: str, jupyter_home, **params) -> tuple[list, str]:
    """Run notebook ``name`` with ``params`` injected; returns its outputs and its printed text,
    after checking that no cell raised."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _inject(nb, **params)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(jupyter_home)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs, "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


@pytest.fixture
def jupyter_home(tmp_path, monkeypatch):
    # Jupyter and IPython write into $HOME: keep them in the test's folder.
    for var, sub in (
        ("HOME", "home"),
        ("JUPYTER_CONFIG_DIR", "jcfg"),
        ("JUPYTER_DATA_DIR", "jdata"),
        ("JUPYTER_RUNTIME_DIR", "jrun"),
        ("IPYTHONDIR", "ipy"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def test_first_weight_sweep_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "01_first_weight_sweep.ipynb", jupyter_home, points=2, steps=10, tiny=dict(FAST_TINY)
    )
    assert "hypervolume of the sweep" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2  # the front and the trajectories
    front = figures[0]["data"]["application/vnd.plotly.v1+json"]
    assert {plots.FRONT, plots.REFERENCE} <= {t.get("name") for t in front["data"]}
    json.dumps(front)  # a plain, serialisable figure


def test_fused_kernels_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "02_fused_kernels.ipynb",
        jupyter_home,
        n_rows=512,
        hidden_size=64,
        vocab=8000,
        steps=6,
        tiny=dict(FAST_TINY),
    )
    # The fused op agrees with the plain computation (float32 rounding only).
    for line in text.splitlines():
        if line.startswith("largest difference"):
            assert float(line.split(":")[-1]) < 1e-4, line
    assert "fused / plain peak memory" in text
    assert "ops that ran: none (kernels: off)" in text
    assert "ops that ran: rms_norm=torch,swiglu=torch,fused_linear_logprobs=torch" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2  # the memory bars and the loss curves
    curves = figures[1]["data"]["application/vnd.plotly.v1+json"]["data"]
    assert [t["name"] for t in curves] == ["kernels=off", "kernels=torch"]


def test_quickstart_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "00_quickstart.ipynb",
        jupyter_home,
        steps=8,
        correctness_weights=[0.9, 0.2],
        tiny=dict(FAST_TINY),
        poll_s=0.5,
        timeout_s=240,
    )
    assert "statuses: ['FINISHED', 'FINISHED']" in text
    assert "only length matters -> preferred run" in text
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 3  # the builder, the monitor, the explorer
    # What MLflow holds: the two runs, with the training weights the slider set.
    from workbench import tracking

    runs = tracking.runs_frame(tracking.connect(store_uri), "quickstart")
    weights = sorted(float(r["params"]["objectives.correctness.weight"]) for r in runs)
    assert weights == [0.2, 0.9]
    assert all({"correctness", "length"} <= set(r["objectives"]) for r in runs)


def test_pareto_fronts_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "03_pareto_fronts.ipynb", jupyter_home, points=3, steps=6, tiny=dict(FAST_TINY)
    )
    # The seen front: only its two ends are weighted-sum optima, Chebyshev reaches all nine.
    assert "weighted_sum: picks 2 of 9 front runs: [0, 8]" in text
    assert "chebyshev: picks 9 of 9 front runs" in text
    assert "hypervolume of the sweep" in text and "runs on the front; weighted sums pick" in text
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1  # the explorer


def test_preference_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "04_preference_optimisation.ipynb",
        jupyter_home,
        budget=8,
        dpo_steps=9,
        tiny=dict(FAST_TINY),
    )
    assert "IPO is lowest at h = 5.00 (1 / (2 beta) = 5.00)" in text
    for split in ("DPO only", "SFT only", "SFT then DPO"):
        assert f"{split:13} exact_match = " in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 3  # the loss curves, the live run, the budget split


def test_rl_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "05_rl_with_rewards.ipynb",
        jupyter_home,
        steps=4,
        prompts=4,
        group_size=4,
        tiny=dict(FAST_TINY),
    )
    assert "right            correct=1" in text and "advantage=" in text
    assert "sum_then_normalize  best completion: empty" in text
    assert "normalize_then_sum  best completion: right" in text
    assert "held-out exact match:" in text and "reward/total" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1  # the reward curves


def test_building_fronts_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "06_building_fronts.ipynb",
        jupyter_home,
        points=3,
        steps=4,
        conditioned_steps=8,
        tiny=dict(FAST_TINY),
    )
    for name in ("sweep", "conditioned", "merging"):
        assert f"{name:12} front of" in text
    assert "HV per 1k steps" in text and "the base model alone" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1  # the three fronts


def test_merging_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "07_merging.ipynb",
        jupyter_home,
        steps=6,
        coefficients=[0.0, 0.5, 1.0],
        tiny=dict(FAST_TINY),
    )
    assert "TIES (workbench): [0.85, 0.0, -1.5, -0.7, -0.5]" in text
    for method in ("linear", "ties"):
        assert f"{method:7} c=0.50" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1  # the two merge fronts


def test_real_model_notebook_runs(store_uri, jupyter_home, real_model_folder):
    # quick: 4 LoRA SFT steps per base on 8 held-out prompts, the fast tiny base against
    # SmolLM2 (converted once per session by the fixture).
    outputs, text = _execute("08_real_model.ipynb", jupyter_home, quick=True)
    assert "tiny     FINISHED in" in text and "SmolLM2  FINISHED in" in text
    assert "<|im_start|>user" in text  # SmolLM2 reads the question through its chat template
    rows = {}
    for line in text.splitlines():
        match = re.match(
            r"(tiny|SmolLM2) +exact_match (\S+) -> (\S+), final_number (\S+) -> (\S+), "
            r"held-out loss (\S+) -> (\S+), (\S+) steps/s, ([\d,]+) parameters trained",
            line,
        )
        if match:
            rows[match[1]] = [float(v.replace(",", "")) for v in match.groups()[1:]]
    assert set(rows) == {"tiny", "SmolLM2"}, text
    for label, (*rates, loss_before, loss_after, steps_per_s, trained) in rows.items():
        assert all(0 <= r <= 1 for r in rates), (label, rates)
        assert 0 < loss_after < loss_before, (label, loss_before, loss_after)
        assert steps_per_s > 0 and trained > 0
    # LoRA rank 16 on SmolLM2's seven projections in 30 layers.
    assert rows["SmolLM2"][-1] == 4_884_480
    assert rows["tiny"][-2] > rows["SmolLM2"][-2]  # the small base takes more steps per second
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1  # the two loss curves
    curves = figures[0]["data"]["application/vnd.plotly.v1+json"]["data"]
    assert [len(c["y"]) for c in curves] == [4, 4]
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "SmolLM2 before" in tables and "tiny after" in tables  # the completions table


def test_data_curation_notebook_runs(store_uri, jupyter_home):
    outputs, text = _execute(
        "10_data_curation.ipynb",
        jupyter_home,
        train_size=40,
        eval_size=8,
        steps=4,
        budgets=[0.3],
        selectors=["random", "confidence"],
        tiny=dict(FAST_TINY),
    )
    assert "corrupted 12 of 40 training rows (30%)" in text
    for name in ("random", "confidence"):
        match = re.search(rf"{name} +drops +12 rows: precision (\S+), recall (\S+) ", text)
        assert match, text
        # Dropping as many rows as were corrupted: each hit counts once in both shares.
        assert match[1] == match[2] and 0 <= float(match[1]) <= 1, match[0]
    # What MLflow holds: each selector's run at 30% trained on 12 rows, the one on all rows 40.
    from workbench import tracking

    runs = tracking.runs_frame(tracking.connect(store_uri), "notebook-data-curation")
    examples = {r["run_name"]: r["metrics"]["cost/train_examples"] for r in runs}
    assert examples == {"random 30%": 12, "confidence 30%": 12, "all rows 100%": 40}
    for r in runs:
        if r["run_name"] != "all rows 100%":
            assert 0 <= r["metrics"]["data/dropped_corrupted_precision"] <= 12 / 28 + 1e-9
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 3  # the scores, precision and recall, the fronts
    fronts = figures[2]["data"]["application/vnd.plotly.v1+json"]["data"]
    assert [t["name"].split(" (")[0] for t in fronts] == ["random", "confidence"]
    assert all(set(plotly_values(t["x"])) <= {12, 40} for t in fronts)


def plotly_values(array) -> list:
    """An array of a figure's JSON: a plain list, or plotly's typed-array encoding."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_parameter_efficient_notebook_runs(store_uri, jupyter_home):
    # quick: 4 steps of each of nine methods on 8 held-out prompts, on the fast test base.
    outputs, text = _execute("09_parameter_efficient.ipynb", jupyter_home, quick=True)
    trained = {
        m[1]: int(m[2].replace(",", ""))
        for m in re.finditer(
            r"^(\w+) +held-out NLL \S+ -> \S+, exact match \S+, +([\d,]+) trainable", text, re.M
        )
    }
    assert list(trained) == [
        "full", "lora", "dora", "ia3", "vera", "prompt_tuning", "lisa", "ssf", "mezo"
    ], text  # fmt: skip
    for name, count in _trainable_counts_by_hand().items():
        assert trained[name] == count, (name, trained[name], count)

    # Each printed front is the brute-force set of runs no other run dominates, from the store.
    from workbench import tracking

    runs = tracking.runs_frame(tracking.connect(store_uri), "notebook-peft")
    for cost in ("trainable_params", "step_s"):
        points = {r["run_name"]: (r["costs"][cost], r["objectives"]["heldout_nll"]) for r in runs}
        front = {
            name
            for name, p in points.items()
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())
        }
        printed = re.search(f"on the front of held-out NLL against cost:{cost}: (.*)", text)[1]
        assert set(printed.split(", ")) == front, (cost, printed, points)

    # The merged LoRA model reads the held-out prompts as the adapted one did; the merged SSF
    # model scores what the adapted one scored.
    gap = float(re.search(r"largest logit difference on 8 held-out prompts: (\S+)", text)[1])
    assert gap < 1e-4
    for name in ("heldout_nll", "exact_match"):
        adapted, merged = re.search(f"SSF: {name} +adapted (\\S+), merged (\\S+)", text).groups()
        assert abs(float(adapted) - float(merged)) < 1e-5, (name, adapted, merged)
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2  # the front against parameters and the one against time


def _trainable_counts_by_hand() -> dict[str, int]:
    """What full fine-tuning, LoRA, (IA)3, LISA (one of two layers) and SSF train on the fast
    base with the notebook's settings, counted by peft or from the model's shapes."""
    import copy

    import torch
    from peft import IA3Config, LoraConfig, get_peft_model

    from workbench.models.loading import load_base
    from workbench.spec.run_spec import ModelSpec

    base = load_base(ModelSpec(name="tiny-fast"), log=lambda *a: None).model
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=projections)
    ia3 = IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]
    )
    total = sum(p.numel() for p in base.parameters())
    layer = sum(p.numel() for p in base.model.layers[0].parameters())
    channels = sum(
        m.out_features
        for name, m in base.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in projections
    )
    return {
        "full": total,
        "mezo": total,
        "lora": get_peft_model(copy.deepcopy(base), lora).get_nb_trainable_parameters()[0],
        "ia3": get_peft_model(copy.deepcopy(base), ia3).get_nb_trainable_parameters()[0],
        "lisa": total - layer,
        "ssf": 2 * channels,  # a scale and a shift per output channel
    }
