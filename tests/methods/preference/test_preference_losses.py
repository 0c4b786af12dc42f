"""The preference losses against their papers' formulas on inputs small enough to check by hand.

Every input is a log-prob summed over a completion; with beta = 1 and the numbers below,
each expected value is one or two terms written out with math.log/math.exp.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.methods.preference import losses as preference_losses


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    """-log sigma(x) = log(1 + e^-x)."""
    return math.log1p(math.exp(-x))


# Policy log-probs (chosen, rejected) = (-1, -2), reference (-1.5, -1.5): rho_w = 0.5,
# rho_l = -0.5, h = 1.
PAIR = {
    "policy_chosen_logps": t(-1.0),
    "policy_rejected_logps": t(-2.0),
    "ref_chosen_logps": t(-1.5),
    "ref_rejected_logps": t(-1.5),
}


def test_dpo_is_the_logistic_loss_of_beta_h_and_label_smoothing_gives_conservative_dpo():
    loss, metrics = preference_losses.dpo_loss(**PAIR, beta=1.0)
    assert float(loss) == pytest.approx(softplus(1.0))
    assert float(metrics["chosen_rewards"]) == 0.5 and float(metrics["rejected_rewards"]) == -0.5
    assert float(metrics["margin"]) == 1.0 and float(metrics["accuracy"]) == 1.0
    smoothed, _ = preference_losses.dpo_loss(**PAIR, beta=1.0, label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(0.9 * softplus(1.0) + 0.1 * softplus(-1.0))
    # Gradient: dL/d log pi(y_w) = -beta sigma(-beta h).
    chosen = t(-1.0).requires_grad_()
    preference_losses.dpo_loss(**{**PAIR, "policy_chosen_logps": chosen}, beta=2.0)[
        0
    ].sum().backward()
    assert float(chosen.grad) == pytest.approx(-2.0 / (1 + math.exp(2.0)))


def test_ipo_follows_the_paper_and_offers_trls_length_normalised_form():
    loss, _ = preference_losses.ipo_loss(**PAIR, beta=0.25)  # target gap 1 / (2 beta) = 2
    assert float(loss) == pytest.approx((1.0 - 2.0) ** 2)
    normalised, _ = preference_losses.ipo_loss(
        **PAIR, beta=0.25, length_normalize=True, chosen_lengths=t(2), rejected_lengths=t(1)
    )
    assert float(normalised) == pytest.approx((0.5 / 2 + 0.5 - 2.0) ** 2)
    with pytest.raises(ValueError, match="chosen_lengths"):
        preference_losses.ipo_loss(**PAIR, length_normalize=True)


def test_hinge_is_zero_beyond_the_margin():
    assert float(preference_losses.hinge_loss(**PAIR, beta=0.5)[0]) == pytest.approx(0.5)
    assert float(preference_losses.hinge_loss(**PAIR, beta=2.0)[0]) == 0.0


def test_robust_dpo_is_unbiased_under_flipped_labels():
    eps = 0.25
    loss, _ = preference_losses.robust_loss(**PAIR, beta=1.0, label_smoothing=eps)
    assert float(loss) == pytest.approx(
        ((1 - eps) * softplus(1.0) - eps * softplus(-1.0)) / (1 - 2 * eps)
    )
    flipped = {
        "policy_chosen_logps": PAIR["policy_rejected_logps"],
        "policy_rejected_logps": PAIR["policy_chosen_logps"],
        "ref_chosen_logps": PAIR["ref_rejected_logps"],
        "ref_rejected_logps": PAIR["ref_chosen_logps"],
    }
    expected = (1 - eps) * loss + eps * preference_losses.robust_loss(
        **flipped, beta=1.0, label_smoothing=eps
    )[0]
    assert float(expected) == pytest.approx(softplus(1.0))  # the clean DPO loss, in expectation
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        preference_losses.robust_loss(**PAIR, label_smoothing=0.5)


def test_rpo_adds_the_chosen_per_token_nll():
    loss, metrics = preference_losses.rpo_loss(**PAIR, chosen_lengths=t(2), beta=1.0, alpha=0.5)
    assert float(loss) == pytest.approx(softplus(1.0) + 0.5 * (1.0 / 2))
    assert float(metrics["nll"]) == 0.5


def test_simpo_uses_per_token_rewards_and_the_papers_target_margin():
    # rewards beta * logp / |y|: 2 * -2/4 = -1 and 2 * -3/2 = -3; margin 2 minus gamma 0.5.
    loss, metrics = preference_losses.simpo_loss(
        policy_chosen_logps=t(-2.0),
        policy_rejected_logps=t(-3.0),
        chosen_lengths=t(4),
        rejected_lengths=t(2),
        beta=2.0,
        gamma=0.5,
    )
    assert float(loss) == pytest.approx(softplus(1.5))
    assert float(metrics["chosen_rewards"]) == -1.0 and float(metrics["rejected_rewards"]) == -3.0


def test_orpo_is_nll_plus_the_log_odds_ratio_term():
    # Per-token likelihoods P_w = 0.5 (odds 1), P_l = 0.25 (odds 1/3): log odds ratio = log 3.
    inputs = {
        "policy_chosen_logps": t(2 * math.log(0.5)),
        "policy_rejected_logps": t(3 * math.log(0.25)),
        "chosen_lengths": t(2),
        "rejected_lengths": t(3),
    }
    loss, metrics = preference_losses.orpo_loss(**inputs, beta=0.2)
    assert float(metrics["log_odds_ratio"]) == pytest.approx(math.log(3))
    assert float(loss) == pytest.approx(math.log(2) - 0.2 * math.log(0.75))  # sigma(log 3) = 3/4


def test_tpo_adds_the_gold_nll_to_a_reference_free_preference_term():
    loss, _ = preference_losses.tpo_loss(
        policy_chosen_logps=t(-1.0),
        policy_rejected_logps=t(-2.0),
        gold_nll=t(0.3),
        beta=1.0,
        alpha=2.0,
    )
    assert float(loss) == pytest.approx(softplus(1.0) + 0.6)


def test_asft_pushes_each_completion_by_its_own_likelihood():
    inputs = {
        "policy_chosen_logps": t(math.log(0.5)),
        "policy_rejected_logps": t(2 * math.log(0.25)),
        "chosen_lengths": t(1),
        "rejected_lengths": t(2),
    }
    loss, metrics = preference_losses.asft_loss(**inputs, beta=0.5)
    # -log P_w - log(1 - P_l) with P_w = 0.5, P_l = 0.25; plus the NLL log 2.
    assert float(metrics["align"]) == pytest.approx(math.log(2) - math.log(0.75))
    assert float(loss) == pytest.approx(math.log(2) + 0.5 * (math.log(2) - math.log(0.75)))


def test_kto_compares_each_reward_with_the_clamped_kl_reference_point():
    policy, ref, desirable = (
        t(-1.0, -3.0).requires_grad_(),
        t(-2.0, -2.0),
        torch.tensor([True, False]),
    )
    kl = t(0.5).requires_grad_()
    loss, metrics = preference_losses.kto_loss(
        policy_logps=policy,
        ref_logps=ref,
        desirable=desirable,
        kl=kl,
        beta=1.0,
        desirable_weight=1.0,
        undesirable_weight=2.0,
    )
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert loss.tolist() == pytest.approx([1 - sigmoid(1.0 - 0.5), 2 * (1 - sigmoid(0.5 + 1.0))])
    loss.sum().backward()
    assert kl.grad is None  # the reference point carries no gradient
    clamped, metrics = preference_losses.kto_loss(
        policy_logps=policy, ref_logps=ref, desirable=desirable, kl=t(-4.0), beta=1.0
    )
    assert metrics["kl"].tolist() == [0.0, 0.0]
    assert (
        float(
            preference_losses.kto_kl_estimate(
                policy_mismatched_logps=t(-1.0, -2.0), ref_mismatched_logps=t(-2.0, -2.0)
            )
        )
        == 0.5
    )
    assert (
        float(
            preference_losses.kto_kl_estimate(
                policy_mismatched_logps=t(-3.0), ref_mismatched_logps=t(-2.0)
            )
        )
        == 0.0
    )


def test_modpo_shifts_the_dpo_logit_by_the_weighted_score_margins():
    # (beta h - w_1 * margin) / w_0 = (1 - 0.5 * 1) / 0.5 = 1.
    loss, metrics = preference_losses.modpo_loss(
        **PAIR, score_margins=t(1.0).reshape(1, 1), weights=[0.5], weight=0.5, beta=1.0
    )
    assert float(loss) == pytest.approx(softplus(1.0))
    assert float(metrics["score_margin"]) == 0.5
    # With no other objective it is DPO with beta / w_0.
    alone, _ = preference_losses.modpo_loss(
        **PAIR,
        score_margins=torch.zeros(1, 0, dtype=torch.float64),
        weights=[],
        weight=0.5,
        beta=1.0,
    )
    assert float(alone) == pytest.approx(float(preference_losses.dpo_loss(**PAIR, beta=2.0)[0]))
    with pytest.raises(ValueError, match="> 0"):
        preference_losses.modpo_loss(
            **PAIR, score_margins=t(1.0).reshape(1, 1), weights=[1.0], weight=0.0
        )


def test_every_preference_method_is_registered_with_its_parameters_and_paper():
    from workbench.spec import registry

    for name in ("dpo", "ipo", "hinge", "robust-dpo", "rpo", "simpo", "orpo", "tpo", "asft", "kto"):
        info = registry.METHODS[name]
        assert info.builtin and info.family == "preference" and info.paper and info.formula
        assert info.row_kind == ("unpaired" if name == "kto" else "preference")
        assert "reward_accuracy" in info.terms
        assert set(info.params.model_fields) >= {"name", "beta"}
        assert registry.resolve(info.module).__name__.endswith("Module")
    assert registry.METHODS["simpo"].params(name="simpo").gamma == 0.5
    assert registry.METHODS["dpo"].reference == "precomputed"
    assert registry.METHODS["orpo"].reference == "none"
