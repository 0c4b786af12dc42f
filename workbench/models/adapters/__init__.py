"""Which parameters train: one file per adapter (its settings model and its apply function),
and :mod:`.applying`, which looks the spec's adapter up in ``components.ADAPTERS``.

The settings models are imported by the spec layer to validate a run, so an adapter file
imports torch and peft inside its functions, never at the top.
"""
