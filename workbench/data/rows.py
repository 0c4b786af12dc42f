"""The row types every data source is turned into (TRL's dataset formats, typed).

- :class:`Row`: prompt/completion ("standard" format). The completion is a sequence of
  named segments so multi-objective methods can weight e.g. answer and explanation tokens
  separately; a plain completion is one ``answer`` segment.
- :class:`ChatRow`: ``messages`` ("conversational" format); loss on assistant turns only.
- :class:`PreferenceRow`: prompt/chosen/rejected (preference methods).

A built-in task's rows are ``conversational``: where the model's tokenizer has a chat template
they are rendered through it, the prompt as a user turn and the completion as the assistant's
answer, so a chat model sees its own format. A user's prompt/completion rows stay plain text,
as TRL treats them (``workbench.data.encode`` decides both).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    prompt: str
    segments: tuple[tuple[str, str], ...]
    # A built-in task's row: a user turn and an assistant turn where the tokenizer has a chat
    # template; plain text otherwise (and always for a user's own rows).
    conversational: bool = False
    # The built-in task the row comes from (None for a user's rows): a mixture of tasks
    # (``data.mixture``) scores and balances its rows per task by it.
    task: str | None = None

    @classmethod
    def plain(cls, prompt: str, completion: str, conversational: bool = False) -> Row:
        return cls(prompt, (("answer", completion),), conversational)

    @property
    def completion(self) -> str:
        return "".join(text for _, text in self.segments)

    @property
    def answer(self) -> str:
        return "".join(text for name, text in self.segments if name == "answer")


@dataclass(frozen=True)
class ChatRow:
    messages: tuple[dict[str, str], ...]  # each {"role": ..., "content": ...}

    @property
    def prompt_messages(self) -> tuple[dict[str, str], ...]:
        """Messages before the last assistant turn (what generation is conditioned on)."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    @property
    def answer(self) -> str:
        return [m["content"] for m in self.messages if m["role"] == "assistant"][-1]


@dataclass(frozen=True)
class PreferenceRow:
    prompt: str
    chosen: str
    rejected: str
    # The supervised row a built-in task's pair was made from (its answer and segments are
    # what the task's metrics score generations against); None for a user's pairs.
    source: Row | None = None
    # Per-attribute scores of the two completions, ``(name, chosen score, rejected score)``
    # (multi-objective methods such as MODPO weight their differences); empty when unscored.
    scores: tuple[tuple[str, float, float], ...] = ()

    @property
    def conversational(self) -> bool:
        """A built-in task's pair renders as its source row does (see :class:`Row`)."""
        return self.source is not None and self.source.conversational

    def completion_row(self, completion: str) -> Row:
        """The prompt and one of the pair's completions as a supervised row, rendered as the
        pair's source row is."""
        return Row.plain(self.prompt, completion, self.conversational)

    def as_row(self) -> Row:
        """The pair as a supervised row: its source, else the chosen completion as the answer."""
        return self.source if self.source is not None else Row.plain(self.prompt, self.chosen)


def task_of(row: Row | ChatRow | PreferenceRow) -> str | None:
    """The built-in task a row comes from (a pair: its source row's), None for a user's row."""
    if isinstance(row, PreferenceRow):
        return None if row.source is None else row.source.task
    return row.task if isinstance(row, Row) else None
