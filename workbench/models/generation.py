"""Greedy or sampled completions of prompt rows: what a model answers.

Used by the built-in base's quality check after it is built, by evaluation and by the
benchmarks; left-padded batches, only the new tokens decoded, the global RNG left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.data.encode import prompt_ids
from workbench.data.rows import ChatRow, Row
from workbench.models.few_row_products import few_row_products
from workbench.models.grouped_attention import generation_heads


@torch.no_grad()
def generate(
    model,
    tokenizer,
    rows: Sequence[Row | ChatRow],
    *,
    max_new_tokens: int = 24,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Completions for ``rows`` (left-padded batches; only the new tokens are decoded)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    outputs: list[str] = []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [prompt_ids(tokenizer, r) for r in rows[start : start + batch_size]]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, ids in enumerate(chunk):
                input_ids[i, width - len(ids) :] = torch.tensor(ids)
                attention[i, width - len(ids) :] = 1
            kwargs = {"do_sample": do_sample}
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            with generation_heads(model), few_row_products(model):
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=max_new_tokens,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=pad,
                    **kwargs,
                )
            new = out[:, width:]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return outputs
