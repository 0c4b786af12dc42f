"""What both sides of ``benchmarks/vs_trl.py`` read: a local model folder and a data file.

No model hub is reachable, so the model is a randomly initialised Llama saved with
``save_pretrained`` next to a 32,000-entry tokenizer. The tokenizer is the tiny base's
byte-level BPE trained on the built-in tasks' text (``workbench.models.tiny``); that text has only
a few hundred distinct tokens, so the rest of the 32,000 ids are unused entries. They cost
the loss head exactly what used ones do (every row of the head is multiplied either way),
which is what a 32k vocabulary means for a training step.

The DPO data are the workbench's own preference pairs of a built-in task (the correct
completion against a corrupted one), written as prompt/chosen/rejected JSONL. A task row is
about 25 tokens, so each prompt is preceded by solved examples of the same task (a few-shot
prompt) until the longer completion reaches the benchmark's sequence length: the rows then
hold ``seq`` tokens, as a real preference dataset with long prompts does. The GRPO data are
the task's prompts as they are (about 15 tokens; the completions are generated).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

VOCAB = 32_000
TASK = "order"
SHOT_SEPARATOR = "\n"


def build_tokenizer():
    """The tiny base's BPE (trained on the built-in tasks' text), its vocabulary padded with
    unused entries to :data:`VOCAB` ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from workbench.models import tiny

    trained = tiny.train_tokenizer(tiny.corpus_rows(seed=0), vocab_size=VOCAB)
    state = json.loads(trained.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(len(vocab))), "expected contiguous ids"
    for token_id in range(len(vocab), VOCAB):
        vocab[f"<unused{token_id}>"] = token_id
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
    )


def build_model_folder(folder: Path, *, hidden: int, layers: int, heads: int, seq: int) -> int:
    """Save a random Llama (tied embeddings, SwiGLU width 3 x hidden) and the tokenizer to
    ``folder``; returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=max(seq, 256),
                         tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def few_shot_pairs(tokenizer, n_pairs: int, seq: int, seed: int = 0) -> list[dict]:
    """``n_pairs`` built-in preference pairs of :data:`TASK`, each prompt led by as many solved
    examples as fit in ``seq`` tokens with the longer completion, a start and an end token."""
    from workbench.data.sources import load_rows
    from workbench.data.tasks import TASKS
    from workbench.spec.run_spec import DataSpec

    pairs, _ = load_rows(
        DataSpec(source=TASK, train_size=n_pairs, eval_size=1), seed, row_kind="preference"
    )
    solved = [row.prompt + row.completion for row in TASKS[TASK].rows(2000, seed=seed + 1)]
    rng = random.Random(seed)

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    records = []
    for pair in pairs:
        budget = seq - 2 - max(length(pair.chosen), length(pair.rejected)) - length(pair.prompt)
        shots: list[str] = []
        while True:
            shot = rng.choice(solved) + SHOT_SEPARATOR
            cost = length(shot)
            if cost > budget:
                break
            shots.append(shot)
            budget -= cost
        records.append(
            {
                "prompt": "".join(shots) + pair.prompt,
                "chosen": pair.chosen,
                "rejected": pair.rejected,
            }
        )
    return records


def task_prompts(n_rows: int, seed: int = 0) -> list[dict]:
    """``n_rows`` rows of :data:`TASK` as prompt/completion records (GRPO reads the prompts;
    the completion is there because the workbench reads prompts from that format)."""
    from workbench.data.tasks import TASKS

    return [
        {"prompt": row.prompt, "completion": row.completion}
        for row in TASKS[TASK].rows(n_rows, seed=seed)
    ]


def write_pairs(path: Path, records: list[dict]) -> None:
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def read_pairs(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]
