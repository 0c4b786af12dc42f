"""The reference model's log-probs, one strategy per reference need.

A method declares what reference it needs (``MethodInfo.reference``, one of
``workbench.spec.registry.REFERENCE_KINDS``); the run builds that need's strategy from the
base model before its adapter is applied (:func:`build_reference`) and hands it to the
method's module at construction (``WorkbenchModule(..., reference=...)``). The module asks
it for log-probs and never branches on the need's name:

- :class:`NoReference`: the method reads none (its log-probs are None);
- :class:`FrozenCopy`: a frozen copy of the base, run beside the policy every step;
- :class:`AdapterDisabled`: the policy with its adapter switched off, no second copy;
- :class:`Precomputed`: the base's log-prob of every row, computed once before training
  (with the policy as it is then, adapter switched off) and looked up by row index.

Each takes the module it serves as an argument, for the forward pass, the device and which
rows (``module.split``) a batch comes from.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from workbench.data.batches import row_length
from workbench.methods.sft import losses as sft_losses
from workbench.spec import registry


class Reference:
    """What every strategy answers (the base: no reference model)."""

    name = "none"
    # Whether the run must call :meth:`prepare` with the encoded rows before training.
    precomputes = False

    def prepare(self, module, encoded_by_split: dict[str, list], batch_size: int) -> None:
        """Before training: compute what the strategy keeps (only :class:`Precomputed`)."""

    def token_logps(self, module, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-token log p_ref of ``batch``'s label tokens and the mask of scored positions,
        both (B, T-1), without gradient; None without a reference model."""
        return None

    def sequence_logps(self, module, batch) -> torch.Tensor | None:
        """log p_ref(completion | prompt) of every row of ``batch`` (B,), without gradient;
        None without a reference model."""
        token = self.token_logps(module, batch)
        return None if token is None else sft_losses.sequence_logps(*token)


class NoReference(Reference):
    """No reference model: nothing is kept and nothing is computed."""


class FrozenCopy(Reference):
    """A frozen copy of the base model, run on each batch beside the policy."""

    name = "frozen_copy"

    def __init__(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def token_logps(self, module, batch):
        # The rows as the policy's pass lays them out (packed with train.padding_free).
        layout = module.rows_layout(batch)
        logits = self.model(**layout.model_inputs()).logits
        logp, mask = sft_losses.token_logprobs(module.scored_logits(logits), layout.labels)
        return layout.unpack(logp), layout.unpack(mask)


class AdapterDisabled(Reference):
    """The policy itself with its adapter switched off: the base, with no second copy."""

    name = "adapter_disabled"

    @torch.no_grad()
    def token_logps(self, module, batch):
        disabled = getattr(module.model, "disable_adapter", None)
        with disabled() if disabled is not None else contextlib.nullcontext():
            # Through the fused head where the policy has one (token_stats), so the reference
            # pass never builds the batch x sequence x vocabulary logits either (16 rows of
            # 256 tokens at a 32k vocabulary: 0.5 GiB, and as much again for their
            # log-softmax).
            logp, mask, _ = module.token_stats(batch)
        return logp, mask


class PolicyAsItIs(Reference):
    """The policy as it is, adapter on: the base before the first update where the adapter
    starts as the identity but cannot be switched off (PiSSA's base holds a residual)."""

    name = "policy"

    @torch.no_grad()
    def token_logps(self, module, batch):
        logp, mask, _ = module.token_stats(batch)
        return logp, mask


class Precomputed(Reference):
    """The base's log-prob of every row of each split, computed once before training.

    Computed with the policy before its first update (its adapter switched off where it can
    be; else as it is, which an adapter's initialisation makes the base), so it is the
    base's; then each batch looks its rows up by their index. Only whole rows are stored, so
    per-token log-probs are not available from it.
    """

    name = "precomputed"
    precomputes = True

    def __init__(self, adapter_can_be_disabled: bool = True) -> None:
        self.tables: dict[str, torch.Tensor] = {}
        self.base = AdapterDisabled() if adapter_can_be_disabled else PolicyAsItIs()

    def prepare(self, module, encoded_by_split, batch_size):
        for split, encoded in encoded_by_split.items():
            if encoded:
                self.precompute(split, module, encoded, batch_size)

    def precompute(self, split: str, module, encoded, batch_size: int) -> None:
        """Store the base's log-probs of every row of ``encoded`` as ``split``'s table."""
        base = self.base
        was_training = module.model.training
        module.model.eval()
        # Each batch pads to its longest row: rows of like length batched together waste less
        # (the table is indexed by row, so the order it is filled in does not matter).
        order = sorted(range(len(encoded)), key=lambda i: row_length(encoded[i]))
        table: list[torch.Tensor | None] = [None] * len(encoded)
        for start in range(0, len(order), batch_size):
            items = [(i, encoded[i]) for i in order[start : start + batch_size]]
            batch = {k: v.to(module.device) for k, v in module.collate(items).items()}
            values = (
                base.sequence_logps(module, batch).cpu().reshape(-1, len(items)).T
            )  # (items, rows per item)
            for (i, _), value in zip(items, values):
                table[i] = value
        self.tables[split] = torch.stack(table)
        module.model.train(was_training)

    def token_logps(self, module, batch):
        raise RuntimeError(
            f"method '{module.info.name}' asked for per-token reference log-probs, and its "
            "reference is precomputed per row; declare reference 'adapter_disabled' or "
            "'frozen_copy' instead"
        )

    def sequence_logps(self, module, batch):
        table = self.tables[module.split].to(module.device)[batch["index"]]  # (n, rows per item)
        return table.T.reshape(-1)


def frozen_copy_of(model):
    """An independent, frozen copy of ``model`` in eval mode."""
    reference = copy.deepcopy(model)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


# -- the strategies of REFERENCE_KINDS: (base model before its adapter, AdapterParams) ---------


def no_reference(base_model, adapter) -> Reference:
    return NoReference()


def frozen_copy(base_model, adapter) -> Reference:
    return FrozenCopy(frozen_copy_of(base_model))


def adapter_disabled(base_model, adapter) -> Reference:
    # Nothing to switch off (a full fine-tune): keep the base aside instead.
    return AdapterDisabled() if adapter.can_be_disabled() else frozen_copy(base_model, adapter)


def precomputed(base_model, adapter) -> Reference:
    return Precomputed(adapter.can_be_disabled())


def build_reference(spec, base_model) -> Reference:
    """The reference strategy a run of ``spec`` needs (the method's declared need, as its
    parameters adjust it), built from the base model before its adapter is applied."""
    declared = registry.METHODS[spec.method.name].reference
    need = spec.method.reference_need(declared)
    return registry.resolve(registry.REFERENCE_KINDS[need].strategy)(base_model, spec.adapter)
