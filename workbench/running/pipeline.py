"""Run a spec: in this process (:func:`run`) or in a fresh one (see :mod:`workbench.running.launcher`).

The order matters for "nothing half-written": the spec is validated, the data loaded and
checked, and the model built *before* an MLflow run is created; from then on every exit
path ends the run FINISHED, FAILED (with the error) or KILLED.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench import tracking
from workbench.data.sources import load_rows
from workbench.models.adapters import apply_adapter, trainable_parameters
from workbench.models.kernel_patch import patch_model
from workbench.models.loading import BaseModel, load_base
from workbench.running import checkpoints, cluster, liveness, preflight, strategies
from workbench.running.callbacks import (
    CheckpointCallback,
    RunEventsCallback,
)
from workbench.running.evaluation import evaluate
from workbench.running.events import Evaluation, RunContext, RunEvents, RunObserver, observers_list
from workbench.running.library_output import quiet_libraries
from workbench.running.process_memory import MemoryMark
from workbench.spec import paths, plugins, registry
from workbench.spec.errors import RunFailed, SpecError, TrackingError, WorkbenchError
from workbench.spec.plugins import import_plugins
from workbench.spec.run_spec import RunSpec
from workbench.tracking.observer import MlflowRecorderObserver


@dataclass
class RunResult:
    run_id: str | None
    status: str
    objectives: dict[str, float] = field(default_factory=dict)
    trajectory: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class _Interrupted:
    """SIGTERM -> a flag the training loop checks, turned into a clean KILLED ending."""

    def __init__(self):
        self.flag = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.getsignal(sig)

            def on_term(signum, _frame):
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
    return run(resume_spec(run_id), run_id=run_id, progress=progress, log=log, resume=True)


def resume_spec(run_id: str) -> RunSpec:
    """The stored spec of ``run_id`` (its plugins imported, so it validates)."""
    client = tracking.connect()
    try:
        import_plugins(client.get_run(run_id).data.tags.get(plugins.TAG, ""))
    except Exception as err:  # MLflow's own exception types for a missing run
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    return RunSpec.from_yaml(_download_text(client, run_id, "spec.yaml"))


def _download_text(client, run_id: str, artifact: str) -> str:
    import mlflow

    try:
        client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            with open(path, encoding="utf-8") as f:
                return f.read()
    except Exception as err:  # MLflow raises its own exception types
        raise TrackingError(
            f"cannot read {artifact} of run {run_id} from {client.tracking_uri}: {err}"
        ) from None


def _resume_point(client, run_id: str) -> tuple[Path, int, dict[str, int]]:
    """(checkpoint file, its optimizer step, last step the store holds per metric) of a run
    to resume."""
    folder = paths.checkpoint_dir(client.tracking_uri) / run_id
    ckpt = checkpoints.last(folder)
    if ckpt is None:
        raise TrackingError(
            f"run {run_id} has no checkpoint in {folder}, so it cannot be resumed; runs "
            "save checkpoints every train.checkpoint_every steps (set it to make runs resumable)"
        )
    return ckpt, checkpoints.step(ckpt), tracking.last_steps(client, run_id)


def run(
    spec: RunSpec | dict,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = False,
    log=print,
    resume: bool = False,
    observers: RunObserver | Sequence[RunObserver] | None = None,
) -> RunResult:
    """Train ``spec`` in this process; return the run id and its final objectives.

    ``run_id`` continues a run created beforehand (by :func:`workbench.launch`);
    ``resume=True`` continues it from its last checkpoint (see :func:`resume`).
    ``observers`` (:class:`workbench.running.events.RunObserver`) hear the run's start, steps,
    evaluations and end, after the MLflow recorder.
    Raises :class:`RunFailed` (run ended FAILED) or ``KeyboardInterrupt`` (ended KILLED).
    Other libraries' banners, tips and progress bars are hidden while it trains.
    """
    with quiet_libraries():
        pipeline = RunPipeline(
            spec,
            run_id=run_id,
            parent_run_id=parent_run_id,
            progress=progress,
            log=log,
            resume=resume,
            observers=observers_list(observers),
        )
        return pipeline.execute()


def evaluate_model(
    spec: RunSpec | dict,
    *,
    model=None,
    tokenizer=None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    observers: RunObserver | Sequence[RunObserver] | None = None,
) -> RunResult:
    """Measure ``spec``'s objectives for a model no run trained, recorded as its own MLflow run.

    The model is the spec's base (``spec.model``: 'tiny', a folder such as an exported or
    merged model), or ``model`` and ``tokenizer`` given in memory (e.g. a merged model).
    The run is tagged ``workbench.kind=evaluation`` and holds ``objective/<name>`` at step 0,
    so fronts and comparisons read it like any trained run. Nothing trains.
    """
    with quiet_libraries():
        pipeline = RunPipeline(
            spec,
            parent_run_id=parent_run_id,
            log=lambda *a: None,
            observers=observers_list(observers),
        )
        if run_name is not None:
            pipeline.spec = pipeline.spec.updated(**{"tracking.run_name": run_name})
        return pipeline.execute_evaluation(model, tokenizer)


class RunPipeline:
    """One run: :meth:`prepare` (data, model, module: before anything is written), then
    :meth:`open` the MLflow run, :meth:`train` (evaluating every ``eval_every`` steps) and
    :meth:`record` the outcome, announcing each step to the run's events."""

    def __init__(
        self,
        spec,
        *,
        run_id=None,
        parent_run_id=None,
        progress=False,
        log=print,
        resume=False,
        observers=(),
    ):
        self.spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
        self.run_id, self.parent_run_id = run_id, parent_run_id
        self.progress, self.log, self.resume = progress, log, resume
        self.user_observers = list(observers)
        self.rank = cluster.global_rank(self.spec.train)
        self.trajectory: list[tuple[int, dict[str, float]]] = []
        self.evaluated_through = -1
        self.events = RunEvents()

    # -- prepare: nothing is written until this has succeeded -------------------------------

    def prepare(self, model=None, tokenizer=None) -> None:
        """Load data and model and build the method's module; ``model``/``tokenizer`` replace
        the spec's base (an in-memory model to evaluate)."""
        import lightning as L
        import torch

        spec, rank = self.spec, self.rank
        _check_distribution(spec.train)
        self.info = registry.METHODS[spec.method.name]
        row_kind = registry.ROW_KINDS[self.info.row_kind]
        # Data first: a malformed dataset must fail before the store is even opened.
        self.train_rows, self.eval_rows = load_rows(
            spec.data, spec.train.seed, row_kind=row_kind.name
        )
        self.client = tracking.connect(spec.tracking.uri) if rank == 0 else None
        L.seed_everything(spec.train.seed, workers=True, verbose=False)
        if model is not None:
            if tokenizer is None:
                raise WorkbenchError("evaluate_model: pass the model's tokenizer along with it")
            self.base = BaseModel(model, tokenizer, type(model).__name__, {})
        else:
            # A launched run shows it is alive, and what it is doing, while the base loads
            # (a cold build of the tiny base takes minutes on loaded cores).
            log = self.log if rank == 0 else (lambda *a: None)
            beating = self.run_id if rank == 0 and not self.resume else None
            with tracking.PhaseBeat(self.client, beating, log) as say:
                self.base = load_base(spec.model, log=say)
        reference_kind = spec.method.reference_need(self.info.reference)
        if reference_kind == "adapter_disabled" and not spec.adapter.can_be_disabled():
            reference_kind = "frozen_copy"  # nothing to disable: keep the base aside instead
        reference_model = _frozen_copy(self.base.model) if reference_kind == "frozen_copy" else None
        self.model = apply_adapter(self.base.model, spec.adapter)
        encode = registry.resolve(row_kind.encode)
        encoded, self.stats = encode(self.base.tokenizer, self.train_rows, spec.train.max_length)
        on_gpu = spec.train.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        self.kernel_usage = patch_model(
            self.model, spec.kernels, on_gpu=on_gpu, adapter=spec.adapter
        )
        module_class = registry.load_module_class(spec.method.name)
        self.module = module_class(
            spec, self.model, self.base.tokenizer, encoded, self.kernel_usage
        )
        self.module.reference_kind, self.module.reference_model = reference_kind, reference_model
        self.module.rows = {"train": self.train_rows, "eval": self.eval_rows}
        needs_terms = any(o.source.startswith("term:") for o in spec.objectives)
        self.eval_encoded = (
            encode(self.base.tokenizer, self.eval_rows, spec.train.max_length)[0]
            if needs_terms or reference_kind == "precomputed"
            else []
        )
        if reference_kind == "precomputed":
            self.module.precompute_reference("train", encoded, spec.eval.batch_size)
            if self.eval_encoded:
                self.module.precompute_reference("eval", self.eval_encoded, spec.eval.batch_size)
        # Sharded weights never sit whole in the trained model: rank 0 evaluates and saves a
        # copy of it, loaded with the weights all ranks gather at each evaluation.
        self.sharded = strategies.shards_weights(spec.train.strategy)
        self.eval_model = _frozen_copy(self.model) if self.sharded and rank == 0 else self.model
        # Training's own peak: not hidden by the load's or the reference precompute's above.
        self.memory_mark = MemoryMark()

    # -- the MLflow run and its observers --------------------------------------------------

    def open(self, extra_tags: dict[str, str] | None = None) -> None:
        spec, client = self.spec, self.client
        stored: dict[str, int] = {}
        self.ckpt_path = None
        if self.resume:
            self.ckpt_path, ckpt_step, stored = _resume_point(client, self.run_id)
            self.module.start_micro_step = ckpt_step * spec.train.grad_accum
            # The run was ended (FAILED when its process died): its error was that death,
            # and the resumed run ends as it really ends.
            tracking.withdraw_dead_verdict(
                client, self.run_id, reopen=False, why="resumed from its last checkpoint"
            )
            client.update_run(self.run_id, status="RUNNING")
            self.log(
                f"resuming run {self.run_id} from step {ckpt_step} (the store holds steps up to "
                f"{stored.get('train/loss', 0)})"
            )
        elif self.run_id is None:
            self.run_id = tracking.start_run(
                client,
                spec,
                parent_run_id=self.parent_run_id,
                extra_tags={**plugins.plugin_tags(spec), **(extra_tags or {})},
            )
        self.recorder = tracking.RunRecorder(client, self.run_id, skip_through_step=stored)
        # A resumed run replaying steps whose evaluation the store already holds skips it.
        self.evaluated_through = min(
            (stored.get(f"objective/{o.name}", -1) for o in spec.objectives), default=-1
        )
        self.events = RunEvents(
            [
                MlflowRecorderObserver(self.recorder, spec.train.log_every, self.log),
                *self.user_observers,
            ]
        )
        self.started = time.perf_counter()

    def costs(self) -> dict[str, float]:
        return {
            "trainable_params": float(trainable_parameters(self.model)),
            "peak_mem_mb": self.memory_mark.peak_above_mb(),
            "train_time_s": time.perf_counter() - self.started,
        }

    def evaluate(self, step: int, full_state: dict | None = None) -> dict[str, float]:
        """Measure the objectives at ``step`` and announce them (skipped on a resumed run
        for steps the store already holds). ``full_state``: the weights a sharding strategy
        gathered, for the evaluation copy."""
        if full_state is not None:
            self.eval_model.load_state_dict(checkpoints.trained_model_state(full_state))
        if step <= self.evaluated_through:
            return {}
        spec = self.spec
        with (
            self.module.scoring_with(self.eval_model),
            _on_device(self.eval_model, self.module.device),
        ):
            result = evaluate(
                self.eval_model,
                self.base.tokenizer,
                self.module.evaluation_rows(self.eval_rows),
                spec.objectives,
                spec.eval,
                max_length=spec.train.max_length,
                costs=self.costs(),
                seed=spec.train.seed,
                terms=lambda: self.module.heldout_terms(self.eval_encoded, spec.eval.batch_size),
            )
        self.trajectory.append((step, dict(result.objectives)))
        self.events.evaluation(Evaluation(step, result.objectives, result.metrics, result.samples))
        return result.objectives

    # -- train and record ------------------------------------------------------------------

    def train(self, interrupted) -> None:
        spec, client, recorder = self.spec, self.client, self.recorder
        recorder.set_tags(
            {
                "workbench.kernels": "none (kernels: off)"
                if self.kernel_usage is None
                else "pending",
                "workbench.base": self.base.name,
                **liveness.process_tags(),
            }
        )
        if not self.resume:
            liveness.reap_dead_runs(client, [client.get_run(self.run_id).info.experiment_id])
        recorder.log_metrics(self.stats.as_metrics(), step=0)
        recorder.log_metrics(
            {"cost/trainable_params": float(trainable_parameters(self.model))}, step=0
        )
        base_scores = {
            f"base/exact_match/{task_name}": f"{score:g}"
            for task_name, score in self.base.info.get("exact_match", {}).items()
        }
        if base_scores and not self.resume:
            from mlflow.entities import Param

            # The base's scores are one number per run, the same for every run on that base:
            # as params they sit with the run's settings instead of charting as constant bars.
            client.log_batch(
                self.run_id, params=[Param(k, v) for k, v in base_scores.items()], synchronous=True
            )
        if self.stats.truncated_rows:
            self.log(
                f"note: {self.stats.truncated_rows} of {self.stats.rows} rows were longer than "
                f"train.max_length={spec.train.max_length} and were truncated "
                f"({self.stats.dropped_rows} dropped: nothing left to learn)"
            )
        self.events.start(
            RunContext(
                self.run_id,
                spec,
                spec.train.steps,
                self.module.start_micro_step // spec.train.grad_accum,
                self.base.name,
            )
        )
        self.evaluate(0)
        callbacks = [
            RunEventsCallback(
                self,
                spec.train.eval_every,
                lambda: interrupted.flag or self.events.stop_reason is not None,
            )
        ]
        if spec.train.checkpoint_every:
            folder = paths.checkpoint_dir(client.tracking_uri) / self.run_id
            callbacks.append(CheckpointCallback(folder, spec.train.checkpoint_every, recorder))
        self.trainer = trainer = _make_trainer(spec, callbacks, self.model, progress=self.progress)
        try:
            trainer.fit(self.module, ckpt_path=self.ckpt_path)
        except SystemExit:
            # Lightning turns Ctrl-C / SIGTERM into sys.exit(1) after a graceful shutdown.
            raise KeyboardInterrupt from None

    def record(self) -> dict[str, float]:
        spec, recorder = self.spec, self.recorder
        # Sharded weights: every rank gathers them once more after training (_train_other_rank).
        final = self.evaluate(
            spec.train.steps, strategies.gather_full_state(self.trainer) if self.sharded else None
        )
        if self.kernel_usage is not None:
            # Recorded after training: only ops that actually ran are named.
            recorder.set_tags({"workbench.kernels": self.kernel_usage.tag()})
            recorder.log_metrics(self.kernel_usage.metrics(), step=spec.train.steps)
        cost = self.costs()
        recorder.log_metrics(
            {"perf/peak_mem_mb": cost["peak_mem_mb"], "perf/train_time_s": cost["train_time_s"]},
            step=spec.train.steps,
        )
        if spec.tracking.log_model:
            with tempfile.TemporaryDirectory() as folder:
                self.eval_model.save_pretrained(folder, safe_serialization=True)
                self.base.tokenizer.save_pretrained(folder)
                _store_model(recorder, folder, self.client.tracking_uri, self.run_id, self.log)
        return final

    def _train_other_rank(self) -> RunResult:
        """Ranks other than 0 only train: they create, record and end no MLflow run. The same
        callbacks keep the per-step all-reduce, the gathers of sharded weights and the
        checkpoint saves in step with rank 0 (a sharded save writes each rank's shards into
        rank 0's folder). A resumed run reads the checkpoint from the same folder as rank 0,
        so on several machines that folder must be shared (docs/scaling.md)."""
        spec = self.spec
        callbacks = [RunEventsCallback(None, spec.train.eval_every)]
        if spec.train.checkpoint_every:
            callbacks.append(CheckpointCallback(Path("."), spec.train.checkpoint_every))
        ckpt = None
        if self.resume:
            ckpt = checkpoints.last(
                paths.checkpoint_dir(tracking.connect().tracking_uri) / self.run_id
            )
            # This rank's slice of each global batch continues from the checkpoint's step too.
            self.module.start_micro_step = checkpoints.step(ckpt) * spec.train.grad_accum
        trainer = _make_trainer(spec, callbacks, self.model, progress=False)
        trainer.fit(self.module, ckpt_path=ckpt)
        if self.sharded:
            strategies.gather_full_state(trainer)  # rank 0's final evaluation and saved model
        return RunResult(None, "FINISHED")

    def execute(self) -> RunResult:
        """prepare -> open -> train -> record; every exit after ``open`` ends the run
        FINISHED, FAILED (with the error) or KILLED, and the observers hear it."""
        import torch

        self.prepare()
        if self.rank != 0:
            return self._train_other_rank()
        with _Interrupted() as interrupted:
            try:
                self.open()
            except BaseException:
                # Ctrl-C (or a store error) after the run was created but before its recorder
                # existed: end it here, so it is never left RUNNING.
                if (
                    self.run_id is not None
                    and getattr(self, "recorder", None) is None
                    and not self.resume
                ):
                    tracking.end_run(self.client, self.run_id, "KILLED")
                raise
            run_id = self.run_id
            try:
                self.train(interrupted)
                final = self.record()
            except KeyboardInterrupt:
                self.events.end("KILLED", self.events.stop_reason)
                raise
            except WorkbenchError as err:
                self.events.end("FAILED", f"{type(err).__name__}: {err}")
                raise RunFailed(f"run {run_id} failed: {err}") from None
            except BaseException as err:
                import traceback

                self.events.end("FAILED", f"{type(err).__name__}: {err}", traceback.format_exc())
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
            self.events.end("FINISHED")
            if self.recorder.fallback_path is not None:
                self.log(
                    f"warning: the store was unreachable; what run {run_id} could not send is in "
                    f"{self.recorder.fallback_path} (send it with workbench.tracking.replay_fallback)"
                )
        # Finished runs keep their final weights in MLflow; their checkpoints are only disk use.
        shutil.rmtree(paths.checkpoint_dir(self.client.tracking_uri) / run_id, ignore_errors=True)
        return RunResult(run_id, "FINISHED", final, self.trajectory)

    def execute_evaluation(self, model=None, tokenizer=None) -> RunResult:
        """prepare (with ``model`` in place of the base, if given) -> open -> one evaluation."""
        self.prepare(model, tokenizer)
        self.open(extra_tags={"workbench.kind": "evaluation"})
        try:
            self.recorder.set_tags({"workbench.base": self.base.name})
            self.recorder.log_metrics(
                {"cost/trainable_params": float(trainable_parameters(self.model))}, step=0
            )
            self.events.start(RunContext(self.run_id, self.spec, 0, 0, self.base.name))
            objectives = self.evaluate(0)
        except BaseException as err:
            self.events.end(
                "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED",
                f"{type(err).__name__}: {err}",
            )
            raise
        self.events.end("FINISHED")
        return RunResult(self.run_id, "FINISHED", objectives, self.trajectory)


def _frozen_copy(model):
    """An independent, frozen copy of ``model`` in eval mode (a method's reference)."""
    import copy

    reference = copy.deepcopy(model)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def _store_model(recorder, folder: str, uri: str, run_id: str, log) -> None:
    """Log the weights as the run's ``model/`` artifact; if the store is unreachable, keep them
    in a local folder the user is told about, so the trained model is never lost."""
    try:
        recorder.log_artifacts(folder, "model")
    except TrackingError as err:
        keep = tracking.fallback_dir(uri) / f"{run_id}-model"
        shutil.copytree(folder, keep, dirs_exist_ok=True)
        log(
            f"warning: the model of run {run_id} could not be stored ({err}); it was saved to {keep}"
        )


@contextlib.contextmanager
def _on_device(model, device):
    """``model`` on ``device`` for the duration (the evaluation copy of sharded weights is kept
    in CPU memory between evaluations; the trained model itself never moves)."""
    home = next(model.parameters()).device
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)


def _check_distribution(train) -> None:
    """The strategy runs here and the launcher started the spec's layout (else SpecError)."""
    why = preflight.strategy_problem(train)
    if why is not None:
        raise SpecError(f"invalid run spec:\n  train.strategy = {train.strategy!r}: {why}")
    cluster.check_layout(train)


def _make_trainer(spec, callbacks, model, progress: bool):
    import warnings

    import lightning as L

    # Our batch sampler positions itself at the checkpoint's step (GlobalBatchSampler), which
    # Lightning cannot see; its "dataloader is not resumable" warning does not apply.
    warnings.filterwarnings(
        "ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*"
    )

    t = spec.train
    if progress:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=max(1, t.steps // 50))]
    return L.Trainer(
        max_steps=t.steps,
        max_epochs=1,
        accumulate_grad_batches=t.grad_accum,
        gradient_clip_val=t.grad_clip,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategies.lightning_strategy(t, model),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
        limit_val_batches=0,
    )
