"""The preference methods against TRL's trainers on the same tiny model and rows.

Each test builds TRL's trainer, takes one full batch from TRL's own data collator, and gives
the same token sequences to our method's module (labels are TRL's completion tokens), so
the comparison is of the losses and gradients, not of two tokenisers. The policy is the
tiny base with seeded noise added (so it differs from the reference and the losses are
not at their starting values). Where the paper and TRL differ (IPO's length normalisation,
ORPO's NLL over the prompt), the test says which form it compares.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tests.conftest import fast_spec
from workbench.data.encode import IGNORE_INDEX
from workbench.methods.reference import FrozenCopy
from workbench.spec import registry
from workbench.spec.run_spec import RunSpec

pytestmark = pytest.mark.slow
trl = pytest.importorskip("trl")

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-5


@pytest.fixture(scope="module")
def base():
    """The fast tiny base, its tokenizer and a policy: the base plus seeded noise."""
    from workbench.models import tiny

    spec = RunSpec.parse(fast_spec())
    model, tokenizer, _ = tiny.build_or_load(spec.model.tiny, log=lambda *a: None)
    policy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval(), policy.train(), tokenizer


@pytest.fixture(scope="module")
def pairs():
    """Six built-in `sort` pairs (a corrupted answer as the rejected completion), and four
    whose chosen completions have the same token count (for TRL's batch-level NLL terms)."""
    from workbench.data.sources import load_rows

    spec = RunSpec.parse(
        fast_spec(method="dpo", data={"source": "sort", "train_size": 60, "eval_size": 4})
    )
    rows, _ = load_rows(spec.data, 0, row_kind="preference")
    return rows


def _records(rows):
    return [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows]


def _equal_chosen_lengths(rows, tokenizer, k=4):
    by_length: dict[int, list] = {}
    for r in rows:
        by_length.setdefault(
            len(tokenizer(r.prompt + r.chosen)["input_ids"])
            - len(tokenizer(r.prompt)["input_ids"]),
            [],
        ).append(r)
    group = max(by_length.values(), key=len)
    assert len(group) >= k
    return group[:k]


def _config(config_class, tmp_path, n, **extra):
    return config_class(
        output_dir=str(tmp_path),
        bf16=False,
        per_device_train_batch_size=n,
        report_to="none",
        dataloader_pin_memory=False,
        use_cpu=True,
        gradient_checkpointing=False,
        seed=0,
        **extra,
    )


def _trainer(trainer_class, config, policy, tokenizer, records, ref=None):
    from datasets import Dataset

    kwargs = {} if ref is None else {"ref_model": copy.deepcopy(ref)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_class(
            model=copy.deepcopy(policy),
            args=config,
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            **kwargs,
        )


def _grads(model) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None
    }


def _ours(method: dict, policy, ref, tokenizer, batch):
    """Our module's mean loss on ``batch`` and the policy's gradients (the module's own
    reference path: a frozen copy of the base)."""
    spec = RunSpec.parse(fast_spec(method=method, data={"source": "sort"}))
    module_class = registry.load_module_class(spec.method.name)
    model = copy.deepcopy(policy)
    reference = None
    if registry.METHODS[spec.method.name].reference != "none":
        reference = FrozenCopy(copy.deepcopy(ref))
    module = module_class(spec, model, tokenizer, [], None, reference=reference)
    per_example, terms = module.compute_losses(batch)
    loss = per_example.mean()
    loss.backward()
    return loss.detach(), _grads(model), module


def _from_completion_mask(input_ids, attention_mask, completion_mask, **extra):
    labels = input_ids.masked_fill(completion_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, **extra}


def _assert_same(ours_loss, ours_grads, trl_loss, trl_grads):
    torch.testing.assert_close(ours_loss, trl_loss.detach(), rtol=LOSS_RTOL, atol=1e-7)
    assert ours_grads.keys() == trl_grads.keys()
    for name in ours_grads:
        # float32 sums in a different order (TRL's fused head chunks the vocabulary): compare
        # each gradient tensor as a whole, by its relative error.
        error = (ours_grads[name] - trl_grads[name]).norm() / trl_grads[name].norm().clamp(
            min=1e-12
        )
        assert error < GRAD_RTOL, f"{name}: relative gradient error {float(error):.2e}"
    assert max(g.abs().max() for g in ours_grads.values()) > 1e-4  # the comparison is not of zeros


# (our method and parameters, DPOConfig fields): the DPOTrainer's loss types.
DPO_CASES = [
    ({"name": "dpo", "beta": 0.5}, {"beta": 0.5, "loss_type": ["sigmoid"]}),
    # TRL length-normalises IPO; ours follows the paper unless asked (length_normalize).
    ({"name": "ipo", "beta": 0.5, "length_normalize": True}, {"beta": 0.5, "loss_type": ["ipo"]}),
    ({"name": "hinge", "beta": 0.5}, {"beta": 0.5, "loss_type": ["hinge"]}),
    (
        {"name": "robust-dpo", "beta": 0.5, "label_smoothing": 0.2},
        {"beta": 0.5, "loss_type": ["robust"], "label_smoothing": 0.2},
    ),
    # RPO = DPO + alpha * NLL(chosen): TRL's "sft" loss averages over the batch's chosen tokens,
    # ours per pair; equal on pairs whose chosen completions have the same length.
    (
        {"name": "rpo", "beta": 0.5, "alpha": 0.7},
        {"beta": 0.5, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.7]},
    ),
]


@pytest.mark.parametrize(("method", "trl_fields"), DPO_CASES, ids=[m["name"] for m, _ in DPO_CASES])
def test_dpo_family_loss_and_gradients_equal_trl_dpo_trainer(
    method, trl_fields, base, pairs, tmp_path
):
    from trl import DPOConfig, DPOTrainer

    ref, policy, tokenizer = base
    rows = _equal_chosen_lengths(pairs, tokenizer) if method["name"] == "rpo" else pairs[:6]
    trainer = _trainer(
        DPOTrainer,
        _config(DPOConfig, tmp_path, len(rows), max_length=None, **trl_fields),
        policy,
        tokenizer,
        _records(rows),
        ref=ref,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    ours = _ours(
        method,
        policy,
        ref,
        tokenizer,
        _from_completion_mask(
            batch["input_ids"],
            batch["attention_mask"],
            batch["completion_mask"],
            n_pairs=torch.tensor(len(rows)),
        ),
    )
    _assert_same(ours[0], ours[1], trl_loss, _grads(trainer.model))


def _padding_value(trainer) -> int:
    # CPOTrainer and ORPOTrainer name their pad id differently.
    for name in ("padding_value", "pad_token_id"):
        if getattr(trainer, name, None) is not None:
            return getattr(trainer, name)
    return trainer.processing_class.pad_token_id


def _concatenated(trainer, batch, n):
    """A CPO/ORPO batch (separate chosen and rejected tensors) as one of ours."""
    cat = trainer.concatenated_inputs(
        batch,
        is_encoder_decoder=False,
        padding_value=_padding_value(trainer),
        device=torch.device("cpu"),
    )
    input_ids, attention = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": cat["concatenated_labels"],
        "n_pairs": torch.tensor(n),
    }


def test_simpo_equals_trl_cpo_trainer_with_the_papers_gamma(base, pairs, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    ref, policy, tokenizer = base
    rows = pairs[:6]
    # TRL's simpo_gamma is the target margin in reward units, as the paper's gamma and ours.
    config = _config(
        CPOConfig, tmp_path, len(rows), loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.8
    )
    trainer = _trainer(CPOTrainer, config, policy, tokenizer, _records(rows))
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    ours = _ours(
        {"name": "simpo", "beta": 2.0, "gamma": 0.8},
        policy,
        ref,
        tokenizer,
        _concatenated(trainer, batch, len(rows)),
    )
    _assert_same(ours[0], ours[1], trl_loss, _grads(trainer.model))


def test_orpo_odds_ratio_term_equals_trl_orpo_trainer(base, pairs, tmp_path):
    """ORPO's odds-ratio term and its gradient equal TRL's; the NLL part differs on purpose
    (TRL: prompt and completion tokens of the whole batch; the paper and ours: the chosen
    completion, per pair) and is checked against its formula."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from workbench.methods.sft import losses as sft_losses

    ref, policy, tokenizer = base
    rows = pairs[:6]
    trainer = _trainer(
        ORPOTrainer,
        _config(ORPOConfig, tmp_path, len(rows), beta=0.3),
        policy,
        tokenizer,
        _records(rows),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    chosen_logps, rejected_logps, *_ = trainer.concatenated_forward(trainer.model, batch)
    trl_terms = trainer.odds_ratio_loss(chosen_logps, rejected_logps)[0]
    trl_loss = -trl_terms.mean()
    trl_loss.backward()

    ours_batch = _concatenated(trainer, batch, len(rows))
    spec = RunSpec.parse(fast_spec(method={"name": "orpo", "beta": 0.3}, data={"source": "sort"}))
    model = copy.deepcopy(policy)
    module = registry.load_module_class("orpo")(spec, model, tokenizer, [], None)
    scores = module.pair_scores(ours_batch)
    per_pair, metrics = module.pair_loss(scores)
    nll = -scores.policy_chosen_logps / scores.chosen_lengths
    odds_term = (per_pair - nll).mean()
    odds_term.backward()
    _assert_same(odds_term.detach(), _grads(model), trl_loss, _grads(trainer.model))
    # The NLL part: the chosen completion's per-token NLL (the SFT loss of the chosen rows).
    logp, mask = sft_losses.token_logprobs(module.logits(ours_batch), ours_batch["labels"])
    n = len(rows)
    torch.testing.assert_close(
        metrics["nll"], sft_losses.masked_mean_nll(logp[:n], mask[:n]).detach()
    )


def test_tpo_equals_trl_tpo_trainer_with_the_chosen_completion_as_gold(base, pairs, tmp_path):
    from trl.experimental.tpo import TPOConfig, TPOTrainer

    ref, policy, tokenizer = base
    rows = _equal_chosen_lengths(
        pairs, tokenizer
    )  # TRL averages the gold NLL over the batch's tokens
    records = [{**r, "reference": r["chosen"]} for r in _records(rows)]
    trainer = _trainer(
        TPOTrainer,
        _config(TPOConfig, tmp_path, len(rows), beta=0.2, tpo_alpha=0.6),
        policy,
        tokenizer,
        records,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    n = len(rows)  # TRL's batch: chosen, rejected, gold; ours scores chosen and rejected
    ours_batch = _from_completion_mask(
        batch["input_ids"][: 2 * n],
        batch["attention_mask"][: 2 * n],
        batch["completion_mask"][: 2 * n],
        n_pairs=torch.tensor(n),
    )
    ours = _ours({"name": "tpo", "beta": 0.2, "alpha": 0.6}, policy, ref, tokenizer, ours_batch)
    _assert_same(ours[0], ours[1], trl_loss, _grads(trainer.model))


def test_kto_equals_trl_kto_trainer_with_its_kl_estimate(base, pairs, tmp_path):
    """Unpaired rows (each pair gives a desirable and an undesirable completion); the KL
    reference point from the same mismatched pairs as TRL's (prompt i, completion i - 1)."""
    from trl import KTOConfig, KTOTrainer

    ref, policy, tokenizer = base
    records = [
        {"prompt": r.prompt, "completion": c, "label": label}
        for r in pairs[:4]
        for c, label in ((r.chosen, True), (r.rejected, False))
    ]
    config = _config(
        KTOConfig,
        tmp_path,
        len(records),
        beta=0.5,
        desirable_weight=1.0,
        undesirable_weight=1.5,
        train_sampling_strategy="sequential",
    )
    trainer = _trainer(KTOTrainer, config, policy, tokenizer, records, ref=ref)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    ours_batch = _from_completion_mask(
        batch["input_ids"],
        batch["attention_mask"],
        batch["completion_mask"],
        desirable=batch["label"].bool(),
    )
    from workbench.methods.preference.module import mismatched_batch

    kl = mismatched_batch(ours_batch, tokenizer.pad_token_id)
    kl_trl = _from_completion_mask(
        batch["KL_input_ids"], batch["KL_attention_mask"], batch["KL_completion_mask"]
    )
    width = kl["input_ids"].shape[1]
    assert torch.equal(kl["input_ids"], kl_trl["input_ids"][:, :width])  # the same mismatched pairs
    ours = _ours(
        {"name": "kto", "beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.5},
        policy,
        ref,
        tokenizer,
        ours_batch,
    )
    _assert_same(ours[0], ours[1], trl_loss, _grads(trainer.model))
    # The mismatched log-ratios before the clamp at 0 (here their mean is negative: the
    # noisy policy finds mismatched completions less likely than the base does).
    from workbench.methods.sft import losses as sft_losses

    def ratios(policy_model, ref_model, b):
        with torch.no_grad():
            return sft_losses.sequence_logps(
                *sft_losses.token_logprobs(
                    policy_model(
                        input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                    ).logits,
                    b["labels"],
                )
            ) - sft_losses.sequence_logps(
                *sft_losses.token_logprobs(
                    ref_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                    b["labels"],
                )
            )

    with torch.no_grad():
        trl_ratios = trainer._compute_kl_logps(trainer.model, batch) - trainer._compute_kl_logps(
            trainer.ref_model, batch
        )
    torch.testing.assert_close(ratios(policy, ref, kl), trl_ratios, rtol=1e-4, atol=1e-4)


def test_a_five_step_dpo_run_follows_trls_loss_trajectory(base, pairs, tmp_path):
    """Same optimizer (AdamW, constant rate, no weight decay, clipping at 1), full-batch steps:
    our module's losses equal the DPOTrainer's logged losses within 1e-4 (relative)."""
    from trl import DPOConfig, DPOTrainer

    ref, policy, tokenizer = base
    rows = pairs[:6]
    lr = 1e-3
    config = _config(
        DPOConfig,
        tmp_path,
        len(rows),
        max_length=None,
        beta=0.5,
        learning_rate=lr,
        max_steps=5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = _trainer(DPOTrainer, config, policy, tokenizer, _records(rows), ref=ref)
    batch = next(
        iter(trainer.get_train_dataloader())
    )  # every step sees this full batch (in some order)
    trainer.train()
    trl_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    spec = RunSpec.parse(fast_spec(method={"name": "dpo", "beta": 0.5}, data={"source": "sort"}))
    model = copy.deepcopy(policy)
    module = registry.load_module_class("dpo")(
        spec, model, tokenizer, [], None, reference=FrozenCopy(copy.deepcopy(ref))
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ours_batch = _from_completion_mask(
        batch["input_ids"],
        batch["attention_mask"],
        batch["completion_mask"],
        n_pairs=torch.tensor(len(rows)),
    )
    ours_losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = module.compute_losses(ours_batch)[0].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ours_losses.append(float(loss))
    assert len(trl_losses) == 5
    assert ours_losses == pytest.approx(trl_losses, rel=1e-4)
    assert ours_losses[-1] < ours_losses[0] - 0.05  # it trained
