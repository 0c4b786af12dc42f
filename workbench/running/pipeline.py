"""Run a spec: in this process (:func:`run`) or in a fresh one
(see :mod:`workbench.running.launcher`).

The order matters for "nothing half-written": the spec is validated, the data loaded and
checked, and the model built *before* an MLflow run is created; from then on every exit
path ends the run FINISHED, FAILED (with the error) or KILLED.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import tracking
from workbench.data.corruption import corrupted_indices, dropped_row_quality
from workbench.data.encode import EncodeStats
from workbench.data.selection.selecting import Candidates, Selection, select_rows
from workbench.data.sources import load_rows
from workbench.methods.reference import build_reference
from workbench.models.adapters.applying import (
    apply_adapter,
    merge_adapter,
    save_trained,
    trainable_parameters,
)
from workbench.models.adapters.peft_wrapping import take_inputs_as_they_come
from workbench.models.base_model import BaseModel
from workbench.models.frozen_linear import recast_frozen_weights
from workbench.models.grouped_attention import shared_key_value_heads
from workbench.models.kernel_patch import patch_model
from workbench.models.loading import load_base
from workbench.running import (
    checkpoints,
    cluster,
    cpu_features,
    heap,
    liveness,
    preflight,
    strategies,
)
from workbench.running.calibration import calibration_batches
from workbench.running.callbacks import (
    CheckpointCallback,
    RunEventsCallback,
    adapter_callbacks,
)
from workbench.running.compile import CompileState, compile_decoder
from workbench.running.evaluation import evaluate
from workbench.running.events import Evaluation, RunContext, RunEvents, RunObserver, observers_list
from workbench.running.library_output import quiet_libraries
from workbench.running.process_memory import MemoryMark
from workbench.running.resuming import (
    ResumePoint,
    kernel_allocator,
    other_rank_resume_point,
    resume_point,
    resume_spec,
)
from workbench.running.signals import TrainingInterrupt
from workbench.running.step_costs import StepCostTally
from workbench.spec import components, paths, plugins, registry
from workbench.spec.entries import MethodInfo
from workbench.spec.errors import RunFailed, SpecError, WorkbenchError
from workbench.spec.mlflow_names import (
    COMPILE_TAG,
    COST_PREFIX,
    DROPPED_PRECISION_KEY,
    DROPPED_RECALL_KEY,
    KIND_EVALUATION,
    LOSS_KEY,
    OBJECTIVE_PREFIX,
    PEAK_MEM_KEY,
    TAG_ALLOCATOR,
    TAG_BASE,
    TAG_KERNELS,
    TAG_KIND,
    TRAIN_EXAMPLES_KEY,
    TRAIN_TIME_KEY,
    TRAINABLE_PARAMS_KEY,
)
from workbench.spec.run_spec import RunSpec
from workbench.tracking.observer import MlflowRecorderObserver

# Precisions whose training steps run under autocast (Lightning runs 16-mixed as bf16-mixed
# on a CPU).
MIXED_PRECISIONS = ("bf16-mixed", "16-mixed")


@dataclass
class RunResult:
    run_id: str | None
    status: str
    objectives: dict[str, float] = field(default_factory=dict)
    trajectory: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def resume(run_id: str, *, progress: bool = False, log=print) -> RunResult:
    """Continue a FAILED/KILLED run from its last checkpoint, in the same MLflow run.

    Model, optimizer, scheduler, RNG states and the data position come from the checkpoint;
    steps the store already holds are not logged again, so the history has no duplicate
    and no missing step.
    """
    return run(resume_spec(run_id), run_id=run_id, progress=progress, log=log, resume=True)


def run(
    spec: RunSpec | dict,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = False,
    log=print,
    resume: bool = False,
    observers: RunObserver | Sequence[RunObserver] | None = None,
    record_with: Callable[..., RunObserver] = MlflowRecorderObserver,
) -> RunResult:
    """Train ``spec`` in this process; return the run id and its final objectives.

    ``run_id`` continues a run created beforehand (by :func:`workbench.launch`);
    ``resume=True`` continues it from its last checkpoint (see :func:`resume`).
    ``observers`` (:class:`workbench.running.events.RunObserver`) hear every event of the run
    (its start, records, steps, evaluations and end) after the MLflow recorder;
    ``record_with(recorder, log_every, log)`` builds the observer that records the run
    (default: :class:`~workbench.tracking.observer.MlflowRecorderObserver`).
    Raises :class:`RunFailed` (run ended FAILED) or ``KeyboardInterrupt`` (ended KILLED).
    Other libraries' banners, tips and progress bars are hidden while it trains.
    """
    with run_settings():
        pipeline = RunPipeline(
            spec,
            run_id=run_id,
            parent_run_id=parent_run_id,
            progress=progress,
            log=log,
            resume=resume,
            observers=observers_list(observers),
            record_with=record_with,
        )
        return pipeline.execute()


@contextlib.contextmanager
def run_settings():
    """What a run sets for its duration: other libraries' output hidden, and in a process
    without CUDA the attention's key/value heads shared rather than copied
    (:mod:`workbench.models.grouped_attention`); the process group a multi-process run
    started is destroyed when it ends (:func:`cluster.process_group_ended`)."""
    import torch

    with (
        quiet_libraries(),
        shared_key_value_heads(on_cpu=not torch.cuda.is_available()),
        cluster.process_group_ended(),
    ):
        yield


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
    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    if run_name is not None:
        spec = spec.updated(**{"tracking.run_name": run_name})
    with run_settings():
        pipeline = RunPipeline(
            spec,
            parent_run_id=parent_run_id,
            log=lambda *a: None,
            observers=observers_list(observers),
        )
        return pipeline.execute_evaluation(model, tokenizer)


@dataclass(frozen=True)
class PreparedRun:
    """What a run is made of, built before anything is written (:func:`prepare_run`).

    ``model`` is the base with its adapter (what trains); ``eval_model`` what evaluations
    score (``model`` itself, or on rank 0 of a sharding strategy a whole copy loaded with the
    gathered weights); ``module`` the method's LightningModule; ``stats`` what encoding the
    training rows found; ``eval_encoded`` the held-out rows encoded for ``term:`` objectives
    and a precomputed reference (else empty); ``client`` the MLflow store (rank 0 only);
    ``resume_from`` where a resumed run continues; ``memory_mark`` the baseline training's
    peak memory is measured above; ``compiled`` whether training steps run compiled
    (``train.compile``; None when not asked for); ``selection`` the rows ``data.select`` kept
    (``train_rows`` are those rows; None without a selector) and ``corrupted`` the candidate
    rows ``data.corrupt_fraction`` corrupted.
    """

    spec: RunSpec
    info: MethodInfo
    base: BaseModel
    model: Any
    module: Any
    train_rows: list
    eval_rows: list
    eval_encoded: list
    stats: EncodeStats
    kernel_usage: Any
    sharded: bool
    eval_model: Any
    client: Any
    resume_from: ResumePoint | None
    memory_mark: MemoryMark
    compiled: CompileState | None = None
    selection: Selection | None = None
    corrupted: list[int] = field(default_factory=list)

    def selection_record(self) -> dict | None:
        """What the run logs of its data curation (``data_selection.json``), or None when it
        neither selected nor corrupted rows."""
        if self.selection is None and not self.corrupted:
            return None
        if self.selection is not None:
            record = self.selection.as_record()
        else:
            every = list(range(len(self.train_rows)))
            record = {"selector": None, "candidates": len(every), "chosen": every}
        return {**record, "corrupted": self.corrupted}

    def selection_metrics(self) -> dict[str, float]:
        """How well the dropped rows find the corrupted ones (with both a selector and
        corrupted rows; else nothing)."""
        if self.selection is None or not self.corrupted:
            return {}
        quality = dropped_row_quality(self.selection.dropped(), self.corrupted)
        return {DROPPED_PRECISION_KEY: quality["precision"], DROPPED_RECALL_KEY: quality["recall"]}


def prepare_run(
    spec: RunSpec,
    *,
    rank: int = 0,
    run_id: str | None = None,
    resume: bool = False,
    log=print,
    model=None,
    tokenizer=None,
) -> PreparedRun:
    """Load the data and the model and build the method's module: everything a run needs
    before it writes anything. ``model``/``tokenizer`` replace the spec's base (an in-memory
    model to evaluate); ``run_id`` (a launched run) shows what it does while the base loads;
    ``resume`` finds the checkpoint ``run_id`` continues from."""
    import lightning as L
    import torch

    _check_distribution(spec.train)
    heap.set_freed_memory_policy(spec.train.reuse_freed_memory)
    rank_log = log if rank == 0 else (lambda *a: None)
    info = registry.METHODS[spec.method.name]
    row_kind = registry.ROW_KINDS[info.row_kind]
    # Data first: a malformed dataset must fail before the store is even opened.
    train_rows, eval_rows = load_rows(spec.data, spec.train.seed, row_kind=row_kind.name)
    client = tracking.connect(spec.tracking.uri) if rank == 0 else None
    resume_from = None
    if resume:
        resume_from = resume_point(client, run_id) if rank == 0 else other_rank_resume_point(run_id)
    L.seed_everything(spec.train.seed, workers=True, verbose=False)
    if model is not None:
        if tokenizer is None:
            raise WorkbenchError("evaluate_model: pass the model's tokenizer along with it")
        base = BaseModel(model, tokenizer, type(model).__name__, {})
    else:
        # A launched run shows it is alive, and what it is doing, while the base loads
        # (a cold build of the tiny base takes minutes on loaded cores).
        beating = run_id if rank == 0 and not resume else None
        with tracking.PhaseBeat(client, beating, rank_log) as say:
            base = load_base(spec.model, log=say)
    corrupted = (
        corrupted_indices(len(train_rows), spec.data.corrupt_fraction, spec.train.seed)
        if spec.data.corrupt_fraction
        else []
    )
    selection = None
    if spec.data.select is not None:
        # The base (before its adapter) scores the rows; training sees only those kept.
        selection = _select(spec, base, train_rows, eval_rows)
        train_rows = [train_rows[i] for i in selection.chosen]
    # The method's reference strategy, from the base before its adapter is applied.
    reference = build_reference(spec, base.model)
    encode = registry.resolve(row_kind.encode)
    encoded, stats = encode(base.tokenizer, train_rows, spec.train.max_length)
    calibration = None
    if spec.adapter.needs_calibration():
        pad_id = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
        calibration = calibration_batches(encoded, registry.resolve(row_kind.collate), pad_id)
    trained = apply_adapter(base.model, spec.adapter, calibration)
    on_gpu = spec.train.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    kernel_usage = patch_model(
        trained,
        spec.kernels,
        on_gpu=on_gpu,
        adapter=spec.adapter,
        allocator=kernel_allocator(resume_from),
    )
    if spec.train.precision in MIXED_PRECISIONS:
        # Under autocast, frozen linear layers would each keep a low-precision weight copy
        # until the backward pass (they keep the float32 weight and cast it again instead),
        # and LoRA layers would widen a bfloat16 input only for autocast to narrow it back.
        recast_frozen_weights(trained)
        take_inputs_as_they_come(trained)
    slow_precision = cpu_features.bf16_warning(spec.train.precision, on_gpu)
    if slow_precision:
        rank_log(slow_precision)
    if spec.train.gradient_checkpointing:
        _checkpoint_activations(trained)
    module_class = registry.load_module_class(spec.method.name)
    module = module_class(
        spec,
        trained,
        base.tokenizer,
        encoded,
        kernel_usage,
        reference=reference,
        rows={"train": train_rows, "eval": eval_rows},
        # A resumed run's slice of each global batch continues from the checkpoint's step.
        start_micro_step=resume_from.step * spec.train.grad_accum if resume_from else 0,
    )
    needs_terms = any(o.kind == "term" for o in spec.objectives)
    eval_encoded = (
        encode(base.tokenizer, eval_rows, spec.train.max_length)[0]
        if needs_terms or reference.precomputes
        else []
    )
    _prepare_reference(reference, module, encoded, eval_encoded, spec)
    # Sharded weights never sit whole in the trained model: rank 0 evaluates and saves a
    # copy of it, loaded with the weights all ranks gather at each evaluation.
    sharded = strategies.shards_weights(spec.train.strategy)
    eval_model = _frozen_copy(trained) if sharded and rank == 0 else trained
    compiled = None
    if spec.train.compile:
        compiled = compile_decoder(
            trained, on_gpu=on_gpu, kernel_usage=kernel_usage, sharded=sharded, log=rank_log
        )
    return PreparedRun(
        spec=spec,
        info=info,
        base=base,
        model=trained,
        module=module,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_encoded=eval_encoded,
        stats=stats,
        kernel_usage=kernel_usage,
        sharded=sharded,
        eval_model=eval_model,
        client=client,
        resume_from=resume_from,
        # Training's own peak: not hidden by the load's or the reference precompute's above.
        memory_mark=MemoryMark(),
        compiled=compiled,
        selection=selection,
        corrupted=corrupted,
    )


def _select(spec: RunSpec, base: BaseModel, train_rows: list, eval_rows: list) -> Selection:
    """``data.select`` on the training rows, scored by the base, under its own random state
    (the run's seeded state is the same with a selector as without)."""
    import torch

    candidates = Candidates(
        train_rows,
        base.model,
        base.tokenizer,
        max_length=spec.train.max_length,
        batch_size=spec.eval.batch_size,
        source=spec.data.source,
        held_out=eval_rows,
    )
    with torch.random.fork_rng(devices=[]):
        return select_rows(candidates, spec.data.select, spec.train.seed)


class RunPipeline:
    """One run: :func:`prepare_run` (data, model, module: before anything is written), then
    :meth:`open` the MLflow run, :meth:`train` (evaluating every ``eval_every`` steps) and
    :meth:`record` the outcome. Every record is announced to the run's events, which the MLflow
    recorder observes (``record_with`` builds that observer from the run's
    :class:`~workbench.tracking.RunRecorder`; another observer may take its place)."""

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
        record_with: Callable[..., RunObserver] = MlflowRecorderObserver,
    ):
        self.spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
        self.run_id, self.parent_run_id = run_id, parent_run_id
        self.progress, self.log, self.resume = progress, log, resume
        self.user_observers = list(observers)
        self.record_with = record_with
        self.rank = cluster.global_rank(self.spec.train)
        self.trajectory: list[tuple[int, dict[str, float]]] = []
        # Set by execute (prepare_run), then open: the run as built, and as recorded.
        self.prepared: PreparedRun | None = None
        self.recorder: tracking.RunRecorder | None = None
        self.events = RunEvents()
        self.evaluated_through = -1
        self.started = time.perf_counter()
        # The rows the run trains on (its data budget); none until it trains.
        self.train_examples = 0

    def prepare(self, model=None, tokenizer=None) -> PreparedRun:
        """:func:`prepare_run` for this run's spec and rank (``model``/``tokenizer``: an
        in-memory model in place of the spec's base)."""
        self.prepared = prepare_run(
            self.spec,
            rank=self.rank,
            run_id=self.run_id,
            resume=self.resume,
            log=self.log,
            model=model,
            tokenizer=tokenizer,
        )
        return self.prepared

    # -- the MLflow run and its observers --------------------------------------------------

    def open(self, prepared: PreparedRun, extra_tags: dict[str, str] | None = None) -> None:
        spec, client = self.spec, prepared.client
        stored: dict[str, int] = {}
        if prepared.resume_from is not None:
            stored = prepared.resume_from.stored
            # The run was ended (FAILED when its process died): its error was that death,
            # and the resumed run ends as it really ends.
            tracking.withdraw_dead_verdict(
                client, self.run_id, reopen=False, why="resumed from its last checkpoint"
            )
            client.update_run(self.run_id, status="RUNNING")
            self.log(
                f"resuming run {self.run_id} from step {prepared.resume_from.step} (the store "
                f"holds steps up to {stored.get(LOSS_KEY, 0)})"
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
            (stored.get(f"{OBJECTIVE_PREFIX}{o.name}", -1) for o in spec.objectives), default=-1
        )
        self.step_costs = StepCostTally()
        self.events = RunEvents(
            [
                self.record_with(self.recorder, spec.train.log_every, self.log),
                self.step_costs,
                *self.user_observers,
            ]
        )
        self.started = time.perf_counter()

    def costs(self, prepared: PreparedRun) -> dict[str, float]:
        return {
            "trainable_params": float(trainable_parameters(prepared.model)),
            "peak_mem_mb": prepared.memory_mark.peak_above_mb(),
            "train_time_s": time.perf_counter() - self.started,
            "train_examples": float(self.train_examples),
            **self.step_costs.costs(),
        }

    def evaluate(
        self, prepared: PreparedRun, step: int, full_state: dict | None = None
    ) -> dict[str, float]:
        """Measure the objectives at ``step`` and announce them (skipped on a resumed run
        for steps the store already holds). ``full_state``: the weights a sharding strategy
        gathered, for the evaluation copy."""
        eval_model, module = prepared.eval_model, prepared.module
        if full_state is not None:
            eval_model.load_state_dict(checkpoints.trained_model_state(full_state))
        if step <= self.evaluated_through:
            return {}
        spec = self.spec
        with module.scoring_with(eval_model), _on_device(eval_model, module.device):
            result = evaluate(
                eval_model,
                prepared.base.tokenizer,
                module.evaluation_rows(prepared.eval_rows),
                spec.objectives,
                spec.eval,
                max_length=spec.train.max_length,
                costs=self.costs(prepared),
                seed=spec.train.seed,
                terms=lambda: module.heldout_terms(prepared.eval_encoded, spec.eval.batch_size),
            )
        self.trajectory.append((step, dict(result.objectives)))
        self.events.evaluation(Evaluation(step, result.objectives, result.metrics, result.samples))
        return result.objectives

    # -- train and record ------------------------------------------------------------------

    def train(self, prepared: PreparedRun, interrupted):
        """Announce the run's start and what it is made of, then train; returns the trainer."""
        spec, client, base = self.spec, prepared.client, prepared.base
        if not self.resume:
            liveness.reap_dead_runs(client, [client.get_run(self.run_id).info.experiment_id])
        resumed_from = prepared.resume_from.step if prepared.resume_from is not None else 0
        self.events.start(RunContext(self.run_id, spec, spec.train.steps, resumed_from, base.name))
        self.events.tags(
            {
                TAG_KERNELS: "none (kernels: off)" if prepared.kernel_usage is None else "pending",
                TAG_BASE: base.name,
                TAG_ALLOCATOR: kernel_allocator(prepared.resume_from),
                **({} if prepared.compiled is None else {COMPILE_TAG: prepared.compiled.tag()}),
                **liveness.process_tags(),
            }
        )
        if prepared.compiled is not None:
            # The first compiled step may fall back after the run announced "on".
            prepared.compiled.announce = lambda tag: self.events.tags({COMPILE_TAG: tag})
        self.events.data_statistics({**prepared.stats.as_metrics(), **prepared.selection_metrics()})
        record = prepared.selection_record()
        if record is not None:
            self.events.data_selection(record)
        self.train_examples = len(prepared.train_rows)
        self.events.costs(
            0,
            {
                TRAINABLE_PARAMS_KEY: float(trainable_parameters(prepared.model)),
                TRAIN_EXAMPLES_KEY: float(self.train_examples),
            },
        )
        # The base's scores are one number per run, the same for every run on that base:
        # as params they sit with the run's settings instead of charting as constant bars.
        base_scores = {
            f"base/exact_match/{task_name}": f"{score:g}"
            for task_name, score in base.info.get("exact_match", {}).items()
        }
        if base_scores and not self.resume:
            self.events.params(base_scores)
        truncation = prepared.stats.truncation_note(spec.train.max_length)
        if truncation:
            self.log(f"warning: {truncation}")
        rows = len(prepared.module.encoded)
        if spec.train.batch_size > rows:
            # The batch sampler never repeats a row within a step (data.batches).
            self.log(
                f"note: train.batch_size={spec.train.batch_size} is more than the {rows} "
                "training rows: each step trains on all of them (a full batch)"
            )
        self.evaluate(prepared, 0)
        callbacks = [
            RunEventsCallback(
                spec.train.eval_every,
                self.events,
                lambda step, full_state: self.evaluate(prepared, step, full_state),
                lambda: interrupted.flag or self.events.stop_reason is not None,
            )
        ]
        if spec.train.checkpoint_every:
            folder = paths.checkpoint_dir(client.tracking_uri) / self.run_id
            callbacks.append(CheckpointCallback(folder, spec.train.checkpoint_every, self.events))
        callbacks += adapter_callbacks(prepared.model, spec.adapter)
        trainer = _make_trainer(spec, callbacks, prepared.model, progress=self.progress)
        checkpoint = prepared.resume_from.checkpoint if prepared.resume_from else None
        try:
            trainer.fit(prepared.module, ckpt_path=checkpoint)
        except SystemExit:
            # Lightning turns Ctrl-C / SIGTERM into sys.exit(1) after a graceful shutdown.
            raise KeyboardInterrupt from None
        return trainer

    def record(self, prepared: PreparedRun, trainer) -> dict[str, float]:
        spec = self.spec
        # Sharded weights: every rank gathers them once more after training (_train_other_rank).
        final = self.evaluate(
            prepared,
            spec.train.steps,
            strategies.gather_full_state(trainer) if prepared.sharded else None,
        )
        usage = prepared.kernel_usage
        if usage is not None:
            # Announced after training: only ops that actually ran are named.
            self.events.kernels(spec.train.steps, usage.tag(), usage.metrics())
        cost = self.costs(prepared)
        self.events.costs(
            spec.train.steps,
            {
                PEAK_MEM_KEY: cost["peak_mem_mb"],
                TRAIN_TIME_KEY: cost["train_time_s"],
                **{
                    f"{COST_PREFIX}{name}": cost[name]
                    for name in ("step_s", "tokens_per_s")
                    if name in cost
                },
            },
        )
        if spec.tracking.log_model:
            with tempfile.TemporaryDirectory() as folder:
                # An adapter with parameters of its own outside peft (SSF) is merged into the
                # weights first, so the stored model is the base's class (the run is over).
                save_trained(merge_adapter(prepared.eval_model, spec.adapter), folder)
                prepared.base.tokenizer.save_pretrained(folder)
                self.events.model(folder)
        return final

    def _train_other_rank(self, prepared: PreparedRun) -> RunResult:
        """Ranks other than 0 only train: they create, record and end no MLflow run. The same
        callbacks keep the per-step all-reduce, the gathers of sharded weights and the
        checkpoint saves in step with rank 0 (a sharded save writes each rank's shards into
        rank 0's folder). A resumed run reads the checkpoint from the same folder as rank 0,
        so on several machines that folder must be shared (docs/scaling.md)."""
        spec = self.spec
        callbacks = [RunEventsCallback(spec.train.eval_every)]
        if spec.train.checkpoint_every:
            callbacks.append(CheckpointCallback(Path("."), spec.train.checkpoint_every))
        callbacks += adapter_callbacks(prepared.model, spec.adapter)
        checkpoint = prepared.resume_from.checkpoint if prepared.resume_from else None
        trainer = _make_trainer(spec, callbacks, prepared.model, progress=False)
        trainer.fit(prepared.module, ckpt_path=checkpoint)
        if prepared.sharded:
            strategies.gather_full_state(trainer)  # rank 0's final evaluation and saved model
        return RunResult(None, "FINISHED")

    def execute(self) -> RunResult:
        """prepare -> open -> train -> record; every exit after ``open`` ends the run
        FINISHED, FAILED (with the error) or KILLED, and the observers hear it."""
        import torch

        prepared = self.prepare()
        if self.rank != 0:
            return self._train_other_rank(prepared)
        with TrainingInterrupt() as interrupted:
            try:
                self.open(prepared)
            except BaseException:
                # Ctrl-C (or a store error) after the run was created but before its recorder
                # existed: end it here, so it is never left RUNNING.
                if self.run_id is not None and self.recorder is None and not self.resume:
                    tracking.end_run(prepared.client, self.run_id, "KILLED")
                raise
            run_id = self.run_id
            try:
                trainer = self.train(prepared, interrupted)
                final = self.record(prepared, trainer)
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
                        f"run {run_id} failed: {type(err).__name__}: {err} "
                        "(the traceback is in the run's error.txt artifact)"
                    ) from err
                raise
            self.events.end("FINISHED")
            if self.recorder.fallback_path is not None:
                self.log(
                    f"warning: the store was unreachable; what run {run_id} could not send is in "
                    f"{self.recorder.fallback_path} "
                    "(send it with workbench.tracking.replay_fallback)"
                )
        # Finished runs keep their final weights in MLflow; their checkpoints are only disk use.
        shutil.rmtree(
            paths.checkpoint_dir(prepared.client.tracking_uri) / run_id, ignore_errors=True
        )
        return RunResult(run_id, "FINISHED", final, self.trajectory)

    def execute_evaluation(self, model=None, tokenizer=None) -> RunResult:
        """prepare (with ``model`` in place of the base, if given) -> open -> one evaluation."""
        prepared = self.prepare(model, tokenizer)
        self.open(prepared, extra_tags={TAG_KIND: KIND_EVALUATION})
        try:
            self.events.start(RunContext(self.run_id, self.spec, 0, 0, prepared.base.name))
            self.events.tags({TAG_BASE: prepared.base.name})
            self.events.costs(
                0,
                {
                    TRAINABLE_PARAMS_KEY: float(trainable_parameters(prepared.model)),
                    TRAIN_EXAMPLES_KEY: 0.0,  # an evaluation trains on no rows
                },
            )
            objectives = self.evaluate(prepared, 0)
        except BaseException as err:
            self.events.end(
                "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED",
                f"{type(err).__name__}: {err}",
            )
            raise
        self.events.end("FINISHED")
        return RunResult(self.run_id, "FINISHED", objectives, self.trajectory)


def _checkpoint_activations(model) -> None:
    """``train.gradient_checkpointing``: transformers' activation checkpointing of the
    trained model's decoder layers, non-reentrant (SpecError for a model without it).

    Non-reentrant (``torch.utils.checkpoint``'s ``use_reentrant=False``) rather than the
    reentrant variant: under LoRA the frozen input embeddings' outputs need no gradient, and a
    reentrant checkpoint whose inputs need none returns outputs that need none, so the
    adapters inside the layers would get no gradient (peft's workaround is a hook that makes
    the embeddings' outputs require grad). The non-reentrant one follows the parameters used
    inside the layer, needs no such hook, passes keyword arguments through, and lets each
    parameter's gradient become ready once per backward, as DDP's reducer expects.

    The fused loss head runs the same decoder (``kernel_patch.head_logprobs`` calls
    ``base.model``), so its layers are checkpointed too. Only training-mode forwards
    checkpoint (transformers checks ``self.training``): evaluations and generation run as
    before, with their KV cache; in training, transformers turns the cache off itself.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise SpecError(
            "invalid run spec:\n  train.gradient_checkpointing = True: "
            f"{type(base).__name__} does not support gradient checkpointing (its "
            "supports_gradient_checkpointing is false); set train.gradient_checkpointing: false"
        )
    settings = {"use_reentrant": False}
    enable = getattr(base, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers 5 (gradient_checkpointing_enable is deprecated)
        enable(activation_checkpointing_kwargs=settings)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=settings)


def _prepare_reference(reference, module, encoded, eval_encoded, spec) -> None:
    """Let the reference precompute what it needs (the rows' reference log-probs).

    Under a mixed precision the training rows' table is computed under the same autocast as
    the training steps, so a step's policy and reference log-probs agree until the first
    update (a float32 table against bfloat16 steps would start DPO's implicit rewards off
    zero); the held-out rows' table stays float32, like the evaluations that read it.
    """
    autocast = _training_autocast(spec.train.precision, module.device)
    batch_size = spec.eval.batch_size
    if autocast is None:
        reference.prepare(module, {"train": encoded, "eval": eval_encoded}, batch_size)
        return
    with autocast:
        reference.prepare(module, {"train": encoded, "eval": []}, batch_size)
    reference.prepare(module, {"train": [], "eval": eval_encoded}, batch_size)


def _training_autocast(precision: str, device):
    """The autocast Lightning runs training steps under for ``precision`` on ``device``
    (bf16-mixed, and 16-mixed, which Lightning turns into bf16-mixed on a CPU), else None."""
    import torch

    if precision not in MIXED_PRECISIONS:
        return None
    half = precision == "16-mixed" and device.type == "cuda"
    dtype = torch.float16 if half else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def _frozen_copy(model):
    """An independent, frozen copy of ``model`` in eval mode (a method's reference)."""
    import copy

    reference = copy.deepcopy(model)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


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
    import lightning as L

    t = spec.train
    optimizer = components.OPTIMIZERS[spec.optimizer.name]
    if progress:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks = [*callbacks, TQDMProgressBar(refresh_rate=max(1, t.steps // 50))]
    return L.Trainer(
        max_steps=t.steps,
        max_epochs=1,
        accumulate_grad_batches=t.grad_accum,
        # An optimizer with no backward (MeZO) has no gradient to clip.
        gradient_clip_val=None if optimizer.trains_without_backward else t.grad_clip,
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
