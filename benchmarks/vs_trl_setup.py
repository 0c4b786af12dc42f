"""What both sides of ``benchmarks/vs_trl.py`` read: a local model folder and a data file.

Two shapes. ``135m`` (the default, where users are): SmolLM2-135M's Llama configuration with
random weights and a word-level tokenizer of its 49,152-entry vocabulary
(``train_options.build_word_level_model``: one word, one token), and chat-shaped rows drawn by
:func:`chat_rows`, :func:`chat_pairs` and :func:`chat_prompts`: a prompt and a reply of
Zipf-distributed words whose lengths vary from row to row as a chat dataset's do, the prompt
30-60% of each row's tokens. ``fewshot-30m`` (the earlier comparison, kept for reference): the
model and few-shot data described below.

No model hub is reachable, so the ``fewshot-30m`` model is a randomly initialised Llama saved with
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
import math
import random
from pathlib import Path

from workbench_child import offered

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
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(seq, 256),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
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


PROMPT_SHARE = (0.3, 0.6)
# Row lengths (prompt and reply, in tokens) are log-normal around this share of the longest
# allowed, clipped to [MIN_SHARE, 1] of it: most rows well short of the limit, a few at it.
MEDIAN_SHARE, LENGTH_SIGMA, MIN_SHARE = 0.55, 0.45, 0.15


def _row_length(rng: random.Random, longest: int) -> int:
    drawn = rng.lognormvariate(math.log(MEDIAN_SHARE * longest), LENGTH_SIGMA)
    return max(round(MIN_SHARE * longest), min(longest, round(drawn)))


def _text(rng: random.Random, words: list[str], weights: list[float], n: int) -> str:
    return " ".join(rng.choices(words, weights, k=n))


def _split(rng: random.Random, tokens: int) -> tuple[int, int]:
    """(prompt, reply) tokens of a row of ``tokens``, the prompt's share drawn from
    :data:`PROMPT_SHARE`, each part at least one token."""
    prompt = min(tokens - 1, max(1, round(tokens * rng.uniform(*PROMPT_SHARE))))
    return prompt, tokens - prompt


def chat_rows(words, weights, n_rows: int, longest: int, seed: int = 0) -> list[dict]:
    """``n_rows`` prompt/completion records of at most ``longest`` tokens (one token left for
    the end token both libraries append), the prompt 30-60% of each."""
    rng = random.Random(seed)
    records = []
    for _ in range(n_rows):
        prompt, reply = _split(rng, _row_length(rng, longest - 1))
        records.append(
            {
                "prompt": _text(rng, words, weights, prompt),
                "completion": " " + _text(rng, words, weights, reply),
            }
        )
    return records


def chat_pairs(words, weights, n_pairs: int, longest: int, seed: int = 0) -> list[dict]:
    """``n_pairs`` prompt/chosen/rejected records: prompt and chosen drawn as
    :func:`chat_rows`' rows, the rejected reply 0.6-1.4 times the chosen one's length (within
    ``longest`` with the prompt)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n_pairs):
        prompt, chosen = _split(rng, _row_length(rng, longest - 1))
        rejected = max(1, min(longest - 1 - prompt, round(chosen * rng.uniform(0.6, 1.4))))
        records.append(
            {
                "prompt": _text(rng, words, weights, prompt),
                "chosen": " " + _text(rng, words, weights, chosen),
                "rejected": " " + _text(rng, words, weights, rejected),
            }
        )
    return records


def chat_prompts(words, weights, n_rows: int, completion: int, seed: int = 0) -> list[dict]:
    """``n_rows`` prompts for GRPO, each 30-60% of the tokens of itself and a ``completion``-token
    reply (the prompt/completion format the workbench reads; GRPO generates the reply)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n_rows):
        share = rng.uniform(*PROMPT_SHARE)
        prompt = max(1, round(completion * share / (1 - share)))
        records.append(
            {
                "prompt": _text(rng, words, weights, prompt),
                "completion": " " + _text(rng, words, weights, completion),
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


def train_rows(path: str, eval_fraction: float) -> tuple[list[dict], int]:
    """The records of ``path`` the workbench trains on (its seeded split of the file, which TRL
    is given too) and its held-out count."""
    from workbench.data.formats import split_rows

    train, held_out = split_rows(read_pairs(path), eval_fraction, seed=0)
    return train, len(held_out)


# Each side's name for the precisions compared: mixed bf16 autocast over float32 weights on
# both (Lightning's bf16-mixed; TRL's bf16=True through accelerate).
WORKBENCH_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


def workbench_spec(
    job: dict, store: str, source: str, method, objective: dict, max_length: int, **sections
) -> dict:
    """The spec of a workbench side: the model folder, the rows of ``source`` TRL trains on
    too (held-out rows for ``objective`` apart), ``method``, the job's steps, batch, learning
    rate and precision, the schedule, clipping and AdamW of :func:`trl_run_settings`,
    ``kernels: auto``, ``train.padding_free`` as the job asks where the spec offers it, an
    evaluation only at the end; ``sections`` added (an adapter); then ``job["workbench_spec"]``
    (``--workbench-spec``) merged in, section by section."""
    train, held_out = train_rows(source, job["eval_fraction"])
    total = job["warmup"] + job["steps"]
    spec = {
        "model": {"name": job["model"]},
        "data": {"source": source, "train_size": len(train),
                 "eval_fraction": job["eval_fraction"], "eval_size": held_out},
        "method": method,
        "optimizer": {"name": "adamw", "lr": job["lr"], "weight_decay": 0.0},
        "objectives": [objective],
        "train": {"steps": total, "batch_size": job["batch"], "max_length": max_length,
                  "eval_every": total, "scheduler": "constant", "grad_clip": 1.0,
                  "precision": WORKBENCH_PRECISION[job["precision"]], "seed": 0,
                  **offered({"padding_free": job["padding_free"]})},
        # eval.batch_size is also the batch of the reference precomputation (DPO): the
        # batch, as TRL's precompute_ref_batch_size defaults to.
        "eval": {"batch_size": job["batch"], "samples_logged": 0, "max_new_tokens": 1},
        "kernels": "auto",
        "tracking": {"uri": store, "experiment": f"vs-trl-{job['method']}", "log_model": False},
        **sections,
    }  # fmt: skip
    for section, value in job.get("workbench_spec", {}).items():
        merged = isinstance(value, dict) and isinstance(spec.get(section), dict)
        spec[section] = {**spec[section], **value} if merged else value
    return spec


def workbench_note(job: dict, kernels: str, what: str) -> str:
    """A workbench row's configuration: precision, ``what``, kernels, padding-free, and what
    ``--workbench-spec`` changed."""
    padding_free = offered({"padding_free": job["padding_free"]}).get("padding_free", False)
    changed = job.get("workbench_spec")
    return (f"{precision_note(job['precision'] == 'bf16')}, {what}kernels: "
            f"{(changed or {}).get('kernels', 'auto')} ({kernels}), "
            f"padding-free {'on' if padding_free else 'off'}"
            + (f", {json.dumps(changed)}" if changed else ""))  # fmt: skip


def trl_run_settings(job: dict, output_dir: str) -> dict:
    """The TrainingArguments every TRL config here shares: the schedule, clipping and AdamW
    of the workbench side, the job's precision, gradient checkpointing off (TRL's SFT and DPO
    turn it on by default; the workbench leaves it off), a CPU, no saving, no reporting."""
    return dict(
        output_dir=output_dir,
        max_steps=job["warmup"] + job["steps"],
        learning_rate=job["lr"],
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        weight_decay=0.0,
        seed=0,
        bf16=job["precision"] == "bf16",
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=job["warmup"] + job["steps"],
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def precision_note(bf16: bool) -> str:
    return "bfloat16 mixed" if bf16 else "float32"
