"""The adapters written here (HFT, LISA, LIFT, sparse, SSF): a short run on the fast tiny base
changes only the parameters each one says it trains (HFT and LISA: the set switches at the
steps their schedule says), and lowers the held-out loss. SSF's merge gives the adapted
model's logits, and the merged model reloads as a plain model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import fast_spec, own_store
from workbench.models.adapters.applying import merge_adapter
from workbench.models.loading import load_base, load_pretrained
from workbench.running.events import RunObserver
from workbench.running.pipeline import RunPipeline
from workbench.spec.run_spec import RunSpec


class WeightWatch(RunObserver):
    """After each optimizer step: which parameters were set to train, and which changed."""

    def __init__(self, pipeline: RunPipeline):
        self.pipeline = pipeline
        self.trainable: dict[int, frozenset[str]] = {}
        self.changed: dict[int, frozenset[str]] = {}
        self._last: dict[str, torch.Tensor] | None = None

    def _state(self) -> dict[str, torch.Tensor]:
        model = self.pipeline.prepared.model
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    def on_start(self, context) -> None:
        self._last = self._state()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        model = self.pipeline.prepared.model
        now = self._state()
        self.trainable[step] = frozenset(n for n, p in model.named_parameters() if p.requires_grad)
        self.changed[step] = frozenset(n for n in now if not torch.equal(now[n], self._last[n]))
        self._last = now


def train(adapter: dict, steps: int, lr: float, **optimizer) -> tuple[RunPipeline, WeightWatch]:
    spec = fast_spec(
        adapter=adapter,
        optimizer={"name": "adamw", "lr": lr, **optimizer},
        train={"steps": steps, "batch_size": 8, "eval_every": steps, "log_every": 1},
        objectives=[
            {
                "name": "eval_loss",
                "direction": "min",
                "source": "metric:eval_loss",
                "term": "completion",
            }
        ],
        eval={"max_new_tokens": 2, "samples_logged": 0},
        tracking={"experiment": "adapters", "log_model": False},
    )
    pipeline = RunPipeline(spec, log=lambda *a: None)
    watch = WeightWatch(pipeline)
    pipeline.user_observers.append(watch)
    result = pipeline.execute()
    assert result.status == "FINISHED"
    return pipeline, watch


def heldout_losses(pipeline: RunPipeline) -> tuple[float, float]:
    (_, first), *_, (_, last) = pipeline.trajectory
    return first["eval_loss"], last["eval_loss"]


def base_weights(pipeline: RunPipeline) -> dict[str, torch.Tensor]:
    base = load_base(pipeline.spec.model, log=lambda *a: None).model
    return {name: p.detach() for name, p in base.named_parameters()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with own_store(tmp_path_factory, "adapter-runs"):
        yield {
            "hft": train({"name": "hft", "stage_steps": 4, "seed": 0}, steps=12, lr=3e-3),
            "lisa": train({"name": "lisa", "layers": 1, "every": 3, "seed": 0}, steps=9, lr=3e-3),
            "lift": train({"name": "lift", "rank": 4, "density": 0.1}, steps=10, lr=1e-2),
            "sparse": train(
                {"name": "sparse", "density": 0.1, "select": "magnitude"}, steps=10, lr=1e-2
            ),
            "ssf": train({"name": "ssf"}, steps=20, lr=1e-2),
        }


@pytest.mark.parametrize("adapter", ["hft", "lisa", "lift", "sparse", "ssf"])
def test_a_short_run_lowers_the_held_out_loss(runs, adapter):
    before, after = heldout_losses(runs[adapter][0])
    assert after < before - 0.01, (adapter, before, after)


def block_of(name: str) -> str:
    """The part of the model HFT halves: the module above the parameter's own module."""
    owner = name.rsplit(".", 1)[0]
    return owner.rsplit(".", 1)[0] if "." in owner else ""


def test_hft_trains_half_of_each_block_per_stage_and_draws_a_new_half_each_stage(runs):
    pipeline, watch = runs["hft"]
    everything = {name for name, _ in pipeline.prepared.model.named_parameters()}
    blocks: dict[str, set[str]] = {}
    for name in everything:
        blocks.setdefault(block_of(name), set()).add(name)
    stage_sets = {}
    for step in sorted(watch.trainable):  # step n trained at optimizer step n - 1
        stage = (step - 1) // 4
        trained = watch.trainable[step]
        # What moved is what was set to train, and nothing else.
        assert watch.changed[step] == trained, step
        for block, names in blocks.items():
            assert len(trained & names) in {len(names) // 2, (len(names) + 1) // 2}, block
        assert stage_sets.setdefault(stage, trained) == trained, f"the set changed inside {stage}"
    assert sorted(stage_sets) == [0, 1, 2]
    assert stage_sets[0] != stage_sets[1] or stage_sets[1] != stage_sets[2]
    # Over the stages more than half of the model moved: halves are redrawn, not fixed.
    assert len(set().union(*stage_sets.values())) > len(everything) // 2


def test_lisa_always_trains_embeddings_and_head_and_one_sampled_layer_per_period(runs):
    pipeline, watch = runs["lisa"]
    names = [name for name, _ in pipeline.prepared.model.named_parameters()]
    layers = {i: {n for n in names if n.startswith(f"model.layers.{i}.")} for i in (0, 1)}
    outside = set(names) - layers[0] - layers[1]
    assert "model.embed_tokens.weight" in outside  # tied with the head in the tiny base
    chosen_by_period: dict[int, int] = {}
    for step in sorted(watch.changed):
        changed = watch.changed[step]
        assert outside <= changed, step
        moved = [i for i in (0, 1) if changed & layers[i]]
        assert len(moved) == 1, (step, moved)
        (layer,) = moved
        assert layers[layer] <= changed  # the whole layer trains
        period = (step - 1) // 3
        assert chosen_by_period.setdefault(period, layer) == layer, f"switched inside {period}"
    assert sorted(chosen_by_period) == [0, 1, 2]
    assert len(set(chosen_by_period.values())) == 2, "every period drew the same layer"


def top_entries(scores: np.ndarray, density: float) -> set[int]:
    count = int(np.ceil(density * scores.size))
    return set(np.argsort(-scores.ravel(), kind="stable")[:count].tolist())


def moved_entries(pipeline, base) -> dict[str, set[int]]:
    moved = {}
    for name, p in pipeline.prepared.model.named_parameters():
        diff = (p.detach() != base[name]).numpy().ravel()
        if diff.any():
            moved[name] = set(np.flatnonzero(diff).tolist())
    return moved


def test_lift_trains_only_the_top_entries_of_each_weight_s_low_rank_approximation(runs):
    pipeline, _ = runs["lift"]
    base = base_weights(pipeline)
    moved = moved_entries(pipeline, base)
    projections = [n for n in base if n.endswith("_proj.weight")]
    assert set(moved) == set(projections)
    for name in projections:
        w = base[name].double().numpy()
        u, s, vh = np.linalg.svd(w, full_matrices=False)
        principal = top_entries(np.abs((u[:, :4] * s[:4]) @ vh[:4]), 0.1)
        assert moved[name] <= principal, name
        assert len(moved[name]) > 0.9 * len(principal), name


def test_sparse_trains_a_fixed_density_of_the_largest_entries(runs):
    pipeline, _ = runs["sparse"]
    base = base_weights(pipeline)
    moved = moved_entries(pipeline, base)
    projections = [n for n in base if n.endswith("_proj.weight")]
    assert set(moved) == set(projections)
    counted = 0
    for name in projections:
        largest = top_entries(np.abs(base[name].double().numpy()), 0.1)
        assert moved[name] <= largest, name
        counted += len(largest)
    # The trainable-parameter cost counts the masks' entries, not whole matrices.
    from workbench.models.adapters.applying import trainable_parameters

    assert trainable_parameters(pipeline.prepared.model) == counted


def test_a_random_sparse_mask_follows_its_seed(tmp_path):
    from workbench.models.adapters.applying import apply_adapter, trainable_parameters

    spec = RunSpec.parse(fast_spec(adapter={"name": "sparse", "density": 0.05, "seed": 3}))

    def masks(seed: int) -> dict[str, torch.Tensor]:
        model = load_base(spec.model, log=lambda *a: None).model
        adapter = spec.adapter.model_copy(update={"seed": seed})
        apply_adapter(model, adapter)
        chosen = {n: p.trainable_mask for n, p in model.named_parameters() if p.requires_grad}
        assert trainable_parameters(model) == sum(int(m.sum()) for m in chosen.values())
        return chosen

    first, again, other = masks(3), masks(3), masks(4)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_ssf_trains_only_its_scales_and_shifts_and_merges_into_the_same_logits(runs, tmp_path):
    pipeline, watch = runs["ssf"]
    model = pipeline.prepared.model
    moved = set().union(*watch.changed.values())
    assert moved and all(n.endswith(("ssf_scale", "ssf_shift")) for n in moved)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == moved
    ids = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 50, 51, 52, 53, 54]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged_model = merge_adapter(model, pipeline.spec.adapter)
        merged = merged_model(input_ids=ids).logits
    assert not any("ssf" in n for n, _ in merged_model.named_parameters())
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
    # The merged model is the base's own class: it saves and reloads as a plain model.
    merged_model.save_pretrained(tmp_path / "merged", safe_serialization=True)
    pipeline.prepared.base.tokenizer.save_pretrained(tmp_path / "merged")
    reloaded, _ = load_pretrained(str(tmp_path / "merged"))
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)
