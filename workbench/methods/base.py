"""The shared base of every method's LightningModule.

It owns what all methods share: the model, the batches (encoded and collated as the
method's row kind says), the optimizer and schedule from the registry, the reference
strategy the module is handed (:mod:`workbench.methods.reference`), the per-step metrics,
and the held-out value of each loss term. A module implements :meth:`compute_losses`,
turning a batch into per-example losses by calling a family's pure loss functions
(``workbench/methods/<family>/losses.py``); its parameters are ``self.params`` (the spec's
``method`` section). A method that is only a loss needs no module of its own: its row kind's
generic module calls the loss its entry names.
"""

from __future__ import annotations

import contextlib
import random

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from workbench.data.batches import GlobalBatchSampler, row_length
from workbench.data.encode import IGNORE_INDEX
from workbench.data.packing import PackedRows, PaddedRows, pack_batch
from workbench.data.selection.online_batch import pick_batch
from workbench.methods.reference import NoReference
from workbench.methods.sft import losses as sft_losses
from workbench.methods.step import StepOutput
from workbench.models import packed_attention
from workbench.spec import components, registry
from workbench.spec.errors import SpecError


class WorkbenchModule(L.LightningModule):
    def __init__(
        self,
        spec,
        model,
        tokenizer,
        encoded,
        kernel_usage=None,
        reference=None,
        *,
        rows: dict[str, list] | None = None,
        start_micro_step: int = 0,
    ):
        """``rows``: the rows behind ``encoded`` (and the held-out ones) by split;
        ``start_micro_step``: the first micro-batch to train on (a resumed run's checkpoint)."""
        super().__init__()
        self.kernel_usage = kernel_usage  # set when the model is patched with fused kernels
        self._kernels_checked = False
        if spec.train.padding_free:
            why = packed_attention.packing_problem(model)
            if why is not None:
                raise SpecError(
                    f"invalid run spec:\n  train.padding_free = True: {why}; set "
                    "train.padding_free: false"
                )
        self.spec = spec
        self.params = spec.method
        self.info = registry.METHODS[spec.method.name]
        self.model = model
        self.tokenizer = tokenizer
        self.encoded = encoded
        self._collate_rows = registry.resolve(registry.ROW_KINDS[self.info.row_kind].collate)
        # Where the reference model's log-probs come from: the strategy of the method's
        # reference need (workbench.methods.reference.build_reference; none by default).
        self.reference = reference if reference is not None else NoReference()
        self._split = "train"
        # What the micro-batch in hand measured beyond its loss (log_step_metrics,
        # log_step_samples): returned in its StepOutput by training_step, then cleared.
        self._step_extra: dict[str, float] = {}
        self._step_samples: list[dict] = []
        # The rows behind ``encoded`` by split: a method that scores its own generations reads
        # a prompt's reference fields (its answer) here.
        self.rows: dict[str, list] = rows if rows is not None else {"train": [], "eval": []}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        self.start_micro_step = start_micro_step
        # Token log-probs are taken under softmax(logits / this). A method that samples its own
        # completions at a temperature sets it, so the policy and reference log-probs (and the
        # ratio between them) are those of the distribution the completions were drawn from.
        self.logit_temperature = 1.0
        # An optimizer that evaluates the loss itself (MeZO's two forward passes) trains under
        # Lightning's manual optimisation: no backward, see step_without_backward.
        self.automatic_optimization = not components.OPTIMIZERS[
            spec.optimizer.name
        ].trains_without_backward

    # -- what a method implements -------------------------------------------------------
    def compute_losses(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-example total loss (B,) and per-example terms by name."""
        raise NotImplementedError

    def terms_needed(self) -> set[str]:
        """Terms this run trains on (weighted by objectives) or measures (``term:`` objectives)."""
        needed = {o.term for o in self.spec.objectives if o.term is not None}
        needed |= {o.source_name for o in self.spec.objectives if o.kind == "term"}
        return needed

    def evaluation_rows(self, rows: list) -> list:
        """The held-out rows as this method's model is asked them (the runner evaluates these);
        a weight-conditioned method puts the preference it evaluates at before each prompt."""
        return rows

    # -- shared machinery ---------------------------------------------------------------
    def logits(self, inputs: dict) -> torch.Tensor:
        """The model's logits on ``inputs`` (a layout's :meth:`model_inputs`)."""
        return self.model(**inputs).logits

    def scored_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` at the temperature token log-probs are taken at."""
        return logits if self.logit_temperature == 1.0 else logits / self.logit_temperature

    def collate(self, items) -> dict[str, torch.Tensor]:
        """The row kind's batch of ``(index, encoded row)`` items, plus their ``index``."""
        batch = self._collate_rows([item for _, item in items], self.pad_id)
        batch["index"] = torch.tensor([i for i, _ in items])
        return batch

    @property
    def split(self) -> str:
        """Which rows the batch in hand comes from: ``train``, or ``eval`` while held-out
        terms are measured (a precomputed reference looks its rows up in that split)."""
        return self._split

    @contextlib.contextmanager
    def scoring_with(self, model):
        """Compute losses with ``model`` in place of the trained one for the duration.

        Under a sharding strategy the trained model's weights exist whole only inside a
        collective; rank 0 measures held-out terms on its gathered copy instead. The swap
        bypasses ``nn.Module.__setattr__`` so the sharded module tree is left as it was.
        """
        trained = self._modules["model"]
        if model is trained:
            yield
            return
        self._modules["model"] = model
        try:
            yield
        finally:
            self._modules["model"] = trained

    @torch.no_grad()
    def heldout_terms(self, encoded, batch_size: int = 64) -> dict[str, float]:
        """Each loss term's mean over held-out ``encoded`` rows (the ``term:`` objectives)."""
        was_training = self.model.training
        self.model.eval()
        self._split = "eval"
        totals: dict[str, float] = {}
        count = 0
        try:
            for start in range(0, len(encoded), batch_size):
                items = list(enumerate(encoded[start : start + batch_size], start))
                batch = {k: v.to(self.device) for k, v in self.collate(items).items()}
                _, terms = self.compute_losses(batch)
                for name, values in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(values.detach().float().sum())
                count += len(next(iter(terms.values()))) if terms else 0
        finally:
            self._split = "train"
            self._step_extra = {}  # metrics logged while measuring are not a training step's
            self.model.train(was_training)
        return {name: total / max(count, 1) for name, total in totals.items()}

    def rows_layout(self, batch) -> PaddedRows | PackedRows:
        """How ``batch``'s rows go through the model: padded as collated, or packed end to end
        with ``train.padding_free`` (:mod:`workbench.data.packing`). Either way its
        ``unpack`` gives per-position values in the padded batch's shifted layout (B, T-1)."""
        train = self.spec.train
        if not train.padding_free:
            return PaddedRows(batch["input_ids"], batch["attention_mask"], batch["labels"])
        max_tokens = None
        if not packed_attention.packs_one_sequence(self.model):
            max_tokens = train.padding_free_tokens or int(batch["attention_mask"].sum(1).max())
        return pack_batch(
            batch["input_ids"], batch["attention_mask"], batch["labels"], self.pad_id, max_tokens
        )

    def token_stats(self, batch, need_eos: bool = False):
        """(log p of each label token, mask of scored positions, log p(eos) or None), all (B, T-1).

        Both log-probs are 0 outside the scored positions (no loss term reads them there).

        With the fused head the log-probs come from it on the last hidden states
        (no B x T x V logits); otherwise from the model's logits. Either way the loss terms
        are computed by the same loss functions. With ``train.padding_free`` the model runs
        on the packed rows (:meth:`rows_layout`) and the values are read back into the
        padded batch's layout, so the losses never see the difference.
        """
        layout = self.rows_layout(batch)
        logp, mask, eos_logp = self.layout_token_stats(layout, need_eos)
        unpacked_eos = None if eos_logp is None else layout.unpack(eos_logp)
        return layout.unpack(logp), layout.unpack(mask), unpacked_eos

    def layout_token_stats(self, layout: PaddedRows | PackedRows, need_eos: bool):
        """:meth:`token_stats` in ``layout``'s own shifted layout."""
        labels = layout.labels
        mask = labels[:, 1:] != IGNORE_INDEX
        eos_id = self.eos_id if need_eos else None
        if self.kernel_usage is None:
            return sft_losses.label_logprobs(
                self.scored_logits(self.logits(layout.model_inputs())), labels, eos_id
            )
        before = self.kernel_usage.calls.copy()
        if not self.kernel_usage.fuses_head:  # kernels: auto left the fused head out
            result = sft_losses.label_logprobs(
                self.scored_logits(self.logits(layout.model_inputs())), labels, eos_id
            )
            if not self._kernels_checked:
                self.kernel_usage.check_forward(before)
                self._kernels_checked = True
            return result
        from workbench.models.kernel_patch import head_logprobs

        targets = [labels[:, 1:]]
        if need_eos:
            # Ignored outside the scored positions: the fused head skips those rows.
            targets.append(torch.where(mask, self.eos_id, IGNORE_INDEX))
        inputs = layout.model_inputs()
        outputs = head_logprobs(
            self.model,
            self.kernel_usage,
            inputs["input_ids"],
            inputs.get("attention_mask"),
            targets,
            temperature=self.logit_temperature,
            position_ids=inputs.get("position_ids"),
        )
        if not self._kernels_checked:
            self.kernel_usage.check_forward(before)
            self._kernels_checked = True
        return outputs[0] * mask, mask, (outputs[1] if need_eos else None)

    def log_step_metrics(self, metrics: dict) -> None:
        """Metrics beyond the loss terms for this micro-batch (e.g. ``pref/margin``), called from
        :meth:`compute_losses`; returned in the micro-batch's :class:`StepOutput`, averaged over
        the step's micro-batches (and DDP ranks) and announced with the step's other metrics.
        Every rank must log the same names."""
        for name, value in metrics.items():
            self._step_extra[name] = (
                float(value.detach().float().mean()) if torch.is_tensor(value) else float(value)
            )

    def log_step_samples(self, rows: list[dict]) -> None:
        """Sample completions of this micro-batch (one dict per completion), returned in its
        :class:`StepOutput` and announced with the step as a table (``RunObserver.on_samples``)."""
        self._step_samples.extend(rows)

    def batch_tokens(self, batch) -> float:
        """Tokens this micro-batch processed, for ``perf/tokens_per_s``; a method that
        generates counts what it generated too."""
        return float(batch["attention_mask"].sum())

    def training_step(self, batch, batch_idx):
        """The micro-batch's loss for Lightning to train on, and a :class:`StepOutput` of what
        it measured for the run's events (``{"loss": ..., "step": ...}``)."""
        self._step_extra, self._step_samples = {}, []
        if self.spec.data.online_batch is not None:
            batch = self.pick_online(batch)
        if self.automatic_optimization:
            per_example, terms = self.compute_losses(batch)
            loss = per_example.mean()
        else:
            loss, terms = self.step_without_backward(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {float(loss.detach())} at step {self.global_step}; "
                "lower optimizer.lr, enable train.grad_clip or check the data"
            )
        measured = StepOutput(
            loss=float(loss.detach()),
            terms={name: float(value.detach().mean()) for name, value in terms.items()},
            metrics=self._step_extra,
            tokens=self.batch_tokens(batch),
            samples=self._step_samples,
        )
        self._step_extra, self._step_samples = {}, []
        return {"loss": loss, "step": measured}

    @torch.no_grad()
    def pick_online(self, batch) -> dict[str, torch.Tensor]:
        """``data.online_batch``: the ``train.batch_size`` rows of the drawn pool ``batch``
        this step trains on, picked by their loss under the current weights (each row's
        mean over its loss terms as :meth:`compute_losses` gives them, in eval mode) and
        their diversity (the mean of their tokens' input embeddings), as
        :func:`~workbench.data.selection.online_batch.pick_batch` weighs them. Logs the
        pool's and the picked rows' mean loss (``select/pool_loss``, ``select/picked_loss``)."""
        settings, pool = self.spec.data.online_batch, len(batch["input_ids"])
        size = min(self.spec.train.batch_size, pool)
        was_training = self.model.training
        self.model.eval()
        try:
            per_row, _ = self.compute_losses(batch)
        finally:
            self.model.train(was_training)
            self._step_extra, self._step_samples = {}, []  # scoring is not the step
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        tokens = self.model.get_input_embeddings()(batch["input_ids"]).to(torch.float32)
        embeddings = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        picked, _ = pick_batch(per_row.float(), embeddings, size, settings.diversity_weight)
        rows = torch.tensor(picked, device=batch["input_ids"].device)
        self.log_step_metrics(
            {"select/pool_loss": per_row.mean(), "select/picked_loss": per_row[rows].mean()}
        )
        return {
            key: value[rows] if torch.is_tensor(value) and len(value) == pool else value
            for key, value in batch.items()
        }

    def step_without_backward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step of an optimizer that evaluates the loss itself
        (``OptimizerInfo.trains_without_backward``, MeZO): it calls the closure at each point
        it probes (the micro-batch's loss, with no graph). Returns the probes' mean loss and
        per-example terms, what the step measured."""
        probes: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []

        def loss_at_current_weights() -> torch.Tensor:
            per_example, terms = self.compute_losses(batch)
            probes.append((per_example.mean(), terms))
            return probes[-1][0]

        with torch.no_grad():
            self.optimizers().step(closure=loss_at_current_weights)
        # Manual optimisation: Lightning leaves the schedule to the step.
        self.lr_schedulers().step()
        loss = torch.stack([loss for loss, _ in probes]).mean()
        terms = {
            name: torch.stack([probe_terms[name] for _, probe_terms in probes]).mean(0)
            for name in probes[0][1]
        }
        return loss, terms

    def batch_sampler(self, **placement) -> GlobalBatchSampler:
        """The training batches' row indices; ``placement`` is this process's rank,
        world_size and start_micro_step."""
        t, online = self.spec.train, self.spec.data.online_batch
        return GlobalBatchSampler(
            n_rows=len(self.encoded),
            # With online batches each step draws a pool; pick_online keeps batch_size rows.
            batch_size=t.batch_size * (online.pool_factor if online is not None else 1),
            micro_steps=t.steps * t.grad_accum,
            seed=t.seed,
            lengths=self.batch_lengths(),
            **placement,
        )

    def row_lengths(self) -> list[int]:
        """Each training row's length as ``train.group_by_length`` groups it (a pair: its longer
        completion, see :func:`~workbench.data.batches.row_length`)."""
        return [row_length(row) for row in self.encoded]

    def batch_lengths(self) -> list[int] | None:
        """What the batch sampler groups by: :meth:`row_lengths`, or None when not grouping."""
        return self.row_lengths() if self.spec.train.group_by_length else None

    def train_dataloader(self):
        sampler = self.batch_sampler(
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            start_micro_step=self.start_micro_step,
        )
        return DataLoader(
            _Indexed(self.encoded), batch_sampler=sampler, num_workers=0, collate_fn=self.collate
        )

    def on_save_checkpoint(self, checkpoint) -> None:
        # Lightning saves model, optimizer, scheduler and loop counters; the RNG states make a
        # resumed run draw the same random numbers as an uninterrupted one.
        # Plain tensors, lists and numbers only: checkpoints load with
        # torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["workbench"] = {
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": [
                name,
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(cached),
            ],
        }

    def on_load_checkpoint(self, checkpoint) -> None:
        state = checkpoint.get("workbench")
        if state:
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            name, keys, pos, has_gauss, cached = state["numpy_rng"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))

    def configure_optimizers(self):
        t = self.spec.train
        o = self.spec.optimizer.for_train(t)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = registry.resolve(components.OPTIMIZERS[o.name].build)(params, o)
        factor = registry.resolve(components.SCHEDULERS[t.scheduler.name].factor)
        settings = t.scheduler.model_dump(exclude={"name"})
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: factor(step, t.warmup_steps, t.steps, **settings)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _Indexed(torch.utils.data.Dataset):
    """Encoded rows with their positions, so a batch knows which rows it holds (for the
    precomputed reference log-probs)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return i, self.rows[i]
