"""The shared base of every method's LightningModule.

It owns what all methods share: the model, the batches, the optimizer and schedule, and
the per-step metrics. A method subclass only implements :meth:`compute_losses`, turning a
batch into per-example losses by calling functions from :mod:`workbench.losses`.
"""

from __future__ import annotations

import math
import random
import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from workbench.data.batches import GlobalBatchSampler
from workbench.data.encode import IGNORE_INDEX, collate


class WorkbenchModule(L.LightningModule):
    def __init__(self, spec, model, tokenizer, encoded, kernel_usage=None):
        super().__init__()
        self.kernel_usage = kernel_usage  # set when the model is patched with fused kernels
        self._kernels_checked = False
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.encoded = encoded
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        self._step_started = time.perf_counter()
        self._accum: dict[str, float] = {}
        self._accum_n = 0
        self.start_micro_step = 0  # set when resuming from a checkpoint

    # -- what a method implements -------------------------------------------------------
    def compute_losses(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-example total loss (B,) and per-example terms by name."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------
    def logits(self, batch) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def token_stats(self, batch, need_eos: bool = False):
        """(log p of each label token, mask of scored positions, log p(eos) or None), all (B, T-1).

        Both log-probs are 0 outside the scored positions (no loss term reads them there).

        With fused kernels the log-probs come from the fused head on the last hidden states
        (no B x T x V logits); otherwise from the model's logits. Either way the loss terms
        are computed by the same functions of :mod:`workbench.losses`.
        """
        labels = batch["labels"]
        mask = labels[:, 1:] != IGNORE_INDEX
        if self.kernel_usage is None:
            logits = self.logits(batch)
            logp_all = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
            logp = logp_all.gather(-1, labels[:, 1:].masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1) * mask
            return logp, mask, (logp_all[..., self.eos_id] * mask if need_eos else None)
        from workbench.kernel_patch import head_logprobs

        before = self.kernel_usage.calls.copy()
        targets = [labels[:, 1:]]
        if need_eos:
            # Ignored outside the scored positions: the fused head skips those rows.
            targets.append(torch.where(mask, self.eos_id, IGNORE_INDEX))
        outputs = head_logprobs(self.model, self.kernel_usage, batch["input_ids"],
                                batch["attention_mask"], targets)
        if not self._kernels_checked:
            self.kernel_usage.check_forward(before)
            self._kernels_checked = True
        return outputs[0] * mask, mask, (outputs[1] if need_eos else None)

    def training_step(self, batch, batch_idx):
        per_example, terms = self.compute_losses(batch)
        loss = per_example.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {float(loss.detach())} at step {self.global_step}; lower "
                "optimizer.lr, enable train.grad_clip or check the data"
            )
        # Accumulate metrics over the micro-batches of one optimizer step.
        values = {"train/loss": float(loss.detach())}
        values.update({f"train/{k}": float(v.detach().mean()) for k, v in terms.items()})
        values["perf/tokens"] = float(batch["attention_mask"].sum())
        for k, v in values.items():
            self._accum[k] = self._accum.get(k, 0.0) + v
        self._accum_n += 1
        return loss

    def end_of_step_metrics(self) -> dict[str, float]:
        """Metrics of the optimizer step just taken (averaged over micro-batches and ranks).

        Called by the tracking callback on every rank at each optimizer-step boundary (it
        all-reduces under DDP, so every rank must call it).
        """
        now = time.perf_counter()
        step_s = now - self._step_started
        self._step_started = now
        n = max(self._accum_n, 1)
        names = sorted(self._accum)
        values = torch.tensor([self._accum[k] / n for k in names], dtype=torch.float64)
        if self.trainer.world_size > 1:
            # Every rank saw its own slice of the global batch: log the global mean, so a DDP
            # run's curves are comparable with a single-process run's.
            values = self.trainer.strategy.reduce(values.to(self.device), reduce_op="mean").cpu()
        averaged = dict(zip(names, values.tolist()))
        metrics = {k: v for k, v in averaged.items() if k != "perf/tokens"}
        tokens = averaged.get("perf/tokens", 0.0) * self.trainer.world_size
        metrics["perf/step_s"] = step_s
        metrics["perf/tokens_per_s"] = tokens / step_s if step_s > 0 else math.nan
        metrics["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        self._accum, self._accum_n = {}, 0
        return metrics

    def train_dataloader(self):
        t = self.spec.train
        sampler = GlobalBatchSampler(
            n_rows=len(self.encoded), batch_size=t.batch_size, micro_steps=t.steps * t.grad_accum,
            seed=t.seed, rank=self.trainer.global_rank, world_size=self.trainer.world_size,
            start_micro_step=self.start_micro_step,
        )
        return DataLoader(self.encoded, batch_sampler=sampler, num_workers=0,
                          collate_fn=lambda rows: collate(rows, self.pad_id))

    def on_save_checkpoint(self, checkpoint) -> None:
        # Lightning saves model, optimizer, scheduler and loop counters; the RNG states make a
        # resumed run draw the same random numbers as an uninterrupted one.
        # Plain tensors, lists and numbers only: checkpoints load with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["workbench"] = {
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        }

    def on_load_checkpoint(self, checkpoint) -> None:
        state = checkpoint.get("workbench")
        if state:
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            name, keys, pos, has_gauss, cached = state["numpy_rng"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))

    def configure_optimizers(self):
        o, t = self.spec.optimizer, self.spec.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        elif o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        warmup, total = t.warmup_steps, t.steps

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            if t.scheduler == "linear":
                return max(0.0, 1.0 - progress)
            if t.scheduler == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
