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
    the resident memory right after the model load (MiB) and the run's ``workbench.kernels`` tag."""
    import workbench
    from workbench import tracking
    from workbench.running import pipeline as runner

    memory = {}
    note_memory_after(runner, "load_base", memory)
    with tempfile.TemporaryDirectory(prefix="vs-trl-store-") as folder:
        store = f"sqlite:///{folder}/mlflow.db"
        result = workbench.run(spec_for(store), log=lambda *a: None, observers=[observer])
        tags = tracking.connect(store).get_run(result.run_id).data.tags
    return memory["baseline_mb"], tags.get("workbench.kernels", "?")
