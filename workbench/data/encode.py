"""Tokenisation with loss masks: only completion / assistant tokens are trained on.

The tokenizer decides the special tokens, as the model's own tokenizer and TRL's processing
do: a plain prompt is tokenised with ``add_special_tokens`` (a Llama-style tokenizer adds its
BOS, SmolLM2's adds nothing), chat rows and built-in task rows (``Row.conversational``) go
through the tokenizer's chat template where it has one, and a completion is tokenised without
special tokens and closed by the end token (TRL appends the EOS text to the completion). One
function, :func:`prompt_ids`, renders every prompt: training, generation, evaluation and
GRPO's prompts all start from its ids.

Prompt and each completion segment are tokenised separately and concatenated, so segment
boundaries are exact token boundaries and generation (which starts right after the prompt
tokens) sees the same ids as training. TRL tokenises prompt + completion as one string and
starts the completion where it departs from the prompt alone; the two agree whenever the
prompt ends on a pre-tokenizer boundary (TRL warns when it does not). A task row rendered
through a chat template is tokenised as TRL tokenises a conversational prompt/completion
row: the rendered text as a whole, its tokens assigned to segments by their character
offsets. Tokens of assistant turns in chat rows are found by rendering growing prefixes of
the conversation. Truncation is counted, never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.spec.errors import DataError
from workbench.spec.mlflow_names import DATA_PREFIX

IGNORE_INDEX = -100
SEGMENT_IDS = {"prompt": 0, "answer": 1, "explanation": 2, "assistant": 1}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX outside the completion / assistant turns
    segments: list[int]  # SEGMENT_IDS per token
    truncated: bool = False
    # Where the row's own prompt text begins: after the tokenizer's leading special tokens, or
    # the chat template's system prompt and user-turn header (where a weight prefix is written).
    prompt_start: int = 0
    # The built-in task the row comes from (``Row.task``): what SFT's task balancing groups by.
    task: str | None = None


@dataclass
class EncodeStats:
    rows: int = 0
    truncated_rows: int = 0
    dropped_rows: int = 0  # nothing left to train on after truncation
    tokens: int = 0
    completion_tokens: int = 0
    # Tokens the chat template adds to a row (system prompt, turn markers, end tokens), 0 when
    # no row went through a template: what a truncation note names as the template's share.
    template_tokens: int = 0
    examples_dropped: list[int] = field(default_factory=list)

    def truncation_note(self, max_length: int) -> str | None:
        """One line on truncated rows (None when none was truncated)."""
        if not self.truncated_rows:
            return None
        template = (
            f"; the chat template takes {self.template_tokens} of those tokens"
            if self.template_tokens
            else ""
        )
        dropped = (
            f" ({self.dropped_rows} dropped: nothing left to learn)" if self.dropped_rows else ""
        )
        return (
            f"{self.truncated_rows} of {self.rows} rows truncated at "
            f"train.max_length={max_length}{dropped}{template}; raise train.max_length"
        )

    def as_metrics(self) -> dict[str, float]:
        return {
            f"{DATA_PREFIX}rows": float(self.rows),
            f"{DATA_PREFIX}truncated_rows": float(self.truncated_rows),
            f"{DATA_PREFIX}dropped_rows": float(self.dropped_rows),
            f"{DATA_PREFIX}tokens": float(self.tokens),
            f"{DATA_PREFIX}completion_tokens": float(self.completion_tokens),
        }


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _text_ids(tokenizer, text: str) -> list[int]:
    """``text`` at the start of a sequence: the tokenizer adds its own leading special tokens."""
    return list(tokenizer(text)["input_ids"])


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def renders_through_template(tokenizer, row) -> bool:
    """Whether ``row`` goes through the tokenizer's chat template: chat rows and built-in task
    rows do where the tokenizer has one; a user's prompt/completion rows never do."""
    if not has_chat_template(tokenizer):
        return False
    return isinstance(row, ChatRow) or bool(getattr(row, "conversational", False))


def _task_turns(row: Row, answer: str | None = None) -> list[dict[str, str]]:
    """A task row as a user turn holding the prompt (and an assistant turn holding ``answer``)."""
    turns = [{"role": "user", "content": row.prompt}]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


def _rendered(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def prompt_ids(tokenizer, row: Row | ChatRow) -> list[int]:
    """Token ids generation is conditioned on (prompt, or chat up to the answer turn)."""
    if isinstance(row, ChatRow):
        return _chat_ids(tokenizer, row.prompt_messages, add_generation_prompt=True)
    if renders_through_template(tokenizer, row):
        return _ids(tokenizer, _rendered(tokenizer, _task_turns(row), add_generation_prompt=True))
    return _text_ids(tokenizer, row.prompt)


def template_tokens(tokenizer, rows: Sequence, with_answer: bool = True) -> int:
    """Tokens the chat template adds around a row's own text (an empty user turn, and an empty
    assistant turn ``with_answer``), or 0 when none of ``rows`` goes through a template."""
    if not any(renders_through_template(tokenizer, row) for row in rows):
        return 0
    empty = Row("", (("answer", ""),))
    turns = _task_turns(empty, "" if with_answer else None)
    return len(_ids(tokenizer, _rendered(tokenizer, turns, add_generation_prompt=not with_answer)))


def _chat_ids(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    if has_chat_template(tokenizer):
        return _ids(tokenizer, _rendered(tokenizer, messages, add_generation_prompt))
    # No template: "role: content" lines, each assistant turn closed by the end token (the
    # model must learn to stop). The end token is part of the rendering, so the generation
    # prompt of a later turn shows the earlier answers exactly as training saw them. Each
    # message is tokenized on its own, so a prefix of the conversation renders as a prefix;
    # the first piece of text gets the tokenizer's leading special tokens, as a plain prompt.
    pieces = [f"{m['role']}: {m['content']}\n" for m in messages]
    if add_generation_prompt:
        pieces.append("assistant:")
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        ids += _text_ids(tokenizer, piece) if i == 0 else _ids(tokenizer, piece)
        closes_answer = i < len(messages) and messages[i]["role"] == "assistant"
        if closes_answer and tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    return ids


def _prompt_start(tokenizer, row: Row, ids: list[int]) -> int:
    """Index of the first token of ``row.prompt``'s own text in its :func:`prompt_ids`
    ``ids`` (its last occurrence: a template's system prompt comes before it)."""
    own = _ids(tokenizer, row.prompt)
    starts = [k for k in range(len(ids) - len(own), -1, -1) if ids[k : k + len(own)] == own]
    return starts[0] if starts else 0


def _templated_completion(tokenizer, row: Row, prompt: list[int]) -> tuple[list[int], list[int]]:
    """The assistant turn of a task row rendered through the chat template: its token ids and
    segment ids. The completion's leading whitespace is dropped (it joins a plain prompt; an
    assistant turn starts its own text); each token belongs to the segment its first character
    is in, and the template's closing tokens to the answer, as the end token of a plain row."""
    content = row.completion.lstrip()
    lead = len(row.completion) - len(content)
    prompt_text = _rendered(tokenizer, _task_turns(row), add_generation_prompt=True)
    full_text = _rendered(tokenizer, _task_turns(row, content), add_generation_prompt=False)
    encoded = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    if not full_text.startswith(prompt_text) or ids[: len(prompt)] != prompt:
        raise DataError(
            "the chat template renders the prompt alone differently from the prompt followed "
            "by its answer, so the answer's tokens cannot be located; use a model whose chat "
            "template renders a conversation's prefix as a prefix"
        )
    content_at = full_text.index(content, len(prompt_text)) if content else len(prompt_text)
    ends, at = [], -lead
    for name, text in row.segments:
        at += len(text)
        ends.append((at, SEGMENT_IDS.get(name, SEGMENT_IDS["answer"])))
    segments = []
    for start, _ in offsets[len(prompt) :]:
        position = start - content_at
        segment = next((s for end, s in ends if position < end), SEGMENT_IDS["answer"])
        segments.append(segment)
    return ids[len(prompt) :], segments


def _plain_completion(tokenizer, row: Row) -> tuple[list[int], list[int]]:
    """A plain row's completion: each segment tokenised without special tokens, then the end
    token, which belongs to the answer (learning when to stop is part of answering)."""
    ids: list[int] = []
    segments: list[int] = []
    for name, text in row.segments:
        seg = _ids(tokenizer, text)
        ids += seg
        segments += [SEGMENT_IDS.get(name, SEGMENT_IDS["answer"])] * len(seg)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        segments.append(SEGMENT_IDS["answer"])
    return ids, segments


def encode_row(tokenizer, row: Row | ChatRow, max_length: int) -> Encoded:
    if isinstance(row, PreferenceRow):
        raise DataError(
            "preference rows (prompt/chosen/rejected) need a preference method, not SFT"
        )
    prompt_start = 0
    if isinstance(row, Row):
        ids = prompt_ids(tokenizer, row)
        prompt_start = _prompt_start(tokenizer, row, ids)
        if renders_through_template(tokenizer, row):
            completion, completion_segments = _templated_completion(tokenizer, row, ids)
        else:
            completion, completion_segments = _plain_completion(tokenizer, row)
        labels = [IGNORE_INDEX] * len(ids) + completion
        segments = [SEGMENT_IDS["prompt"]] * len(ids) + completion_segments
        ids = ids + completion
    else:
        ids, labels, segments = [], [], []
        for i, message in enumerate(row.messages):
            if message["role"] != "assistant":
                continue
            before = _chat_ids(tokenizer, row.messages[:i], add_generation_prompt=True)
            upto = _chat_ids(tokenizer, row.messages[: i + 1], add_generation_prompt=False)
            # Earlier turns must render the same inside later prefixes (``ids`` holds them).
            if upto[: len(before)] != before or before[: len(ids)] != ids:
                raise DataError(
                    "the chat template renders a conversation prefix differently from the whole "
                    "conversation, so assistant tokens cannot be located; "
                    "use prompt/completion rows"
                )
            context = before[len(ids) :]
            ids += context
            labels += [IGNORE_INDEX] * len(context)
            segments += [SEGMENT_IDS["prompt"]] * len(context)
            answer = upto[len(before) :]
            ids += answer
            labels += answer
            segments += [SEGMENT_IDS["assistant"]] * len(answer)
    truncated = len(ids) > max_length
    if truncated:
        ids, labels, segments = ids[:max_length], labels[:max_length], segments[:max_length]
    task = row.task if isinstance(row, Row) else None
    return Encoded(ids, labels, segments, truncated, prompt_start, task)


def encode_rows(
    tokenizer, rows: Sequence[Row | ChatRow], max_length: int
) -> tuple[list[Encoded], EncodeStats]:
    """Encode rows; rows with no trainable token left after truncation are dropped and counted."""
    stats = EncodeStats(template_tokens=template_tokens(tokenizer, rows))
    out: list[Encoded] = []
    for index, row in enumerate(rows):
        enc = encode_row(tokenizer, row, max_length)
        stats.rows += 1
        stats.truncated_rows += int(enc.truncated)
        trainable = sum(label != IGNORE_INDEX for label in enc.labels)
        if trainable == 0:
            stats.dropped_rows += 1
            stats.examples_dropped.append(index)
            continue
        stats.tokens += len(enc.input_ids)
        stats.completion_tokens += trainable
        out.append(enc)
    if not out:
        raise DataError(
            f"no row has a completion token left within train.max_length={max_length}; "
            "raise train.max_length or shorten the prompts"
        )
    return out, stats


def task_groups(tasks: Sequence[str | None]) -> torch.Tensor:
    """One id per row, equal for rows of the same task: the order in which each task first
    appears (rows with no task share one id). A loss that balances tasks needs only which rows
    belong together, not which task they are."""
    first_seen: dict[str | None, int] = {}
    return torch.tensor([first_seen.setdefault(t, len(first_seen)) for t in tasks])


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; labels are shifted later by the loss (label t scores token t).
    ``task_groups`` tells rows of one task from another's (:func:`task_groups`)."""
    width = max(len(e.input_ids) for e in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    segments = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(batch):
        k = len(e.input_ids)
        input_ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        segments[i, :k] = torch.tensor(e.segments)
        attention[i, :k] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "segments": segments,
        "attention_mask": attention,
        "task_groups": task_groups([e.task for e in batch]),
    }
