"""RAFT: reward-ranked fine-tuning (Dong et al., 2023).

Each step samples K = ``group_size`` completions per prompt, scores them with the reward
objectives (:mod:`.sampling`), keeps the best of each prompt's K by the weighted reward
total (or, with ``keep_fraction``, the best share of the whole micro-batch), and fine-tunes
on the kept completions with the completion NLL of ``workbench.losses``. Sampling from the
improved policy at the next step iterates the ranking, as the paper's stages do.
"""

from __future__ import annotations

import torch

from workbench.methods.rl.sampling import SampledCompletions, SampledCompletionsModule
from workbench.methods.sft import losses as sft_losses
from workbench.spec.mlflow_names import RAFT_PREFIX


def reward_ranked(
    totals: torch.Tensor,
    group_size: int,
    keep_fraction: float | None = None,
    min_total: float | None = None,
) -> torch.Tensor:
    """Boolean mask (N,) of the completions RAFT trains on.

    ``keep_fraction`` None: the highest ``totals`` of each group of ``group_size`` consecutive
    rows (the first sampled among ties); a fraction: the round(fraction * N) highest of all
    rows (at least one). ``min_total`` then drops kept rows scoring below it.
    """
    kept = torch.zeros_like(totals, dtype=torch.bool)
    if keep_fraction is None:
        best = totals.reshape(-1, group_size).argmax(dim=1)
        kept[torch.arange(len(best), device=totals.device) * group_size + best] = True
    else:
        kept[totals.topk(max(1, round(keep_fraction * len(totals)))).indices] = True
    if min_total is not None:
        kept &= totals >= min_total
    return kept


class RAFTModule(SampledCompletionsModule):
    metrics_prefix = "raft"

    def on_samples_drawn(self, samples: SampledCompletions) -> None:
        p = self.params
        samples.values["kept"] = reward_ranked(
            samples.totals, p.group_size, p.keep_fraction, p.min_total
        )

    def loss_on_samples(self, samples: SampledCompletions):
        kept = samples.values["kept"].to(samples.totals.device)
        rows = kept.nonzero().squeeze(1)
        # Each kept row carries N / n_kept so the mean over all N rows is the kept rows' mean NLL.
        share = len(kept) / max(len(rows), 1)
        if len(rows) == 0:
            # Nothing passed min_total: a zero loss that still reaches the weights.
            rows, share = torch.zeros(1, dtype=torch.long), 0.0
        rows = rows.to(self.device)
        logp, mask = self.completion_logprobs({k: v[rows] for k, v in samples.batch.items()})
        nll = sft_losses.masked_mean_nll(logp, mask)
        per_completion = nll.new_zeros(len(kept)).index_add(0, rows, nll * share)
        totals = samples.totals.to(per_completion.device)
        self.log_step_metrics(
            {
                f"{RAFT_PREFIX}kept": kept.float().mean(),
                f"{RAFT_PREFIX}kept_total": totals[kept].mean()
                if kept.any()
                else totals.new_zeros(()),
            }
        )
        return per_completion, {"completion": per_completion, "reward": totals}

    def sample_columns(self, samples: SampledCompletions) -> dict[str, list]:
        return {"kept": samples.values["kept"].tolist()}
