"""Train options for memory and speed: ``train.gradient_checkpointing``, ``train.precision:
bf16-mixed`` on a CPU and ``train.compile``, each in whole runs on the fast tiny base."""

from __future__ import annotations

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from peft.tuners.lora import LoraLayer

import workbench
from tests.conftest import fast_spec, own_store, run_cli, sqlite_uri
from workbench import tracking
from workbench.models.frozen_linear import RecastLinear
from workbench.models.kernel_patch import KernelUsage
from workbench.running import compile as compile_option
from workbench.running import pipeline
from workbench.running.events import RunObserver
from workbench.spec.errors import RunFailed, SpecError
from workbench.spec.mlflow_names import COMPILE_TAG

pytestmark = pytest.mark.slow

HELDOUT_NLL = {"name": "heldout_nll", "direction": "min", "source": "term:completion"}
EVAL_LOSS = {"name": "eval_loss", "direction": "min", "source": "metric:eval_loss"}


class Watch(RunObserver):
    """What a run announced: each step's metrics, its tags, its kernel counts, its log."""

    def __init__(self):
        self.steps: dict[int, dict[str, float]] = {}
        self.tags: dict[str, str] = {}
        self.kernel_calls: dict[str, float] = {}
        self.objectives: dict[int, dict[str, float]] = {}
        self.lines: list[str] = []

    def on_step(self, step, metrics):
        self.steps[step] = dict(metrics)

    def on_tags(self, tags):
        self.tags.update(tags)

    def on_kernels(self, step, ran, counts):
        self.kernel_calls = dict(counts)

    def on_evaluation(self, evaluation):
        self.objectives[evaluation.step] = dict(evaluation.objectives)

    def log(self, *parts):
        self.lines.append(" ".join(str(p) for p in parts))

    def series(self, key: str) -> list[float]:
        return [self.steps[s][key] for s in sorted(self.steps)]


def _run(spec: dict) -> tuple[workbench.RunResult, Watch]:
    watch = Watch()
    result = workbench.run(spec, log=watch.log, observers=[watch])
    assert result.status == "FINISHED"
    return result, watch


# -- gradient checkpointing -------------------------------------------------------------------


def _lora_spec(**train) -> dict:
    """LoRA SFT through the fused loss head (kernels: torch runs it at any vocabulary)."""
    return fast_spec(
        method="sft",
        adapter={"name": "lora", "r": 4},
        optimizer={"lr": 1e-2},
        kernels="torch",
        objectives=[HELDOUT_NLL],
        data={"source": "reverse", "train_size": 64, "eval_size": 8},
        train={"steps": 4, "batch_size": 8, "eval_every": 4, **train},
        tracking={"experiment": "train-options", "log_model": False},
    )


@pytest.fixture(scope="module")
def checkpointed_runs(tmp_path_factory):
    """The same LoRA SFT run without and with gradient checkpointing (in this process)."""
    with own_store(tmp_path_factory, "checkpointing"):
        return {on: _run(_lora_spec(gradient_checkpointing=on)) for on in (False, True)}


def test_gradient_checkpointing_trains_lora_through_the_fused_head_as_without(checkpointed_runs):
    """Recomputing the layers in the backward pass changes no number: the same losses and
    held-out loss as without it (so the adapters inside the checkpointed layers get their
    gradients). The recompute is visible in the fused ops' call counts: every patched op
    inside the decoder layers runs once more per step."""
    (plain, plain_watch), (ckpt, ckpt_watch) = checkpointed_runs[False], checkpointed_runs[True]
    torch.testing.assert_close(
        ckpt_watch.series("train/loss"), plain_watch.series("train/loss"), rtol=1e-5, atol=1e-6
    )
    assert ckpt.objectives["heldout_nll"] == pytest.approx(plain.objectives["heldout_nll"], 1e-5)
    assert plain_watch.series("train/loss")[-1] < plain_watch.series("train/loss")[0]
    for op in ("rms_norm", "swiglu"):
        assert (
            ckpt_watch.kernel_calls[f"kernels/{op}_calls"]
            > plain_watch.kernel_calls[f"kernels/{op}_calls"]
        ), op
    assert ckpt_watch.kernel_calls["kernels/fused_linear_logprobs_calls"] > 0


def test_ddp_with_gradient_checkpointing_follows_the_single_process_run(
    checkpointed_runs, tmp_path
):
    """2 CPU processes (gloo) x batch 4 with checkpointing == 1 process x batch 8 without:
    each parameter's gradient is ready once per backward, as DDP's reducer needs."""
    spec = _lora_spec(gradient_checkpointing=True, batch_size=4, devices=2, strategy="ddp")
    spec["train"]["accelerator"] = "cpu"
    (tmp_path / "store").mkdir()
    uri = sqlite_uri(tmp_path / "store")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli("run", "spec.yaml", "--no-progress", env={"MLFLOW_TRACKING_URI": uri},
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("train-options").experiment_id])
    losses = [v for _, v in tracking.metric_history(client, run.info.run_id, "train/loss")]
    single = checkpointed_runs[False][1].series("train/loss")
    # Gradient all-reduce sums in another order than one batch of 8.
    torch.testing.assert_close(losses, single, rtol=1e-3, atol=1e-4)


def test_a_model_without_gradient_checkpointing_is_refused_before_the_run(monkeypatch, store_uri):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    with pytest.raises(SpecError) as err:
        workbench.run(_lora_spec(gradient_checkpointing=True), log=lambda *a: None)
    message = str(err.value)
    assert "LlamaForCausalLM does not support gradient checkpointing" in message
    assert "set train.gradient_checkpointing: false" in message
    assert (
        tracking.connect(store_uri).search_experiments(filter_string="name='train-options'") == []
    )


# -- bf16-mixed on a CPU ----------------------------------------------------------------------


@pytest.fixture
def autocast_watch(monkeypatch) -> list:
    """For every run the test starts: its PreparedRun (the model as trained) and the
    (training mode, CPU autocast on, output dtype) of each forward of its first decoder
    layer's MLP projection, in order."""
    runs = []
    plain = pipeline.prepare_run

    def watched(*args, **kwargs):
        prepared = plain(*args, **kwargs)
        model = prepared.model
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        calls = []

        def note(module, args, output):
            calls.append((module.training, torch.is_autocast_enabled("cpu"), output.dtype))

        model.model.layers[0].mlp.down_proj.register_forward_hook(note)
        runs.append((prepared, calls))
        return prepared

    monkeypatch.setattr(pipeline, "prepare_run", watched)
    return runs


def _check_bf16(prepared, calls) -> tuple[int, int]:
    """Training-mode forwards ran in bfloat16 under CPU autocast; the evaluations before and
    after training in float32 without it; the weights stayed float32; every frozen linear
    layer keeps no bfloat16 copy of its weight (workbench.models.frozen_linear) and every
    LoRA layer (no dropout by default) takes its input uncast (peft_wrapping). Returns the
    counts of frozen linear layers and of LoRA layers (0 and 0 under full fine-tuning)."""
    training = [c for c in calls if c[0]]
    assert training and all(on and dtype == torch.bfloat16 for _, on, dtype in training), calls
    first, last = calls[0], calls[-1]
    assert first[:2] == last[:2] == (False, False) and first[2] == last[2] == torch.float32
    assert {p.dtype for p in prepared.model.parameters()} == {torch.float32}
    linears = [m for m in prepared.model.modules() if isinstance(m, torch.nn.Linear)]
    frozen = [m for m in linears if not m.weight.requires_grad]
    assert all(isinstance(m, RecastLinear) == (m in frozen) for m in linears)
    lora_layers = [m for m in prepared.model.modules() if isinstance(m, LoraLayer)]
    assert all(not m.cast_input_dtype_enabled for m in lora_layers)
    return len(frozen), len(lora_layers)


def test_bf16_mixed_sft_ends_near_the_float32_run(store_uri, autocast_watch):
    """The same 10 steps of SFT in 32-true and in bf16-mixed end with held-out losses within
    1e-3 of each other (relative). Measured on 2 cores (AMD EPYC), seeds 0-2: 7.3e-5, 7.6e-6,
    1.6e-5; the tolerance leaves a margin of more than 10x. The step-0 evaluation, before any
    update, is the same number: evaluations run in float32."""
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        spec = fast_spec(method="sft", objectives=[EVAL_LOSS], train={"precision": precision},
                         data={"source": "reverse", "train_size": 80, "eval_size": 16},
                         tracking={"experiment": "train-options", "log_model": False})  # fmt: skip
        results[precision], _ = _run(spec)
    _check_bf16(*autocast_watch[1])
    fp32 = results["32-true"].objectives["eval_loss"]
    bf16 = results["bf16-mixed"].objectives["eval_loss"]
    assert abs(bf16 - fp32) / fp32 < 1e-3, (fp32, bf16)
    assert results["32-true"].trajectory[0] == results["bf16-mixed"].trajectory[0]


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_bf16_mixed_runs_every_family_under_cpu_autocast(method, store_uri, autocast_watch):
    """DPO's and GRPO's training steps (GRPO's sampling included) under bfloat16 autocast,
    float32 weights. DPO's reference log-probs of the training rows are computed at the
    steps' precision, so its first step starts the policy on its reference (measured: 0
    exactly; a float32 table put the first step's chosen log-ratio at -3.9e-3)."""
    if method == "dpo":
        spec = fast_spec(method={"name": "dpo", "beta": 0.1},
                         data={"source": "sort", "train_size": 32, "eval_size": 8},
                         objectives=[{"name": "accuracy", "direction": "max",
                                      "source": "term:reward_accuracy"}])  # fmt: skip
    else:
        spec = fast_spec(
            method={"name": "grpo", "group_size": 4, "max_completion_length": 6},
            data={"source": "reverse", "train_size": 32, "eval_size": 8},
            adapter={"name": "lora", "r": 4},
            objectives=[
                {"name": "correct", "direction": "max", "source": "reward:correct", "weight": 1.0}
            ],  # fmt: skip
            eval={"max_new_tokens": 6},
        )
    spec["train"] = {"steps": 2, "batch_size": 4, "eval_every": 2, "precision": "bf16-mixed"}
    spec["tracking"] = {"experiment": "train-options", "log_model": False}
    _, watch = _run(spec)
    ((prepared, calls),) = autocast_watch
    frozen, lora = _check_bf16(prepared, calls)
    assert (frozen > 0 and lora > 0) == (method == "grpo")  # GRPO's run trains LoRA
    if method == "dpo":
        assert watch.series("pref/chosen_logratio")[0] == pytest.approx(0.0, abs=1e-4)
    else:
        # The completions were sampled inside the step: eval mode, under autocast.
        assert any(not train and on for train, on, _ in calls)


# -- compile ----------------------------------------------------------------------------------


def _compile_spec(**train) -> dict:
    return fast_spec(
        method="sft",
        objectives=[EVAL_LOSS],
        data={"source": "reverse", "train_size": 32, "eval_size": 8},
        train={"steps": 2, "batch_size": 8, "eval_every": 2, "compile": True, **train},
        tracking={"experiment": "train-options", "log_model": False},
    )


def test_compile_falls_back_when_torch_compile_raises(monkeypatch, store_uri):
    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler on this machine")

    monkeypatch.setattr(torch, "compile", refuse)
    _, watch = _run(_compile_spec())
    why = "torch.compile raised RuntimeError: no compiler on this machine"
    assert watch.tags[COMPILE_TAG] == f"off ({why})"
    assert [line for line in watch.lines if "train.compile" in line] == [
        f"note: train.compile: the run trains uncompiled ({why})"
    ]


def test_a_failing_first_compiled_step_falls_back_and_trains_on(monkeypatch, store_uri):
    def broken(function, **kwargs):
        def compiled(*args, **kwargs):
            raise RuntimeError("inductor could not build the graph")

        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    result, watch = _run(_compile_spec())
    assert len(watch.series("train/loss")) == 2 and result.objectives["eval_loss"] > 0
    assert watch.tags[COMPILE_TAG] == (
        "off (compiling the first training step failed: RuntimeError: inductor could not build "
        "the graph)"
    )


def test_the_tag_says_off_from_the_fallback_on_even_if_the_run_then_fails(monkeypatch, store_uri):
    def broken(function, **kwargs):
        def compiled(*args, **kwargs):
            raise RuntimeError("inductor could not build the graph")

        return compiled

    def fail_after_training(self, prepared, trainer):
        raise RuntimeError("the final evaluation broke")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(pipeline.RunPipeline, "record", fail_after_training)
    watch = Watch()
    with pytest.raises(RunFailed, match="final evaluation broke"):
        workbench.run(_compile_spec(), log=watch.log, observers=[watch])
    run = MlflowClient(store_uri).search_runs(
        [MlflowClient(store_uri).get_experiment_by_name("train-options").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[COMPILE_TAG].startswith("off (compiling the first training step failed")


def test_where_compile_cannot_apply_it_says_why(monkeypatch):
    from torch._inductor import cpp_builder, exc

    def missing():
        raise exc.InvalidCxxCompiler()

    assert compile_option.compile_problem(on_gpu=False, sharded=True).startswith(
        "the strategy shards the weights"
    )
    triton = KernelUsage("triton", 2, 2, 2)
    assert "kernels: triton runs Triton kernels" in compile_option.compile_problem(
        on_gpu=True, kernel_usage=triton
    )
    auto_on_cpu = KernelUsage("auto", 2, 0, 0, left_out={"rms_norm": "CPU", "swiglu": "CPU"})
    assert compile_option.compile_problem(on_gpu=False, kernel_usage=auto_on_cpu) is None
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    assert compile_option.compile_problem(on_gpu=False) == (
        "no C++ compiler for TorchInductor's CPU code (InvalidCxxCompiler); set CXX"
    )


def test_a_compiled_decoder_runs_compiled_in_training_and_plain_in_eval(compiled_base):
    """One compiled forward (TorchInductor): the same hidden states as the plain forward; in
    eval mode the plain forward runs (no compilation for generation's shapes). A whole
    compiled run is not tested here: compiling a training step's forward and backward took
    37 s of CPU on 2 cores (this forward alone 22 s); measured by hand, 4 compiled SFT steps
    on this base gave the uncompiled losses to 6 decimals."""
    model, compiled_calls = compiled_base
    ids = torch.randint(3, 300, (2, 9))
    mask = torch.ones_like(ids)
    model.eval()
    expected = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert compiled_calls == []
    model.train()
    got = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(compiled_calls) == 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture
def compiled_base(monkeypatch):
    """The fast base compiled by compile_decoder, with every call of the compiled code noted."""
    from workbench.models.tiny import build_or_load
    from workbench.spec.run_spec import RunSpec

    real_compile = torch.compile
    calls = []

    def noting(function, **kwargs):
        compiled = real_compile(function, **kwargs)

        def call(*args, **kw):
            calls.append(1)
            return compiled(*args, **kw)

        return call

    problem = compile_option.compile_problem(on_gpu=False)
    if problem is not None:
        pytest.skip(f"torch.compile cannot run here: {problem}")
    monkeypatch.setattr(torch, "compile", noting)
    model, _, _ = build_or_load(RunSpec.parse(fast_spec()).model.tiny, log=lambda *a: None)
    state = compile_option.compile_decoder(model, on_gpu=False, log=lambda *a: None)
    assert state.on, state.why
    return model, calls
