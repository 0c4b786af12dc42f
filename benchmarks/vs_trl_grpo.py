"""The two sides of the GRPO comparison in ``benchmarks/vs_trl.py``, each run in a child process.

Both train GRPO on the same prompts (the ``prompt`` column of one JSONL file, the rows the
workbench keeps for training after its seeded held-out split) with the same model folder,
prompts per step, group size, sampling (temperature 1, no top-p or top-k), completion
length, reward, learning rate, schedule, clipping and AdamW; beta 0 (no reference model),
one optimizer step per batch of samples, the per-completion mean of the clipped surrogate,
rewards centred and scaled in their group, the job's precision (float32, or bf16 autocast over
float32 weights on both), full fine-tuning, no gradient checkpointing. Every
completion is exactly ``completion`` tokens long: the workbench sets ``min_completion_length``
to the maximum, TRL passes ``min_new_tokens`` through ``generation_kwargs``. The reward
(``job["reward"]``) is the workbench's built-in ``length`` (``min(words / 16, 1)``) on the
``fewshot-30m`` shape, and :func:`even_word_share` on the word-level ``135m`` shape (where
every completion of a fixed number of tokens has that many words, so ``length`` would give
every completion the same reward and GRPO no advantage to train on): the workbench names it
(registered through ``workbench.register_reward``), TRL calls the same Python object as its
reward function. TRL has no padding-free option for GRPO; the workbench's is used where its
spec offers it (``job["padding_free"]``).

Both report the same figures (:func:`figures`) over the steps after the warm-up: wall and CPU
time, the part of the wall time spent inside the library's call that samples the completions
(generation), the completion tokens counted twice (each one generated once and trained on once;
prompt tokens are not counted on either side), and the resident memory after the imports and
the model load, its weights made resident (the baseline the parent counts the child's lifetime
peak from, see ``child_peak_memory``).

The hooks wrap, without changing what they compute, the function each library samples
with (counting its completion tokens and timing it) and, on our side, the model load (the
memory baseline).
"""

from __future__ import annotations

import tempfile
import warnings

from run_figures import PhaseClock, StepMarks, rss_with_weights_mb, throughput
from vs_trl_setup import (
    precision_note,
    train_rows,
    trl_run_settings,
    workbench_note,
    workbench_spec,
)
from workbench_child import run_spec

MAX_PROMPT_TOKENS = 128


def even_word_share(completion: str, example: dict) -> float:
    """The share of a completion's words that are even-numbered vocabulary words (``w0``,
    ``w2``, ...): a reward that differs between a prompt's completions of the word-level
    tokenizer, so GRPO's group-normalised advantages are not all zero."""
    words = completion.split()
    even = sum(1 for word in words if word[1:].isdigit() and int(word[1:]) % 2 == 0)
    return even / len(words) if words else 0.0


BENCHMARK_REWARDS = {"even_words": even_word_share}


def reward(name: str):
    """The reward both sides use: a benchmark reward registered with the workbench, or its own."""
    from workbench.objectives.scoring import REWARDS, register_reward

    if name in BENCHMARK_REWARDS and name not in REWARDS:
        register_reward(name, BENCHMARK_REWARDS[name])
    return REWARDS[name]


class GenerationTally:
    """Completion tokens sampled and the time spent sampling them, read at each step's end."""

    def __init__(self) -> None:
        self.clock = PhaseClock()
        self.completion_tokens = 0
        self._at_last_step = 0
        self.generation_wall = {0: 0.0}  # step -> the clock's wall seconds at its end

    def count(self, tokens) -> None:
        self.completion_tokens += int(tokens)

    def step_ended(self, step: int, marks: StepMarks) -> None:
        """Mark ``step``: its tokens are its completion tokens, generated and trained (x 2)."""
        new = self.completion_tokens - self._at_last_step
        self._at_last_step = self.completion_tokens
        self.generation_wall[step] = self.clock.wall_s
        marks.note(step, 2 * new)


def figures(marks: StepMarks, tally: GenerationTally, job: dict, baseline_mb: float) -> dict:
    """The figures both sides report (see the module docstring)."""
    first, last = job["warmup"], job["warmup"] + job["steps"]
    generation_s = tally.generation_wall[last] - tally.generation_wall[first]
    return {
        **throughput(marks, first, last),
        "generation_wall_s": generation_s,
        "baseline_mb": baseline_mb,
    }


# ---------------------------------------------------------------------------------------
# the workbench: workbench.run with method grpo


def spec(job: dict, store: str) -> dict:
    total, length = job["warmup"] + job["steps"], job["completion"]
    method = {"name": "grpo", "group_size": job["group"], "max_completion_length": length,
              "min_completion_length": length, "beta": 0.0, "num_iterations": 1,
              "aggregation": "sequence", "scale_rewards": "group", "temperature": 1.0,
              "top_p": 1.0, "top_k": 0, "samples_every": 10 * total}  # fmt: skip
    objective = {"name": job["reward"], "direction": "max", "source": f"reward:{job['reward']}",
                 "weight": 1.0}  # fmt: skip
    # train.max_length bounds the prompt: the chat-shaped prompts reach 1.5 x the completion.
    max_length = max(MAX_PROMPT_TOKENS, 2 * length)
    return workbench_spec(job, store, job["prompts_data"], method, objective, max_length)


def run_workbench(job: dict) -> dict:
    from workbench.methods.rl import sampling
    from workbench.running.events import RunObserver

    reward(job["reward"])
    tally, marks = GenerationTally(), StepMarks()
    sample = tally.clock.wrap(sampling.sample_completions)

    def sample_and_count(*args, **kwargs):
        completions, mask = sample(*args, **kwargs)
        tally.count(mask.sum())
        return completions, mask

    sampling.sample_completions = sample_and_count

    class MarkSteps(RunObserver):
        def on_step(self, step, metrics):
            tally.step_ended(step, marks)

    baseline_mb, kernels = run_spec(lambda store: spec(job, store), MarkSteps())
    out = figures(marks, tally, job, baseline_mb)
    out["note"] = workbench_note(job, kernels, "no reference model, ")
    return out


# ---------------------------------------------------------------------------------------
# TRL: GRPOTrainer with a GRPOConfig, generation by transformers (no vLLM)


def trl_config(job: dict, output_dir: str):
    from trl import GRPOConfig

    length = job["completion"]
    return GRPOConfig(
        **trl_run_settings(job, output_dir),
        per_device_train_batch_size=job["batch"] * job["group"],
        num_generations=job["group"],
        max_completion_length=length,
        generation_kwargs={"min_new_tokens": length},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        use_vllm=False,
    )


def run_trl(job: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    baseline = rss_with_weights_mb(model)
    tally, marks = GenerationTally(), StepMarks()
    GRPOTrainer._generate_single_turn = tally.clock.wrap(GRPOTrainer._generate_single_turn)
    generate_and_score = GRPOTrainer._generate_and_score_completions

    def generate_score_and_count(self, inputs):
        out = generate_and_score(self, inputs)
        tally.count(out["completion_mask"].sum())
        return out

    GRPOTrainer._generate_and_score_completions = generate_score_and_count

    class MarkSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            tally.step_ended(state.global_step, marks)

    train, _ = train_rows(job["prompts_data"], job["eval_fraction"])
    score = reward(job["reward"])

    def reward_function(completions, **kwargs) -> list[float]:
        return [score(completion, {}) for completion in completions]

    reward_function.__name__ = job["reward"]
    prompts = Dataset.from_list([{"prompt": row["prompt"]} for row in train])
    with tempfile.TemporaryDirectory(prefix="vs-trl-out-") as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_function,
            args=trl_config(job, output_dir),
            train_dataset=prompts,
            processing_class=tokenizer,
            callbacks=[MarkSteps()],
        )
        trainer.train()
        bf16 = trainer.args.bf16
    out = figures(marks, tally, job, baseline)
    out["note"] = (
        f"{precision_note(bf16)}, gradient checkpointing off, no reference model, "
        "transformers generate"
    )
    return out
