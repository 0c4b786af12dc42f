"""What loading a base gives the rest of the workbench: the model, its tokenizer, a name."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BaseModel:
    model: object
    tokenizer: object
    name: str
    info: dict = field(default_factory=dict)  # e.g. the tiny base's per-task exact match
