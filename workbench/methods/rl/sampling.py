"""Completions sampled during training and scored by the reward objectives: what GRPO and
RAFT share.

A batch of the ``prompt`` row kind holds left-padded prompts. :func:`sample_completions`
answers each ``group_size`` times in one batched ``generate`` (KV cache on, each prompt's
cache computed once for its group; the completions of one prompt in consecutive rows),
seeded from the run's seed, the step and the micro-batch, so a run is reproducible and a
resumed run samples what the uninterrupted one did. The prompts and completions are then
packed as supervised rows (prompt without padding, completion up to and including its end
token, right-padded), so the policy scores them with the same positions generation used and
with :meth:`WorkbenchModule.token_stats` (the fused head included). Every objective with
source ``reward:<name>`` scores every completion; ``total`` is sum_k w_k s_k r_k with w_k
the objective's weight and s_k = -1 for direction ``min``.

:class:`SampledCompletionsModule` runs this each step and keeps the samples for
``sample_reuse()`` optimizer steps (GRPO's num_iterations). The batch sampler then serves
each round of an optimizer step's micro-batches that many times in a row
(:class:`~workbench.data.batches.RepeatedRoundsSampler`), so the prompts in hand always
match the samples kept for them. A method whose loss is normalised over all of an optimizer
step's completions (:meth:`counts_step_tokens`: DAPO's token mean) needs their count before
the step's first backward pass: there every micro-batch of the step is sampled at its first
one (the same rows and seeds as one at a time, so the same samples), and each holds the
step's completion-token count, summed over ranks, as ``values["step_tokens"]``. The kept
samples go into checkpoints, so a resumed run goes on with the very samples (and old
log-probs) an uninterrupted one uses; a checkpoint without them samples afresh. A subclass
turns the samples into a loss (:meth:`loss_on_samples`) and may add per-completion values
when they are drawn (:meth:`on_samples_drawn`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from workbench.data.batches import RepeatedRoundsSampler
from workbench.data.encode import IGNORE_INDEX, SEGMENT_IDS, Encoded, collate
from workbench.methods.base import WorkbenchModule
from workbench.models.autocast_weights import weights_cast_once
from workbench.models.few_row_products import few_row_products
from workbench.models.grouped_attention import generation_heads
from workbench.models.preallocated_cache import preallocated_cache
from workbench.models.token_draw import sampling_processors
from workbench.objectives import scoring as objective_sources
from workbench.spec.errors import WorkbenchError
from workbench.spec.mlflow_names import REWARD_PREFIX, REWARD_TOTAL_KEY


@dataclass(frozen=True)
class RewardObjective:
    """One reward the method trains on: the spec objective that names it."""

    reward: str  # the registered reward's name (``reward:<name>``)
    objective: str
    weight: float
    sign: float  # +1 for direction max, -1 for min: higher signed reward is better


def reward_objectives(spec) -> list[RewardObjective]:
    return [
        RewardObjective(o.source_name, o.name, o.weight, float(o.sign))
        for o in spec.objectives
        if o.kind == "reward"
    ]


@dataclass
class SampledCompletions:
    """The completions of one micro-batch of prompts, scored (N = prompts * group_size).

    ``batch`` holds the packed rows (input_ids, attention_mask, labels, segments);
    ``rewards`` (N, R) each reward as its function returned it; ``signed`` the same with the
    rewards of direction-min objectives negated; ``totals`` (N,) their weighted sum;
    ``values`` what a method adds per completion (advantages, old log-probs).
    Tensors, strings and numbers only, so it goes into a checkpoint as it is.
    """

    batch: dict[str, torch.Tensor]
    row_index: torch.Tensor  # (prompts,) the prompts' rows
    rewards: torch.Tensor
    signed: torch.Tensor
    totals: torch.Tensor
    lengths: torch.Tensor  # (N,) completion tokens
    prompts: list[str]
    completions: list[str]
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_(self, device) -> SampledCompletions:
        """Move the tensors the loss reads to ``device``, in place (a no-op once there)."""
        self.batch = {k: v.to(device) for k, v in self.batch.items()}
        self.values = {k: v.to(device) for k, v in self.values.items()}
        return self

    def state(self) -> dict:
        return {
            "batch": self.batch,
            "row_index": self.row_index,
            "rewards": self.rewards,
            "signed": self.signed,
            "totals": self.totals,
            "lengths": self.lengths,
            "prompts": self.prompts,
            "completions": self.completions,
            "values": self.values,
        }


@torch.no_grad()
def sample_completions(
    model,
    prompts: dict[str, torch.Tensor],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    eos_id: int | None,
    pad_id: int,
    seed: int,
    min_new_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``group_size`` sampled completions of each left-padded prompt, the completions of a
    prompt in consecutive rows: (token ids (N, C), mask (N, C) of each completion's tokens up
    to and including its first end token). The global RNG is seeded with ``seed`` for the
    call and left as it was.

    Each prompt goes through the model once, not ``group_size`` times: its key/value cache
    (every token but the last) is computed for the prompts as they are and then repeated
    for each completion, and ``generate`` starts from it, feeding only the prompts' last
    tokens. The completions are the ones the plain way (each prompt repeated, its cache
    computed for every completion) samples: the same rows in the same order, the same random
    draws. A model whose cache cannot be repeated that way, or a prompt of one token, samples
    the plain way.

    Each step's token is drawn by :mod:`~workbench.models.token_draw` (one uniform number per
    row, not ``multinomial``'s one per vocabulary entry) into a
    :class:`~workbench.models.preallocated_cache.PreallocatedCache` (written in place, not
    concatenated), and under a mixed-precision step each weight is cast once for the whole
    call (:mod:`~workbench.models.autocast_weights`); in float32 the linear layers' few-row
    products put the weight first (:mod:`~workbench.models.few_row_products`). In
    BENCHMARKS.md's bf16 GRPO comparison (SmolLM2-135M's shape, 2 cores) sampling took 0.68x
    the time of TRL's ``generate``."""
    was_training = model.training
    model.eval()
    device = prompts["input_ids"].device
    ids, mask = prompts["input_ids"], prompts["attention_mask"]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            capacity = ids.shape[1] + max_new_tokens
            with weights_cast_once(device), generation_heads(model), few_row_products(model):
                cache = _shared_prompt_cache(model, ids, mask, group_size, capacity)
                if cache is None:
                    # None: generate makes transformers' own cache
                    cache = preallocated_cache(model.config, capacity)
                out = model.generate(
                    input_ids=ids.repeat_interleave(group_size, dim=0),
                    attention_mask=mask.repeat_interleave(group_size, dim=0),
                    **({} if cache is None else {"past_key_values": cache}),
                    do_sample=False,  # the draw is the last logits processor's
                    logits_processor=sampling_processors(temperature, top_k, top_p),
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens,
                    eos_token_id=eos_id,
                    pad_token_id=pad_id,
                    use_cache=True,
                )
    finally:
        model.train(was_training)
    completions = out[:, ids.shape[1] :]
    if eos_id is None:
        return completions, torch.ones_like(completions, dtype=torch.bool)
    is_end = completions == eos_id
    ended_before = is_end.long().cumsum(dim=1) - is_end.long()
    return completions, ended_before == 0


def _shared_prompt_cache(
    model, ids: torch.Tensor, mask: torch.Tensor, group_size: int, capacity: int
):
    """The key/value cache of every prompt token but the last, computed once per prompt and
    repeated ``group_size`` times along the batch (completions of a prompt in consecutive
    rows), with room for ``capacity`` positions; None where there is nothing to share (one
    completion per prompt, a prompt of one token) or the model's cache cannot be repeated."""
    if group_size == 1 or ids.shape[1] < 2 or bool((mask[:, :-1].sum(dim=1) == 0).any()):
        return None
    # The positions generate gives left-padded rows: counted from each row's first token.
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    cache = preallocated_cache(model.config, capacity)
    out = model(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        use_cache=True,
        logits_to_keep=1,
        **({} if cache is None else {"past_key_values": cache}),
    )
    cache = getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(group_size)
    return cache


def pack_rows(
    prompt_ids: list[list[int]],
    completions: torch.Tensor,
    mask: torch.Tensor,
    group_size: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Prompt + completion rows as a right-padded supervised batch (labels on the completion)."""
    rows = []
    for i, ids in enumerate(completions.tolist()):
        prompt, completion = prompt_ids[i // group_size], ids[: int(mask[i].sum())]
        rows.append(
            Encoded(
                prompt + completion,
                [IGNORE_INDEX] * len(prompt) + completion,
                [SEGMENT_IDS["prompt"]] * len(prompt) + [SEGMENT_IDS["answer"]] * len(completion),
            )
        )
    return collate(rows, pad_id)


def score_completions(
    completions: list[str], examples: list[dict], rewards: list[RewardObjective], group_size: int
) -> torch.Tensor:
    """(N, R) float tensor: reward k of completion i (whose example is i // group_size), as
    the reward returns it (in one call when it scores batches)."""
    repeated = [examples[i // group_size] for i in range(len(completions))]
    columns = []
    for reward in rewards:
        try:
            values = objective_sources.score_texts(
                objective_sources.scorer(f"reward:{reward.reward}"), completions, repeated
            )
        except (TypeError, ValueError) as err:
            raise WorkbenchError(
                f"reward '{reward.reward}' did not return a number ({err}); a reward "
                "returns a float for every completion"
            ) from None
        column = torch.tensor(values, dtype=torch.float32)
        if not bool(torch.isfinite(column).all()):
            bad = next(i for i, v in enumerate(values) if not torch.isfinite(torch.tensor(v)))
            raise WorkbenchError(
                f"reward '{reward.reward}' returned {values[bad]} for the completion "
                f"{completions[bad]!r}; a reward must return a finite number"
            )
        columns.append(column)
    return torch.stack(columns, dim=1)


class SampledCompletionsModule(WorkbenchModule):
    """Samples and scores completions of each prompt batch; a subclass trains on them."""

    metrics_prefix = "sample"  # the method's own metrics: <prefix>/completion_length, ...

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.rewards = reward_objectives(spec)
        self.reward_signs = torch.tensor([r.sign for r in self.rewards])
        self.reward_weights = torch.tensor([r.weight for r in self.rewards])
        self._kept: dict[int, SampledCompletions] = {}  # micro-batch slot of the step -> samples
        self._batch_idx = 0
        self._tokens = 0.0
        self._round_drawn_at: int | None = (
            None  # the optimizer step whose micro-batches were all drawn
        )
        self._lookahead = None  # (iterator over this rank's batches, the micro-step it serves next)

    # -- what a method implements -------------------------------------------------------
    def sample_reuse(self) -> int:
        """Optimizer steps trained on each batch of samples (1: sample every step)."""
        return 1

    def on_samples_drawn(self, samples: SampledCompletions) -> None:
        """Add per-completion values to ``samples.values`` once, when they are drawn."""

    def loss_on_samples(
        self, samples: SampledCompletions
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-example loss and terms (as compute_losses) from scored samples."""
        raise NotImplementedError

    def sample_columns(self, samples: SampledCompletions) -> dict[str, list]:
        """Per-completion columns the samples table shows beside the rewards."""
        return {}

    def counts_step_tokens(self) -> bool:
        """Whether the loss needs the completion tokens of the whole optimizer step (every
        micro-batch and rank), ``values["step_tokens"]``, before the step's first backward."""
        return False

    # -- batches ------------------------------------------------------------------------
    def batch_sampler(self, **placement):
        t = self.spec.train
        return RepeatedRoundsSampler(
            len(self.encoded),
            t.batch_size,
            t.steps * t.grad_accum,
            t.seed,
            round_size=t.grad_accum,
            repeats=self.sample_reuse(),
            lengths=self.batch_lengths(),
            **placement,
        )

    def training_step(self, batch, batch_idx):
        self._batch_idx = batch_idx
        return super().training_step(batch, batch_idx)

    def batch_tokens(self, batch) -> float:
        return self._tokens

    def compute_losses(self, batch):
        samples = self._samples_for(batch)
        self.log_step_metrics(self._reward_metrics(samples))
        return self.loss_on_samples(samples)

    def completion_logprobs(self, rows: dict[str, torch.Tensor]):
        """Per-token log-probs of packed ``rows``' completions under the policy and their mask,
        both (n, T-1) (:meth:`token_stats`); counted as trained tokens."""
        self._tokens += float(rows["attention_mask"].sum())
        logp, mask, _ = self.token_stats(rows)
        return logp, mask

    def _samples_for(self, batch) -> SampledCompletions:
        self._tokens = 0.0
        if self._split != "train":
            # Held-out terms: fresh samples of the held-out prompts, seeded by their rows.
            return self._draw(
                batch, seed=self.spec.train.seed * 7919 + int(batch["row_index"][0]) + 1
            )
        slot = self._batch_idx % self.spec.train.grad_accum
        kept = self._kept.get(slot)
        matches = kept is not None and torch.equal(kept.row_index, batch["row_index"].cpu())
        drawn_with_round = slot > 0 and self._round_drawn_at == self.global_step
        fresh = not matches or (
            self.global_step % self.sample_reuse() == 0 and not drawn_with_round
        )
        if fresh and self.counts_step_tokens():
            self._draw_round(batch, slot)
            kept = self._kept[slot]
        elif fresh:
            kept = self._draw(batch, self._sample_seed(slot))
            self._kept[slot] = kept
            self._log_table_if_due(kept)
        return kept.to_(self.device)

    def _sample_seed(self, slot: int) -> int:
        # One stream per (seed, step, micro-batch, rank): reproducible, and the same after a resume.
        return (
            (self.spec.train.seed * 1_000_003 + self.global_step) * 4099 + slot
        ) * 257 + self.global_rank

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _round_rows(self) -> list[list[int]]:
        """This rank's rows of every micro-batch of the current optimizer step, read ahead
        from a second copy of the run's batch sampler. The copy is kept and moved forward, so
        reading ahead costs what serving the batches does; it is made again (from the start of
        the sequence) only when it is not where the step is, as after a resume."""
        accum = self.spec.train.grad_accum
        start = self.global_step * accum
        if self._lookahead is None or self._lookahead[1] > start:
            sampler = self.batch_sampler(
                rank=self.global_rank, world_size=self._world_size(), start_micro_step=start
            )
            self._lookahead = (iter(sampler), start)
        batches, position = self._lookahead
        for _ in range(start - position):  # the rounds served again (num_iterations) in between
            next(batches)
        rows = list(itertools.islice(batches, accum))
        self._lookahead = (batches, start + accum)
        return rows

    def _draw_round(self, batch, slot: int) -> None:
        """Sample every micro-batch of this optimizer step now and give each the step's
        completion-token count (all ranks)."""
        rows = self._round_rows()
        if slot != 0 or rows[0] != batch["index"].tolist():
            raise WorkbenchError(
                f"the batch in hand (micro-batch {slot} of step {self.global_step}) is not the "
                "first of its optimizer step as the batch sampler serves it; this is a bug"
            )
        batches = [batch] + [
            {
                k: v.to(self.device)
                for k, v in self.collate([(i, self.encoded[i]) for i in idx]).items()
            }
            for idx in rows[1:]
        ]
        drawn = [self._draw(b, self._sample_seed(s)) for s, b in enumerate(batches)]
        tokens = torch.tensor(
            float(sum(int(d.lengths.sum()) for d in drawn)), dtype=torch.float64, device=self.device
        )
        if self._world_size() > 1:
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        for s, samples in enumerate(drawn):
            samples.values["step_tokens"] = tokens.detach().clone()
            self._kept[s] = samples
            self._log_table_if_due(samples)
        self._round_drawn_at = self.global_step

    def _draw(self, batch, seed: int) -> SampledCompletions:
        p = self.params
        completions, mask = sample_completions(
            self.model,
            {k: batch[k] for k in ("input_ids", "attention_mask")},
            group_size=p.group_size,
            max_new_tokens=p.max_completion_length,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            seed=seed,
            min_new_tokens=p.min_completion_length,
        )
        self._tokens += float(mask.sum())
        prompt_ids = [
            ids[att.bool()].tolist()
            for ids, att in zip(batch["input_ids"], batch["attention_mask"])
        ]
        rows = self.rows[self._split]
        examples = [objective_sources.example_of(rows[int(i)]) for i in batch["row_index"]]
        texts = [
            self.tokenizer.decode(ids[m], skip_special_tokens=True)
            for ids, m in zip(completions, mask)
        ]
        rewards = score_completions(texts, examples, self.rewards, p.group_size)
        signed = rewards * self.reward_signs
        samples = SampledCompletions(
            batch=pack_rows(prompt_ids, completions.cpu(), mask.cpu(), p.group_size, self.pad_id),
            row_index=batch["row_index"].cpu(),
            rewards=rewards,
            signed=signed,
            totals=signed @ self.reward_weights,
            lengths=mask.sum(dim=1).cpu(),
            prompts=[
                e["prompt"] if isinstance(e["prompt"], str) else str(e["prompt"])
                for e in examples
                for _ in range(p.group_size)
            ],
            completions=texts,
        ).to_(self.device)
        self.on_samples_drawn(samples)
        return samples

    # -- what is logged -----------------------------------------------------------------
    def _reward_metrics(self, samples: SampledCompletions) -> dict[str, torch.Tensor]:
        metrics = {}
        for k, reward in enumerate(self.rewards):
            column = samples.rewards[:, k]
            metrics[f"{REWARD_PREFIX}{reward.reward}/mean"] = column.mean()
            metrics[f"{REWARD_PREFIX}{reward.reward}/std"] = column.std(unbiased=False)
        metrics[REWARD_TOTAL_KEY] = samples.totals.mean()
        metrics[f"{self.metrics_prefix}/completion_length"] = samples.lengths.float().mean()
        return metrics

    def _log_table_if_due(self, samples: SampledCompletions) -> None:
        """Queue the samples as a table when the steps they train on include a multiple of
        ``samples_every`` (and at the first step), the first ``eval.samples_logged`` prompts
        with their whole groups."""
        step, every, reuse = self.global_step, self.params.samples_every, self.sample_reuse()
        if step != 0 and (step + reuse) // every == step // every:
            return
        shown = self.spec.eval.samples_logged * self.params.group_size
        columns = {
            "prompt": samples.prompts,
            "completion": samples.completions,
            **{r.reward: samples.rewards[:, k].tolist() for k, r in enumerate(self.rewards)},
            "total": samples.totals.tolist(),
            **self.sample_columns(samples),
        }
        self.log_step_samples(
            [
                {name: values[i] for name, values in columns.items()}
                for i in range(min(shown, len(samples.completions)))
            ]
        )

    # -- checkpoints: the kept samples travel with the weights ---------------------------
    def on_save_checkpoint(self, checkpoint) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["workbench_samples"] = {slot: s.state() for slot, s in self._kept.items()}

    def on_load_checkpoint(self, checkpoint) -> None:
        super().on_load_checkpoint(checkpoint)
        self._kept = {
            int(slot): SampledCompletions(**state)
            for slot, state in checkpoint.get("workbench_samples", {}).items()
        }
