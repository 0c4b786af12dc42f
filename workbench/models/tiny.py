"""The built-in tiny base model: a local BPE tokenizer and a small Llama, pretrained briefly.

No model hub is needed: the tokenizer is trained with ``tokenizers`` on the built-in task
corpus, the model is a ``LlamaConfig`` decoder pretrained for a few hundred steps on the same
corpus (never on held-out prompts), then cached under the workbench cache keyed by its config
and seed. A second use loads it from the cache in seconds. The base "speaks" the tasks but
leaves room to improve, which is what a fine-tuning demo needs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from workbench.data.encode import collate
from workbench.data.rows import Row
from workbench.data.tasks import TASKS
from workbench.models.cached_build import build_once
from workbench.spec.paths import cache_dir

# Bump when the corpus or the build recipe changes, so stale caches are not reused.
# "2": the build runs on BUILD_THREADS torch threads (before, on however many the process had).
# "3": the tokenizer adds its start token to plain text itself (a post-processor), as Llama's
# does: the encoding no longer prepends it by hand, so a cached tokenizer without it would lose
# the start token the base was pretrained with. The weights are the same as version 2's.
RECIPE_VERSION = "3"
# Torch splits its reductions and matrix products by thread count, so the same seed pretrained
# on one thread and on two gives different bases (measured: held-out `reverse` exact match
# 0.667 against 0.167). The build always uses this many, whatever the machine or
# OMP_NUM_THREADS, so every machine with the same CPU kind builds the same base.
BUILD_THREADS = 2
PRETRAIN_ROWS_PER_TASK = 3000
SPECIALS = ("<pad>", "<s>", "</s>")
BASE_INFO_FILE = "workbench_base.json"


def cache_key(tiny_spec) -> str:
    payload = json.dumps(
        {"recipe": RECIPE_VERSION, **tiny_spec.model_dump(mode="json")}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_path(tiny_spec) -> Path:
    return cache_dir() / "tiny" / cache_key(tiny_spec)


def corpus_rows(seed: int) -> list[Row]:
    """Pretraining rows: the training split (held-out prompts excluded) of every task that
    pretrains (``Task.pretrain``), shuffled."""
    rows: list[Row] = []
    for task in (t for t in TASKS.values() if t.pretrain):
        # Up to this many: arithmetic has only ~2,400 distinct prompts outside the pool.
        rows += task.training_rows(PRETRAIN_ROWS_PER_TASK, seed=seed + 7919)
    random.Random(seed).shuffle(rows)
    return rows


def train_tokenizer(rows: list[Row], vocab_size: int):
    """A byte-level BPE on ``rows``' text that, like a Llama tokenizer, starts plain text with
    ``<s>`` itself (the base is pretrained on ``<s> text </s>``); completions are tokenised
    without special tokens and closed by ``</s>`` by the encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator((r.prompt + r.completion for r in rows), trainer=trainer)
    bos = SPECIALS[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
    )


def build_model(tiny_spec, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny_spec.hidden_size,
        intermediate_size=tiny_spec.hidden_size * 2,
        num_hidden_layers=tiny_spec.layers,
        num_attention_heads=tiny_spec.heads,
        num_key_value_heads=tiny_spec.heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seeded without touching the caller's random state: a run that builds the base on a cold
    # cache must draw the same numbers afterwards (e.g. LoRA's initialisation) as one that
    # loads it from the cache.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_spec.seed)
        return LlamaForCausalLM(config)


def pretrain(model, tokenizer, rows: list[Row], tiny_spec, progress=None) -> list[float]:
    """Plain causal-LM pretraining on whole rows (prompt + completion + end token).

    A hand-written loop rather than Lightning: it is a few lines, has no per-run tracking,
    and keeps the base build fast.
    """
    from workbench.data.encode import Encoded

    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    encoded = []
    for r in rows:
        ids = (
            [bos]
            + tokenizer(r.prompt + r.completion, add_special_tokens=False)["input_ids"]
            + [eos]
        )
        encoded.append(Encoded(ids, list(ids), [0] * len(ids)))
    gen = torch.Generator().manual_seed(tiny_spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tiny_spec.pretrain_lr, weight_decay=0.01)
    steps, warmup = tiny_spec.pretrain_steps, max(1, tiny_spec.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
        ),
    )
    model.train()
    losses: list[float] = []
    order = torch.randperm(len(encoded), generator=gen).tolist()
    cursor = 0
    for step in range(steps):
        if cursor + tiny_spec.pretrain_batch > len(order):
            order, cursor = torch.randperm(len(encoded), generator=gen).tolist(), 0
        batch = collate(
            [encoded[i] for i in order[cursor : cursor + tiny_spec.pretrain_batch]],
            tokenizer.pad_token_id,
        )
        cursor += tiny_spec.pretrain_batch
        labels = batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    model.eval()
    return losses


def base_exact_match(model, tokenizer, n_eval: int = 48) -> dict[str, float]:
    """Held-out exact match of the base per pretraining task (greedy decoding)."""
    from workbench.data.tasks import exact_match
    from workbench.models.generation import generate

    scores = {}
    for name, task in ((n, t) for n, t in TASKS.items() if t.pretrain):
        rows = task.heldout(n_eval)
        preds = generate(model, tokenizer, rows, max_new_tokens=24)
        scores[name] = sum(exact_match(p, r) for p, r in zip(preds, rows)) / len(rows)
    return scores


@contextmanager
def torch_threads(count: int):
    """Runs the block on ``count`` torch threads, restoring the caller's count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_or_load(tiny_spec, log=print):
    """The cached tiny base (model, tokenizer, info), building it on first use, once per cache
    however many processes ask at the same time (:func:`~workbench.models.cached_build.build_once`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = build_once(
        cached_path(tiny_spec),
        BASE_INFO_FILE,
        lambda folder, say: _build(tiny_spec, folder, say),
        what="the tiny base",
        log=log,
    )
    info = json.loads((target / BASE_INFO_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, use_safetensors=True)
    model.train()
    return model, tokenizer, info


def _build(tiny_spec, folder: Path, say) -> None:
    """Build, pretrain and score the base, and save it into ``folder``."""
    started = time.perf_counter()
    say(f"Building the tiny base model (once; cached in {cached_path(tiny_spec)}) ...")
    rows = corpus_rows(tiny_spec.seed)
    tokenizer = train_tokenizer(rows, tiny_spec.vocab_size)
    model = build_model(tiny_spec, tokenizer)

    def progress(step, total, loss):
        if step == total or step % max(1, total // 20) == 0:
            say(f"  pretraining step {step}/{total}  loss {loss:.3f}")

    with torch_threads(BUILD_THREADS):
        losses = pretrain(model, tokenizer, rows, tiny_spec, progress)
        say("  scoring the base on the held-out prompts ...")
        scores = base_exact_match(model, tokenizer)
    info = {
        "key": cache_key(tiny_spec),
        "spec": tiny_spec.model_dump(mode="json"),
        "params": sum(p.numel() for p in model.parameters()),
        "pretrain_final_loss": losses[-1] if losses else None,
        "build_s": round(time.perf_counter() - started, 1),
        "exact_match": scores,
    }
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / BASE_INFO_FILE).write_text(json.dumps(info, indent=2))  # last: marks it built
    say(
        "  base exact match per task: "
        + ", ".join(f"{k} {v:.0%}" for k, v in scores.items())
        + f"  ({info['build_s']} s)"
    )
