"""The row types every data source is turned into (TRL's dataset formats, typed).

- :class:`Row`: prompt/completion ("standard" format). The completion is a sequence of
  named segments so multi-objective methods can weight e.g. answer and explanation tokens
  separately; a plain completion is one ``answer`` segment.
- :class:`ChatRow`: ``messages`` ("conversational" format); loss on assistant turns only.
- :class:`PreferenceRow`: prompt/chosen/rejected (preference methods).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    prompt: str
    segments: tuple[tuple[str, str], ...]

    @classmethod
    def plain(cls, prompt: str, completion: str) -> Row:
        return cls(prompt, (("answer", completion),))

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

    def as_row(self) -> Row:
        """The pair as a supervised row: its source, else the chosen completion as the answer."""
        return self.source if self.source is not None else Row.plain(self.prompt, self.chosen)
