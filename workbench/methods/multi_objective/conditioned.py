"""Weight-conditioned multi-objective SFT (``conditioned-sft``): one model for every preference.

Each training example draws its own training weights over the weighted terms from
Dirichlet(alpha) (:func:`workbench.methods.multi_objective.conditioning.sample_percentages`),
gets them as a prefix before its prompt, and its loss is the terms weighted by them
(:func:`workbench.methods.multi_objective.losses.scalarise_per_example`); the terms are
MO-SFT's. The held-out evaluation (generations and ``term:`` objectives) states the spec's
objective weights in the prefix instead, so a run's objectives are those of the model asked for
that preference.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.data.encode import IGNORE_INDEX, SEGMENT_IDS, Encoded
from workbench.methods.multi_objective import conditioning
from workbench.methods.multi_objective import losses as mo_losses
from workbench.methods.sft.module import MultiObjectiveSFTModule


class ConditionedSFTModule(MultiObjectiveSFTModule):
    """MO-SFT with per-example training weights written into the prompt."""

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.term_names = list(self.term_weights)
        # What the held-out evaluation asks for: the spec's weights, as the prefix states them.
        self.evaluation_percent = conditioning.percentages(self.term_weights)
        self._prefix_ids: dict[tuple[int, ...], list[int]] = {}
        self._train_batches_drawn = 0

    def evaluation_rows(self, rows: list) -> list:
        return [conditioning.conditioned_row(row, self.evaluation_percent) for row in rows]

    def prefix_ids(self, percent: dict[str, int]) -> list[int]:
        key = tuple(percent[name] for name in self.term_names)
        if key not in self._prefix_ids:
            text = conditioning.weight_prefix(percent)
            self._prefix_ids[key] = list(
                self.tokenizer(text, add_special_tokens=False)["input_ids"]
            )
        return self._prefix_ids[key]

    def _draws(self, n: int) -> list[dict[str, int]]:
        """This batch's weights: drawn for a training batch (seeded by the run's seed and the
        batch's position, so a resumed run draws what an uninterrupted one would), the
        evaluation's preference for held-out rows."""
        if self._split != "train":
            return [self.evaluation_percent] * n
        position = self.start_micro_step + self._train_batches_drawn
        self._train_batches_drawn += 1
        rng = np.random.default_rng([self.spec.train.seed, position])
        return [
            conditioning.sample_percentages(rng, self.term_names, self.params.alpha)
            for _ in range(n)
        ]

    def collate(self, items):
        draws = self._draws(len(items))
        prefixed = []
        for (index, item), percent in zip(items, draws):
            ids = self.prefix_ids(percent)
            # Where the prompt's text begins, after the tokenizer's start token or the chat
            # template's header (as a prefixed prompt tokenises); the prefix is context, never
            # a target.
            at = item.prompt_start
            prefixed.append(
                (
                    index,
                    Encoded(
                        item.input_ids[:at] + ids + item.input_ids[at:],
                        item.labels[:at] + [IGNORE_INDEX] * len(ids) + item.labels[at:],
                        item.segments[:at]
                        + [SEGMENT_IDS["prompt"]] * len(ids)
                        + item.segments[at:],
                        item.truncated,
                    ),
                )
            )
        batch = super().collate(prefixed)
        batch["term_weights"] = torch.tensor(
            [[p[name] for name in self.term_names] for p in draws], dtype=torch.float32
        )
        return batch

    def compute_losses(self, batch):
        terms = self.compute_terms(batch)
        per_example = mo_losses.scalarise_per_example(terms, batch["term_weights"], self.term_names)
        return per_example, terms
