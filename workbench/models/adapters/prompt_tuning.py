"""Prompt tuning through peft: learned embeddings of virtual tokens put before every
sequence's own; the whole model is frozen."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.models.adapters.peft_wrapping import VirtualTokenAdapterParams, wrap


class PromptTuningAdapterParams(VirtualTokenAdapterParams):
    """Prompt tuning (peft ``PromptTuningConfig``): the input embeddings become
    ``[P; E(x)]``, with ``P`` (num_virtual_tokens x hidden) the only trained parameters."""

    init: Literal["sample_vocab", "random"] = Field(
        "sample_vocab",
        description="How P starts: embeddings of tokens drawn from the vocabulary, or random.",
    )


def apply_prompt_tuning(model, params: PromptTuningAdapterParams):
    from peft import PromptTuningConfig, PromptTuningInit

    init = {"sample_vocab": PromptTuningInit.SAMPLE_VOCAB, "random": PromptTuningInit.RANDOM}
    config = PromptTuningConfig(
        num_virtual_tokens=params.num_virtual_tokens, prompt_tuning_init=init[params.init]
    )
    adapted = wrap(model, config)
    adapted.register_forward_hook(_drop_virtual_positions, with_kwargs=True)
    return adapted


def _drop_virtual_positions(model, args, kwargs, output):
    """peft returns a logit row for each virtual token before the sequence's own; the methods
    read logit t as the prediction after token t of their batch, so those rows are dropped.
    (Switched off, the model returns the sequence's rows only, and nothing is dropped.)"""
    ids = kwargs.get("input_ids", args[0] if args else None)
    width = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
    extra = output.logits.shape[1] - width
    if extra > 0:
        output.logits = output.logits[:, extra:]
    return output
