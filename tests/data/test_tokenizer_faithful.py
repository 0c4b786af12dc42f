"""The workbench's token ids are TRL's: SFT rows, preference rows and prompts, on real tokenizers.

Two tokenizers: SmolLM2-135M-Instruct's (no BOS on plain text, a ChatML chat template with a
default system prompt) and a Llama-style one that adds its BOS to plain text and has no chat
template (the tiny base's, whose post-processor adds ``<s>``). TRL's own processing gives the
expected ids: the datasets its SFTTrainer and DPOTrainer build, and GRPOTrainer's prompt
tokenisation. A user's prompt/completion rows are plain text on both sides; a built-in task's
rows are a user turn and an assistant turn where the tokenizer has a chat template.
"""

from __future__ import annotations

import warnings

import pytest

from workbench.data.encode import (
    IGNORE_INDEX,
    SEGMENT_IDS,
    encode_row,
    encode_rows,
    prompt_ids,
    renders_through_template,
)
from workbench.data.encode_pairs import encode_pairs
from workbench.data.pairs import preference_pairs
from workbench.data.rows import PreferenceRow, Row
from workbench.data.tasks import TASKS

trl = pytest.importorskip("trl")

# A user's rows: each prompt ends on a pre-tokenizer boundary and each completion starts with a
# space, as such data usually does (TRL tokenises prompt + completion as one string).
USER_PAIRS = [
    PreferenceRow("What is the capital of France?", " Paris.", " London."),
    PreferenceRow("Name a primary colour.", " Red.", " Green, maybe purple."),
    PreferenceRow("How many legs does a spider have?", " Eight.", " Six legs."),
    PreferenceRow("What is 2 + 2?", " 4", " 5"),
]
USER_ROWS = [pair.completion_row(pair.chosen) for pair in USER_PAIRS]
# Built-in task rows, one with an answer and an explanation segment.
TASK_ROWS = TASKS["arithmetic"].rows(2, seed=0) + TASKS["explain"].rows(2, seed=0)
TASK_PAIRS = preference_pairs(TASK_ROWS, seed=0)


@pytest.fixture(scope="module")
def smollm2(real_model_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_model_folder)


@pytest.fixture(scope="module")
def llama_style():
    """A tokenizer that starts plain text with its BOS (the tiny base's), no chat template."""
    from workbench.models.tiny import train_tokenizer

    return train_tokenizer(TASKS["sort"].rows(200, seed=0) + USER_ROWS, 320)


@pytest.fixture(params=["smollm2", "llama_style"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def _tiny_model(tokenizer):
    """A 1-layer random Llama over ``tokenizer``'s vocabulary: TRL's trainers need a model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _trl_args(config_class, tmp_path, **extra):
    return config_class(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        bf16=False,
        per_device_train_batch_size=2,
        dataloader_pin_memory=False,
        **extra,
    )


def _trl_dataset(trainer_class, config, tokenizer, records, **extra):
    """The training dataset ``trainer_class`` builds from ``records`` (its tokenised rows)."""
    from datasets import Dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(
            model=_tiny_model(tokenizer),
            args=config,
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            **extra,
        )
    return trainer


def _turns(prompt: str, completion: str) -> dict:
    """A task row as TRL's conversational prompt/completion record (the assistant's turn
    starts its own text, so the completion's leading space is not part of it)."""
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion.lstrip()}],
    }


def _sft_record(tokenizer, row: Row) -> dict:
    if renders_through_template(tokenizer, row):
        return _turns(row.prompt, row.completion)
    return {"prompt": row.prompt, "completion": row.completion}


def _pair_record(tokenizer, pair: PreferenceRow) -> dict:
    if renders_through_template(tokenizer, pair.completion_row(pair.chosen)):
        chosen, rejected = _turns(pair.prompt, pair.chosen), _turns(pair.prompt, pair.rejected)
        return {
            "prompt": chosen["prompt"],
            "chosen": chosen["completion"],
            "rejected": rejected["completion"],
        }
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}


@pytest.mark.parametrize("rows", [USER_ROWS, TASK_ROWS], ids=["user-rows", "task-rows"])
def test_sft_rows_are_sfttrainer_s(tokenizer, rows, tmp_path):
    from trl import SFTConfig, SFTTrainer

    trainer = _trl_dataset(
        SFTTrainer,
        _trl_args(SFTConfig, tmp_path),
        tokenizer,
        [_sft_record(tokenizer, row) for row in rows],
    )
    for row, theirs in zip(rows, trainer.train_dataset):
        ours = encode_row(tokenizer, row, max_length=512)
        assert ours.input_ids == theirs["input_ids"]
        # TRL's labels: its completion mask folded in (-100 over the prompt).
        assert ours.labels == theirs["labels"]


def test_plain_prompts_start_as_the_tokenizer_starts_them(smollm2, llama_style):
    # SmolLM2 adds nothing to plain text; the Llama-style tokenizer its BOS.
    row = USER_ROWS[0]
    assert prompt_ids(smollm2, row) == smollm2(row.prompt)["input_ids"]
    assert prompt_ids(smollm2, row)[0] != smollm2.bos_token_id
    assert prompt_ids(llama_style, row)[0] == llama_style.bos_token_id
    assert encode_row(llama_style, row, 512).prompt_start == 1


def test_task_rows_keep_their_segments_through_the_chat_template(smollm2):
    row = TASKS["explain"].rows(1, seed=3)[0]
    enc = encode_row(smollm2, row, max_length=512)

    def text_of(segment):
        return smollm2.decode([i for i, s in zip(enc.input_ids, enc.segments) if s == segment])

    assert text_of(SEGMENT_IDS["explanation"]) == row.segments[1][1]
    # The answer without its leading space, then the template's end of turn.
    assert text_of(SEGMENT_IDS["answer"]) == row.answer.lstrip() + "<|im_end|>\n"
    assert smollm2.decode(enc.input_ids[enc.prompt_start :]).startswith(row.prompt)


@pytest.mark.parametrize("pairs", [USER_PAIRS, TASK_PAIRS], ids=["user-pairs", "task-pairs"])
def test_preference_rows_are_dpotrainer_s(tokenizer, pairs, tmp_path):
    from trl import DPOConfig, DPOTrainer

    trainer = _trl_dataset(
        DPOTrainer,
        _trl_args(DPOConfig, tmp_path),
        tokenizer,
        [_pair_record(tokenizer, pair) for pair in pairs],
        ref_model=_tiny_model(tokenizer),
    )
    ours, _ = encode_pairs(tokenizer, pairs, max_length=512)
    for pair, theirs in zip(ours, trainer.train_dataset):
        assert pair.chosen.input_ids == theirs["prompt_ids"] + theirs["chosen_ids"]
        assert pair.rejected.input_ids == theirs["prompt_ids"] + theirs["rejected_ids"]
        assert pair.chosen.labels.count(IGNORE_INDEX) == len(theirs["prompt_ids"])


@pytest.mark.parametrize("rows", [USER_ROWS, TASK_ROWS], ids=["user-rows", "task-rows"])
def test_prompts_are_grpotrainer_s(tokenizer, rows, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    records = [_sft_record(tokenizer, row) for row in rows]
    trainer = _trl_dataset(
        GRPOTrainer,
        _trl_args(GRPOConfig, tmp_path, num_generations=2, max_completion_length=4),
        tokenizer,
        [{"prompt": record["prompt"]} for record in records],
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
    )
    theirs, _, _ = trainer._tokenize_prompts([record["prompt"] for record in records])
    assert [prompt_ids(tokenizer, row) for row in rows] == [list(ids) for ids in theirs]


def test_truncation_names_the_chat_template_s_share(smollm2, llama_style):
    rows = TASKS["sort"].rows(10, seed=0)
    _, stats = encode_rows(smollm2, rows, max_length=48)
    assert stats.truncated_rows > 0
    empty_turns = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    template = len(smollm2.apply_chat_template(empty_turns, tokenize=True)["input_ids"])
    assert stats.template_tokens == template
    note = stats.truncation_note(48)
    assert note.startswith(f"{stats.truncated_rows} of 10 rows truncated at train.max_length=48")
    assert note.endswith(
        f"; the chat template takes {template} of those tokens; raise train.max_length"
    )
    # No template, no share: a plain tokenizer, or a user's own rows.
    assert encode_rows(llama_style, rows, max_length=8)[1].template_tokens == 0
    assert encode_rows(smollm2, USER_ROWS, max_length=512)[1].template_tokens == 0
