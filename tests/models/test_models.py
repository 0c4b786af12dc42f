"""Base models: the tiny base's cache, and the real from_pretrained path on a saved folder."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAST_TINY
from workbench.models import tiny
from workbench.models.loading import load_base, load_pretrained, save_merged
from workbench.spec.errors import ModelError
from workbench.spec.run_spec import ModelSpec, RunSpec


@pytest.fixture(scope="module")
def fast_base():
    return load_base(ModelSpec(tiny=FAST_TINY), log=lambda *a: None)


def test_tiny_base_is_cached_by_config_and_reused(fast_base, monkeypatch):
    spec = ModelSpec(tiny=FAST_TINY)
    assert (tiny.cached_path(spec.tiny) / tiny.BASE_INFO_FILE).is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a cached tiny base was rebuilt")

    monkeypatch.setattr(tiny, "pretrain", no_rebuild)
    again = load_base(spec, log=lambda *a: None)
    ids = torch.tensor([[again.tokenizer.bos_token_id, 5, 6, 7]])
    torch.testing.assert_close(again.model(ids).logits, fast_base.model(ids).logits)
    assert set(again.info["exact_match"]) == {"arithmetic", "reverse", "sort", "order"}
    # Another seed is another model, in another cache entry.
    other = ModelSpec(tiny={**FAST_TINY, "seed": 1})
    assert tiny.cache_key(other.tiny) != tiny.cache_key(spec.tiny)


def test_a_saved_model_folder_loads_through_from_pretrained(fast_base, tmp_path):
    folder = save_merged(fast_base.model, fast_base.tokenizer, tmp_path / "model")
    assert list(folder.glob("*.safetensors"))
    loaded = load_base(RunSpec.parse({"model": {"name": str(folder)}}).model, log=lambda *a: None)
    ids = torch.tensor([[fast_base.tokenizer.bos_token_id, 9, 10, 11, 12]])
    fast_base.model.eval()
    loaded.model.eval()
    torch.testing.assert_close(loaded.model(ids).logits, fast_base.model(ids).logits)
    assert (
        loaded.tokenizer("sort 3 1 2:")["input_ids"]
        == fast_base.tokenizer("sort 3 1 2:")["input_ids"]
    )


def test_pickle_only_weights_are_refused_unless_allowed(fast_base, tmp_path):
    folder = tmp_path / "pickled"
    fast_base.model.config.save_pretrained(folder)
    fast_base.tokenizer.save_pretrained(folder)
    torch.save(fast_base.model.state_dict(), folder / "pytorch_model.bin")  # a pickle file
    with pytest.raises(ModelError, match="allow_unsafe_weights"):
        load_pretrained(str(folder))


def test_a_missing_model_gets_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load model"):
        load_pretrained(str(tmp_path / "nothing-here"))
