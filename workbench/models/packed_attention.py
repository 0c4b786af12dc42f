"""Which attention keeps packed rows apart (``train.padding_free``), and how.

A padding-free batch (:mod:`workbench.data.packing`) gives the model position ids that
restart at each row and no attention mask. transformers (5.x) reads the rows off those
position ids in two ways, by the model's attention implementation:

- a mask (``sdpa``, ``eager``, ``flex_attention``): its mask builder turns each run of
  increasing position ids into a block of a block-diagonal causal mask, in every sequence
  of the batch (``masking_utils.find_packed_sequence_indices``). This is the CPU path. The
  attention still computes every query against every key of its sequence (the mask zeroes
  the cross-row ones), so a packed sequence costs the square of its width: packing into
  sequences no wider than the batch's longest row keeps that cost at the padded batch's.
- varlen kernels (``flash_attention_2/3/4``): the row boundaries become the kernel's
  cumulative sequence lengths and no cross-row work is done, but transformers reads them
  from the position ids only when the batch is one sequence.

Any other implementation (a paged or custom kernel) would attend across rows, so a run with
one refuses ``train.padding_free`` (:func:`packing_problem`).
"""

from __future__ import annotations

MASKED = ("sdpa", "eager", "flex_attention")
VARLEN = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def attention_of(model) -> str | None:
    """The transformers attention implementation ``model`` (or the model a PEFT wrapper
    holds) runs, or None for a model without a transformers config."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def packing_problem(model) -> str | None:
    """Why ``model`` cannot train on packed rows without attending across them, or None."""
    attention = attention_of(model)
    if attention in MASKED or attention in VARLEN:
        return None
    kind = type(model).__name__
    if attention is None:
        return f"{kind} has no transformers attention implementation to confine to each row"
    return (
        f"{kind} runs attention '{attention}', which does not read row boundaries from "
        f"position ids (those that do: {', '.join(MASKED + VARLEN)})"
    )


def packs_one_sequence(model) -> bool:
    """Whether ``model``'s attention keeps rows apart only when all rows are one sequence
    (the varlen kernels)."""
    return attention_of(model) in VARLEN
