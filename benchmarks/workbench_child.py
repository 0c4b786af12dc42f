"""One ``workbench.run`` inside a benchmark child process, as a user runs it: a spec, a tracking
store in a temporary folder, an observer of the run's events; what the child reports besides
its own figures (the resident memory after the model load, the kernels the run used).

Shared by the benchmark scripts, which run as ``python benchmarks/<name>.py`` and so import
this by its bare name.
"""

from __future__ import annotations

import tempfile

from run_figures import note_memory_after


def run_spec(spec_for, observer) -> tuple[float, str]:
    """Run ``spec_for(store)`` (the spec, given its MLflow store's URI) with ``observer``; returns
    the resident memory right after the model load (MiB) and the run's ``workbench.kernels`` tag.

    The run's own memory cost (``MemoryMark``) resets the kernel's high-water mark of resident
    memory when training starts; here it must not, so that the child's lifetime peak, read by
    the parent when it reaps the child (``child_peak_memory``), includes whatever came before
    training (the reference log-probs' precomputation) as it does for a TRL child. Without the
    reset the mark falls back to lifetime peaks; nothing the run trains or reports to the
    benchmark changes. The libraries a run imports are imported before the model load, as a
    TRL child imports TRL's, and the baseline is read once the weights are resident
    (``rss_with_weights_mb``, as the TRL children read theirs), so that it holds both."""
    import lightning.pytorch  # noqa: F401
    import peft  # noqa: F401

    import workbench
    from workbench import tracking
    from workbench.running import pipeline as runner
    from workbench.running import process_memory

    process_memory.reset_peak_rss = lambda: False
    memory = {}
    note_memory_after(runner, "load_base", memory, model_of=lambda base: base.model)
    with tempfile.TemporaryDirectory(prefix="vs-trl-store-") as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        result = workbench.run(spec_for(store), log=lambda *a: None, observers=[observer])
        tags = tracking.connect(store).get_run(result.run_id).data.tags
    return memory["baseline_mb"], tags.get("workbench.kernels", "?")


def offered(train_options: dict) -> dict:
    """The ``train`` options of ``train_options`` this workbench's spec has (a benchmark asks
    for a newer option, such as ``padding_free``, only where the spec offers it)."""
    from workbench.spec.run_spec import TrainSpec

    return {k: v for k, v in train_options.items() if k in TrainSpec.model_fields}


def step_token_marker(marks):
    """A run observer that marks each optimizer step in ``marks`` with the tokens the run
    reports for it (``perf/tokens_per_s`` x ``perf/step_s``: its batch's non-pad tokens)."""
    from workbench.running.events import RunObserver

    class MarkSteps(RunObserver):
        def on_step(self, step, metrics):
            marks.note(step, round(metrics["perf/tokens_per_s"] * metrics["perf/step_s"]))

    return MarkSteps()
