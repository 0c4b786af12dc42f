"""``train.padding_free``: the rows of a micro-batch packed end to end give the padded batch's
losses and gradients, in float64, for every method family that trains on sequences (SFT,
MO-SFT, DPO with its reference, GRPO's training forward with a frozen reference copy), through
the model's logits and through the fused head; the packing itself against a brute-force
reading of the rows; transformers' attention families keep packed rows apart; and a whole
run trains with it."""

from __future__ import annotations

import copy

import pytest
import torch

import workbench
from tests.conftest import fast_spec, own_store
from tests.kernels.test_model_families import FAMILY_MODELS
from tests.kernels.test_model_families import build as build_family
from workbench.data.encode import IGNORE_INDEX
from workbench.data.packing import first_fit, pack_batch
from workbench.data.sources import load_rows
from workbench.methods.reference import build_reference
from workbench.models import packed_attention
from workbench.models.adapters.applying import apply_adapter
from workbench.models.kernel_patch import patch_model
from workbench.models.loading import load_base
from workbench.running.events import RunObserver
from workbench.spec import registry
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec

TERMS = [
    {"name": "correctness", "direction": "max", "source": "metric:prefix_accuracy",
     "term": "answer", "weight": 0.5},
    {"name": "claims", "direction": "max", "source": "metric:explanation_f1",
     "term": "explanation", "weight": 0.3},
    {"name": "length", "direction": "min", "source": "metric:length_items",
     "term": "brevity", "weight": 0.2},
]  # fmt: skip
CORRECT = {"name": "correct", "direction": "max", "source": "reward:correct", "weight": 1.0}
SPECS = {
    "sft": fast_spec(method="sft"),
    "mo-sft": fast_spec(method="mo-sft", objectives=TERMS),
    "dpo": fast_spec(method={"name": "dpo", "beta": 0.1}, adapter={"name": "lora", "r": 4}),
    # beta > 0 on a full fine-tune: the KL's reference is a frozen copy of the base.
    "grpo": fast_spec(
        method={"name": "grpo", "group_size": 2, "beta": 0.05, "max_completion_length": 6},
        data="arithmetic",
        objectives=[CORRECT],
    ),
}


@pytest.fixture(scope="module")
def base():
    return load_base(RunSpec.parse(fast_spec()).model, log=lambda *a: None)


# The fused norms and MLPs accumulate in float32 by design; the fused head is what reads the
# packed layout, so the float64 comparison patches the head alone.
IN_FLOAT32 = {"rms_norm": "accumulates in float32", "swiglu": "accumulates in float32"}


def build_module(spec_dict: dict, base, padding_free: bool, fused_head: bool = False):
    """The method's module on a float64 copy of ``base``, as a run builds it (reference from
    the base before the adapter, then the adapter, then the fused head if asked)."""
    spec_dict = {**spec_dict, "train": {**spec_dict["train"], "padding_free": padding_free}}
    spec = RunSpec.parse(spec_dict)
    torch.manual_seed(0)  # the adapter's initialisation
    model = copy.deepcopy(base.model).double()
    reference = build_reference(spec, model)
    trained = apply_adapter(model, spec.adapter)
    usage = None
    if fused_head:
        usage = patch_model(trained, "torch", on_gpu=False, adapter=spec.adapter,
                            leave_out=IN_FLOAT32)  # fmt: skip
    info = registry.METHODS[spec.method.name]
    row_kind = registry.ROW_KINDS[info.row_kind]
    train_rows, eval_rows = load_rows(spec.data, spec.train.seed, row_kind=row_kind.name)
    encode = registry.resolve(row_kind.encode)
    encoded, _ = encode(base.tokenizer, train_rows[:12], spec.train.max_length)
    module = registry.load_module_class(spec.method.name)(
        spec, trained, base.tokenizer, encoded, usage, reference=reference,
        rows={"train": train_rows, "eval": eval_rows},
    )  # fmt: skip
    reference.prepare(module, {"train": encoded, "eval": []}, batch_size=4)
    return module


def losses_and_gradients(module, items):
    """The micro-batch's per-example losses and terms, every trained parameter's gradient, and
    the layouts the model's passes ran on (the policy's and the reference's)."""
    layouts, lay_out = [], module.rows_layout
    module.rows_layout = lambda batch: layouts.append(lay_out(batch)) or layouts[-1]
    per_example, terms = module.compute_losses(module.collate(items))
    per_example.mean().backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad}
    return per_example.detach(), {k: v.detach() for k, v in terms.items()}, grads, layouts


@pytest.mark.parametrize(
    ("method", "fused_head", "budget"),
    [
        ("sft", False, 64),
        # One sequence for the whole batch: every row beside every other.
        ("sft", True, 10_000),
        # The default: sequences no wider than the batch's longest row.
        ("mo-sft", True, None),
        ("dpo", False, 64),
        ("grpo", True, 32),
    ],
)
def test_packed_rows_give_the_padded_batchs_losses_and_gradients(base, method, fused_head, budget):
    """Equal to 1e-10 in float64: no attention across rows, each row at its own positions,
    and the losses read every row's tokens back (a pair's chosen and rejected, GRPO's
    completions and its reference's log-probs, MO-SFT's segments and end-token log-probs)."""
    budgeted = {**SPECS[method]["train"], "padding_free_tokens": budget}
    spec = {**SPECS[method], "train": budgeted}
    padded = build_module(SPECS[method], base, padding_free=False, fused_head=fused_head)
    packed = build_module(spec, base, padding_free=True, fused_head=fused_head)
    items = list(enumerate(padded.encoded))[:8]
    want_loss, want_terms, want_grads, padded_layouts = losses_and_gradients(padded, items)
    got_loss, got_terms, got_grads, layouts = losses_and_gradients(packed, items)
    torch.testing.assert_close(got_loss, want_loss, rtol=0, atol=1e-10)
    assert got_terms.keys() == want_terms.keys()
    for name in want_terms:
        torch.testing.assert_close(got_terms[name], want_terms[name], rtol=0, atol=1e-10)
    assert got_grads.keys() == want_grads.keys()
    for name, want in want_grads.items():
        torch.testing.assert_close(got_grads[name], want, rtol=0, atol=1e-10,
                                   msg=lambda m, name=name: f"{name}: {m}")  # fmt: skip
    assert any(g.abs().sum() > 0 for g in want_grads.values())
    # The padded batches had padding, and every pass (the reference's too) ran packed.
    assert all((layout.attention_mask == 0).any() for layout in padded_layouts)
    expected_passes = 2 if method == "grpo" else 1  # GRPO's KL reads the frozen copy's
    assert len(layouts) == len(padded_layouts) == expected_passes
    for layout, padded_layout in zip(layouts, padded_layouts):
        sequences, width = layout.input_ids.shape
        if budget is None:
            assert width <= padded_layout.input_ids.shape[1]
        else:
            assert width <= budget and sequences < padded_layout.input_ids.shape[0]
        if budget == 10_000:
            assert sequences == 1


# -- the packing itself ------------------------------------------------------------------------


def test_packing_lays_each_row_out_at_its_own_positions_and_reads_it_back():
    """Against a brute-force reading of every row: its tokens and its labels (the first one
    ignored) where the packing put it, positions 0.. from its first token, sequences within
    the budget, and ``unpack`` returning each shifted position's value to its row."""
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 1, 12, 3, 9, 5, 12, 2]
    ids = torch.randint(5, 100, (len(lengths), 12), generator=gen)
    mask = (torch.arange(12) < torch.tensor(lengths).unsqueeze(1)).long()
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.7, ids, IGNORE_INDEX)
    labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
    packed = pack_batch(ids, mask, labels, pad_id=0, max_tokens=14)
    assert first_fit(lengths, 14) == [[2, 7], [6, 1], [4, 5], [0, 3]]
    assert packed.input_ids.shape == (4, 14) and packed.tokens == sum(lengths)
    assert packed.pad_fraction == pytest.approx(1 - 51 / 56)
    shifted = torch.arange(4 * 13, dtype=torch.float64).reshape(4, 13)  # values that say where
    unpacked = packed.unpack(shifted)
    for j, rows in enumerate(first_fit(lengths, 14)):
        offset = 0
        for i in rows:
            n = lengths[i]
            assert packed.input_ids[j, offset : offset + n].tolist() == ids[i, :n].tolist()
            assert packed.position_ids[j, offset : offset + n].tolist() == list(range(n))
            assert packed.labels[j, offset].item() == IGNORE_INDEX
            assert packed.labels[j, offset + 1 : offset + n].tolist() == labels[i, 1:n].tolist()
            assert unpacked[i, : n - 1].tolist() == shifted[j, offset : offset + n - 1].tolist()
            assert (unpacked[i, n - 1 :] == 0).all()
            offset += n
        assert (packed.labels[j, offset:] == IGNORE_INDEX).all()
        assert (packed.input_ids[j, offset:] == 0).all()
    # A row longer than the budget takes a sequence of its own; None puts all in one.
    assert first_fit([3, 20, 4], 10) == [[1], [2, 0]]
    assert first_fit([3, 20, 4], None) == [[1, 2, 0]]
    with pytest.raises(ValueError, match="right-padded"):
        pack_batch(ids, mask.flip(1), labels, pad_id=0)


@pytest.mark.parametrize("family", list(FAMILY_MODELS))
def test_each_models_attention_keeps_packed_rows_apart(family):
    """Every family the fused kernels cover: each row of packed sequences gets the logits it
    gets alone in a padded batch (Gemma's sliding windows counted from the row's own start)."""
    model = build_family(family)
    gen = torch.Generator().manual_seed(1)
    lengths = [9, 4, 12, 6, 3]
    ids = torch.randint(0, 384, (len(lengths), 12), generator=gen)
    mask = (torch.arange(12) < torch.tensor(lengths).unsqueeze(1)).long()
    assert packed_attention.packing_problem(model) is None
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        packed = pack_batch(ids, mask, ids, pad_id=0, max_tokens=16)
        assert packed.input_ids.shape[0] < len(lengths)
        logits = model(**packed.model_inputs()).logits
    for i, n in enumerate(lengths):
        j, at = divmod(int(packed.source[i, 0]), packed.input_ids.shape[1] - 1)
        torch.testing.assert_close(logits[j, at : at + n], padded[i, :n], rtol=1e-5, atol=1e-5)


def test_an_attention_that_ignores_row_boundaries_is_refused(base):
    """A model whose attention reads no row boundaries off position ids would attend across
    packed rows: the module refuses padding_free before training, naming the field."""
    paged = copy.deepcopy(base.model)
    paged.config._attn_implementation = "paged|eager"
    assert "paged|eager" in packed_attention.packing_problem(paged)
    spec = RunSpec.parse(fast_spec(train={"padding_free": True}))
    module_class = registry.load_module_class("sft")
    with pytest.raises(SpecError) as err:
        module_class(spec, paged, base.tokenizer, [])
    assert "train.padding_free = True" in str(err.value) and "paged|eager" in str(err.value)
    assert "set train.padding_free: false" in str(err.value)
    with pytest.raises(SpecError, match="padding_free_tokens = 64"):
        RunSpec.parse(fast_spec(train={"padding_free_tokens": 64}))


# -- a whole run -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_padding_free_run_trains_as_the_padded_run(tmp_path_factory):
    """LoRA SFT through the fused head, end to end: the same losses and held-out loss with
    padding_free as without, up to float32 rounding."""
    heldout = {"name": "heldout_nll", "direction": "min", "source": "term:completion"}
    spec = fast_spec(
        method="sft", adapter={"name": "lora", "r": 4}, optimizer={"lr": 1e-2},
        kernels="torch", objectives=[heldout],
        data={"source": "reverse", "train_size": 32, "eval_size": 8},
        train={"steps": 3, "batch_size": 8, "eval_every": 3},
        tracking={"experiment": "padding-free", "log_model": False},
    )  # fmt: skip
    packed_spec = {**spec, "train": {**spec["train"], "padding_free": True,
                                     "padding_free_tokens": 64}}  # fmt: skip
    losses = {}
    with own_store(tmp_path_factory, "padding-free"):
        for name, run_spec in (("padded", spec), ("packed", packed_spec)):
            steps: dict[int, float] = {}

            class Losses(RunObserver):
                def on_step(self, step, metrics, steps=steps):
                    steps[step] = metrics["train/loss"]

            result = workbench.run(run_spec, log=lambda *a: None, observers=[Losses()])
            assert result.status == "FINISHED"
            losses[name] = ([steps[s] for s in sorted(steps)], result.objectives["heldout_nll"])
    torch.testing.assert_close(losses["packed"][0], losses["padded"][0], rtol=1e-5, atol=1e-6)
    assert losses["packed"][1] == pytest.approx(losses["padded"][1], rel=1e-5)
    assert len(losses["packed"][0]) == 3
