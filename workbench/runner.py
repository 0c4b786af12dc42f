"""Run a spec: in this process (:func:`run`) or in a fresh one (see :mod:`workbench.launcher`).

The order matters for "nothing half-written": the spec is validated, the data loaded and
checked, and the model built *before* an MLflow run is created; from then on every exit
path ends the run FINISHED, FAILED (with the error) or KILLED.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbench import liveness, paths, tracking
from workbench.adapters import apply_adapter, trainable_parameters
from workbench.data.encode import encode_rows
from workbench.data.sources import load_rows
from workbench.errors import RunFailed, TrackingError, WorkbenchError
from workbench.evaluation import evaluate
from workbench.kernel_patch import patch_model
from workbench.library_output import quiet_libraries
from workbench.lightning_modules.callbacks import LAST_CHECKPOINT, CheckpointCallback
from workbench.models import load_base
from workbench.registry import load_module_class
from workbench.spec import RunSpec


@dataclass
class RunResult:
    run_id: str | None
    status: str
    objectives: dict[str, float] = field(default_factory=dict)
    trajectory: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def _rank() -> int:
    """Global rank of this process in a Lightning multi-process launch (0 when alone)."""
    for var in ("RANK", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _peak_rss_mb() -> float:
    # ru_maxrss is the process high-water mark in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Interrupted:
    """SIGTERM -> a flag the training loop checks, turned into a clean KILLED ending."""

    def __init__(self):
        self.flag = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.getsignal(sig)

            def on_term(signum, frame):
                self.flag = True
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc):
        # Lightning ignores SIGINT after an interrupt; give the caller its handlers back.
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def resume(run_id: str, *, progress: bool = False, log=print) -> RunResult:
    """Continue a FAILED/KILLED run from its last checkpoint, in the same MLflow run.

    Model, optimizer, scheduler, RNG states and the data position come from the checkpoint;
    steps the store already holds are not logged again, so the history has no duplicate
    and no missing step.
    """
    client = tracking.connect()
    spec = RunSpec.from_yaml(_download_text(client, run_id, "spec.yaml"))
    return run(spec, run_id=run_id, progress=progress, log=log, resume=True)


def _download_text(client, run_id: str, artifact: str) -> str:
    import mlflow

    try:
        client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp,
                                                       tracking_uri=client.tracking_uri)
            with open(path, encoding="utf-8") as f:
                return f.read()
    except Exception as err:  # MLflow raises its own exception types
        raise TrackingError(f"cannot read {artifact} of run {run_id} from {client.tracking_uri}: {err}") from None


def _resume_point(client, run_id: str) -> tuple[Path, int, dict[str, int]]:
    """(checkpoint file, its optimizer step, last step the store holds per metric) of a run
    to resume."""
    import torch

    ckpt = paths.checkpoint_dir(client.tracking_uri) / run_id / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise TrackingError(
            f"run {run_id} has no checkpoint in {ckpt.parent}, so it cannot be resumed; runs "
            "save checkpoints every train.checkpoint_every steps (set it to make runs resumable)"
        )
    step = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    return ckpt, step, tracking.last_steps(client, run_id)


def run(spec: RunSpec | dict, *, run_id: str | None = None, parent_run_id: str | None = None,
        progress: bool = False, log=print, resume: bool = False) -> RunResult:
    """Train ``spec`` in this process; return the run id and its final objectives.

    ``run_id`` continues a run created beforehand (by :func:`workbench.launch`);
    ``resume=True`` continues it from its last checkpoint (see :func:`resume`).
    Raises :class:`RunFailed` (run ended FAILED) or ``KeyboardInterrupt`` (ended KILLED).
    Other libraries' banners, tips and progress bars are hidden while it trains.
    """
    with quiet_libraries():
        return _run(spec, run_id=run_id, parent_run_id=parent_run_id, progress=progress,
                    log=log, resume=resume)


def _run(spec, *, run_id, parent_run_id, progress, log, resume) -> RunResult:
    import lightning as L
    import torch

    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    rank = _rank()
    # Data first: a malformed dataset must fail before the store is even opened.
    train_rows, eval_rows = load_rows(spec.data, spec.train.seed)
    client = tracking.connect(spec.tracking.uri) if rank == 0 else None
    L.seed_everything(spec.train.seed, workers=True, verbose=False)
    base = load_base(spec.model, log=log if rank == 0 else (lambda *a: None))
    model = apply_adapter(base.model, spec.adapter)
    encoded, stats = encode_rows(base.tokenizer, train_rows, spec.train.max_length)
    module_class = load_module_class(spec.method)
    on_gpu = spec.train.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    kernel_usage = patch_model(model, spec.kernels, on_gpu=on_gpu)
    module = module_class(spec, model, base.tokenizer, encoded, kernel_usage)
    rss_baseline = _peak_rss_mb()

    if rank != 0:
        # Other DDP ranks only train; rank 0 tracks and evaluates. The same callbacks keep the
        # per-step all-reduce and the checkpoint saves in step across ranks.
        callbacks = [_tracking_callback(None, spec, None, None)]
        if spec.train.checkpoint_every:
            callbacks.append(CheckpointCallback(Path("."), spec.train.checkpoint_every))
        ckpt = None
        if resume:
            ckpt = paths.checkpoint_dir(tracking.connect().tracking_uri) / run_id / LAST_CHECKPOINT
        _make_trainer(spec, callbacks, progress=False).fit(module, ckpt_path=ckpt)
        return RunResult(None, "FINISHED")

    ckpt_path, stored = None, {}
    if resume:
        ckpt_path, ckpt_step, stored = _resume_point(client, run_id)
        module.start_micro_step = ckpt_step * spec.train.grad_accum
        client.update_run(run_id, status="RUNNING")
        log(f"resuming run {run_id} from step {ckpt_step} (the store holds steps up to "
            f"{stored.get('train/loss', 0)})")
    elif run_id is None:
        run_id = tracking.start_run(client, spec, parent_run_id=parent_run_id)
    recorder = tracking.RunRecorder(client, run_id, skip_through_step=stored)
    # A resumed run replaying steps whose evaluation the store already holds skips it.
    evaluated_through = min((stored.get(f"objective/{o.name}", -1) for o in spec.objectives), default=-1)
    trajectory: list[tuple[int, dict[str, float]]] = []
    started = time.perf_counter()

    def costs() -> dict[str, float]:
        return {
            "trainable_params": float(trainable_parameters(model)),
            "peak_mem_mb": max(0.0, _peak_rss_mb() - rss_baseline),
            "train_time_s": time.perf_counter() - started,
        }

    def evaluate_at(step: int) -> dict[str, float]:
        if step <= evaluated_through:
            return {}  # a resumed run replaying steps the store already has
        result = evaluate(model, base.tokenizer, eval_rows, spec.objectives, spec.eval,
                          max_length=spec.train.max_length, costs=costs(), seed=spec.train.seed)
        recorder.log_metrics({f"objective/{k}": v for k, v in result.objectives.items()}, step=step)
        recorder.log_metrics({f"eval/{k}": v for k, v in result.metrics.items()}, step=step)
        if result.samples:
            try:
                recorder.log_table(result.samples, f"samples/step_{step:06d}.json")
            except TrackingError as err:
                # Sample tables are a convenience; a store outage must not stop training.
                log(f"note: sample completions of step {step} were not stored: {err}")
        trajectory.append((step, dict(result.objectives)))
        return result.objectives

    with _Interrupted() as interrupted:
        try:
            recorder.set_tags({"workbench.kernels": "none (kernels: off)" if kernel_usage is None else "pending",
                               "workbench.base": base.name,
                               **liveness.process_tags()})
            if not resume:
                liveness.reap_dead_runs(client, [client.get_run(run_id).info.experiment_id])
            recorder.log_metrics(stats.as_metrics(), step=0)
            recorder.log_metrics({"cost/trainable_params": float(trainable_parameters(model))}, step=0)
            for task_name, score in base.info.get("exact_match", {}).items():
                recorder.log_metrics({f"base/exact_match/{task_name}": score}, step=0)
            if stats.truncated_rows:
                log(f"note: {stats.truncated_rows} of {stats.rows} rows were longer than "
                    f"train.max_length={spec.train.max_length} and were truncated "
                    f"({stats.dropped_rows} dropped: nothing left to learn)")
            evaluate_at(0)
            callbacks = [_tracking_callback(recorder, spec, evaluate_at, lambda: interrupted.flag)]
            if spec.train.checkpoint_every:
                folder = paths.checkpoint_dir(client.tracking_uri) / run_id
                callbacks.append(CheckpointCallback(folder, spec.train.checkpoint_every, recorder))
            trainer = _make_trainer(spec, callbacks, progress=progress)
            try:
                trainer.fit(module, ckpt_path=ckpt_path)
            except SystemExit:
                # Lightning turns Ctrl-C / SIGTERM into sys.exit(1) after a graceful shutdown.
                raise KeyboardInterrupt from None
            final = evaluate_at(spec.train.steps)
            if kernel_usage is not None:
                # Recorded after training: only ops that actually ran are named.
                recorder.set_tags({"workbench.kernels": kernel_usage.tag()})
                recorder.log_metrics(kernel_usage.metrics(), step=spec.train.steps)
            cost = costs()
            recorder.log_metrics({"perf/peak_mem_mb": cost["peak_mem_mb"],
                                  "perf/train_time_s": cost["train_time_s"]}, step=spec.train.steps)
            if spec.tracking.log_model:
                with tempfile.TemporaryDirectory() as folder:
                    model.save_pretrained(folder, safe_serialization=True)
                    base.tokenizer.save_pretrained(folder)
                    _store_model(recorder, folder, client.tracking_uri, run_id, log)
        except KeyboardInterrupt:
            recorder.finish("KILLED")
            raise
        except WorkbenchError as err:
            recorder.finish("FAILED", f"{type(err).__name__}: {err}")
            raise RunFailed(f"run {run_id} failed: {err}") from None
        except BaseException as err:
            import traceback

            recorder.finish("FAILED", f"{type(err).__name__}: {err}", details=traceback.format_exc())
            if isinstance(err, (FloatingPointError, torch.OutOfMemoryError)):
                raise RunFailed(f"run {run_id} failed: {err}") from None
            if isinstance(err, Exception):
                # Unexpected: a one-line failure for the CLI, the cause kept for debugging
                # (chained here, and the whole traceback in the run's error.txt).
                raise RunFailed(
                    f"run {run_id} failed: {type(err).__name__}: {err} (the traceback is in the "
                    "run's error.txt artifact)"
                ) from err
            raise
        recorder.finish("FINISHED")
        if recorder.fallback_path is not None:
            log(f"warning: the store was unreachable; what run {run_id} could not send is in "
                f"{recorder.fallback_path} (send it with workbench.tracking.replay_fallback)")
    # Finished runs keep their final weights in MLflow; their checkpoints are only disk use.
    shutil.rmtree(paths.checkpoint_dir(client.tracking_uri) / run_id, ignore_errors=True)
    return RunResult(run_id, "FINISHED", final, trajectory)


def _store_model(recorder, folder: str, uri: str, run_id: str, log) -> None:
    """Log the weights as the run's ``model/`` artifact; if the store is unreachable, keep them
    in a local folder the user is told about, so the trained model is never lost."""
    try:
        recorder.log_artifacts(folder, "model")
    except TrackingError as err:
        keep = tracking.fallback_dir(uri) / f"{run_id}-model"
        shutil.copytree(folder, keep, dirs_exist_ok=True)
        log(f"warning: the model of run {run_id} could not be stored ({err}); it was saved to {keep}")


def _tracking_callback(recorder, spec, evaluate_at, stop_flag):
    from workbench.lightning_modules.callbacks import TrackingCallback

    return TrackingCallback(recorder, spec.train.log_every, spec.train.eval_every, evaluate_at, stop_flag)


def _make_trainer(spec, callbacks, progress: bool):
    import warnings

    import lightning as L

    # Our batch sampler positions itself at the checkpoint's step (GlobalBatchSampler), which
    # Lightning cannot see; its "dataloader is not resumable" warning does not apply.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")

    t = spec.train
    if progress:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=max(1, t.steps // 50))]
    return L.Trainer(
        max_steps=t.steps, max_epochs=1, accumulate_grad_batches=t.grad_accum,
        gradient_clip_val=t.grad_clip, precision=t.precision, accelerator=t.accelerator,
        devices=t.devices, strategy=t.strategy, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, callbacks=callbacks, limit_val_batches=0,
    )


def main_guard(func):
    """Print WorkbenchErrors as one clear message (no traceback) and exit non-zero."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except WorkbenchError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
