"""Does preference optimisation move the tiny base? DPO's gains and a MODPO sweep's front.

    python benchmarks/preference_targets.py            # 3 seeds x (DPO and RPO 200 steps each +
                                                       # MODPO 5 weights x 120 steps)
    python benchmarks/preference_targets.py --seeds 1  # seed 0 alone
    python benchmarks/preference_targets.py --quick    # 2 steps, 3 weights x 2 steps, 32 pairs: a
                                                       # smoke test of the script

Two parts, both from the default tiny base (``model: {name: tiny}``); every knob is a flag
(``--task``, ``--lr``, ``--beta``, ``--adapter``, ``--modpo-lr`` ...; ``--skip-dpo`` and
``--skip-modpo`` run one part). Both repeat for each of ``--seeds`` seeds (0, 1, 2 by default:
the seed of the training order, the sampled pairs and LoRA's initialisation); each headline is
the median over the seeds, printed with its spread:

1. DPO (full fine-tuning, beta 0.1, lr 3e-5) and RPO (the same pairs, DPO plus the chosen
   completion's NLL, lr 1e-3; ``--methods`` picks others of the family) on a built-in task's
   pairs (default `reverse`:
   the correct answer chosen, the answer made wrong rejected), each evaluated at step 0 and at the
   end on 48 held-out prompts: the held-out reward accuracy (the share of held-out pairs whose
   implicit reward ranks the chosen completion above the rejected; 0 at step 0, where the
   policy is its reference) and the task's own metric, greedy exact match. Headlines: the
   gains in points, ``BENCH <method>_reward_accuracy_gain_points <n> points target=>=15`` and
   ``BENCH <method>_task_metric_gain_points <n> points target=>=15``. ``--pairs on-policy`` trains
   on pairs whose rejected completion is the base's own mistake instead (its greedy answer
   where that is wrong, else a wrong sample at temperature 1, else the corruption), the
   "on-policy" pairs practitioners build; the held-out pairs stay the built-in ones. The
   chosen completions' log-prob over training (``pref/chosen_logps``, first and last logged
   step) is printed too: it falling while the margin grows is likelihood displacement.
2. A MODPO weight sweep (workbench.run_sweep; LoRA r16, beta 0.5, lr 1e-3; 5 weights) on the
   built-in scored pairs of `order` (the whole answer against it cut short, labelled by
   correctness at data.pairs.LABEL_TEMPERATURE): correctness
   (prefix accuracy, max) trained as the preference with weight w, length (items, min)
   through the score margin with 1 - w, against the task's fixed reference point
   (correctness 0, length 14). Each policy's held-out objectives; the number of policies that
   are non-dominated (workbench's pareto code, checked here against a brute-force dominance
   check) and beat the reference point on both objectives; each objective's Spearman
   correlation with its own training weight (correctness with w, shortness -length with
   1 - w). Headlines: ``BENCH modpo_non_dominated <n> policies target=>=3`` and
   ``BENCH modpo_spearman_min <r> rho target=>=0.8`` (the smaller of the two per seed). The
   label temperature and MODPO's beta were chosen against the same held-out prompts on seed 0
   (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

MODPO_WEIGHTS = (0.1, 0.3, 0.5, 0.7, 0.9)
MODPO_REFERENCE = {"correctness": 0.0, "length": 14.0}


def adapter(name: str) -> dict:
    return {"name": "lora", "r": 16, "alpha": 32} if name == "lora" else {"name": "full"}


# Part 1's methods and their learning rates when --lr is not given: plain DPO at the rate that
# hurt the task metric least in the settings tried (BENCHMARKS.md), RPO (DPO plus the chosen
# completion's NLL; TRL's DPOConfig(rpo_alpha=1.0)) at the SFT-like rate its NLL term takes.
PAIRWISE_LR = {"dpo": 3e-5, "rpo": 1e-3}


def dpo_spec(args, method: str, uri: str, seed: int = 0) -> dict:
    objectives = [
        {
            "name": "reward_accuracy",
            "direction": "max",
            "source": "term:reward_accuracy",
            "reference": 0,
        },
        {"name": "exact_match", "direction": "max", "source": "metric:exact_match", "reference": 0},
    ]
    return {
        "model": {"name": "tiny"},
        "data": {"source": args.task, "train_size": args.train_size, "eval_size": args.eval_size},
        "adapter": adapter(args.adapter),
        "method": {"name": method, "beta": args.beta},
        "objectives": objectives,
        "optimizer": {"name": "adamw", "lr": pairwise_lr(args, method)},
        "train": {
            "steps": args.dpo_steps,
            "batch_size": 16,
            "eval_every": args.dpo_steps,
            "seed": seed,
        },
        "eval": {"max_new_tokens": 16},
        "tracking": {"experiment": "preference-targets-dpo", "uri": uri},
    }


def modpo_spec(args, uri: str, seed: int = 0) -> dict:
    objectives = [
        {
            "name": "correctness",
            "direction": "max",
            "source": "metric:prefix_accuracy",
            "term": "preference",
            "weight": 0.5,
            "reference": MODPO_REFERENCE["correctness"],
        },
        {
            "name": "length",
            "direction": "min",
            "source": "metric:length_items",
            "term": "score_margin",
            "weight": 0.5,
            "reference": MODPO_REFERENCE["length"],
        },
    ]
    return {
        "model": {"name": "tiny"},
        "data": {"source": "order", "train_size": args.train_size, "eval_size": args.eval_size},
        "adapter": adapter(args.modpo_adapter),
        "method": {"name": "modpo", "beta": args.modpo_beta},
        "objectives": objectives,
        "optimizer": {"name": "adamw", "lr": args.modpo_lr},
        "train": {
            "steps": args.modpo_steps,
            "batch_size": 16,
            "eval_every": args.modpo_steps,
            "seed": seed,
        },
        "eval": {"max_new_tokens": 16},
        "tracking": {"experiment": "preference-targets-modpo", "uri": uri},
    }


def brute_force_non_dominated(points: list[list[float]], directions: list[str]) -> list[bool]:
    """True where no other point is at least as good on every objective and better on one."""
    signed = [[v if d == "max" else -v for v, d in zip(p, directions)] for p in points]
    mask = []
    for i, p in enumerate(signed):
        dominated = any(
            all(q_k >= p_k for q_k, p_k in zip(q, p)) and any(q_k > p_k for q_k, p_k in zip(q, p))
            for j, q in enumerate(signed)
            if j != i
        )
        mask.append(not dominated)
    return mask


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties get average ranks); 0 where either side is constant."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return float(spearmanr(x, y).statistic)


def use_on_policy_pairs(spec) -> None:
    """Built-in training pairs get the base's own mistakes as their rejected completions.

    The built-in pairs come from ``workbench.data.sources.task_pairs``; this process swaps that
    function (a benchmark-only experiment, so the product keeps one way to build task pairs).
    """
    import random

    import workbench.data.sources as sources
    from workbench.data.pairs import corrupt_answer, preference_pairs
    from workbench.data.rows import PreferenceRow
    from workbench.data.tasks import exact_match
    from workbench.models import tiny
    from workbench.models.generation import generate

    model, tokenizer, _ = tiny.build_or_load(spec.model.tiny, log=lambda *a: None)

    def mistakes(rows, seed):
        greedy = generate(model, tokenizer, rows, max_new_tokens=16)
        sampled = generate(model, tokenizer, rows, max_new_tokens=16, do_sample=True, seed=seed)
        pairs = []
        for i, (row, g, s) in enumerate(zip(rows, greedy, sampled)):
            wrong = next((c for c in (g, s) if not exact_match(c, row)), None)
            rejected = (
                wrong
                if wrong is not None
                else corrupt_answer(row.answer, random.Random(f"{seed}:{i}"))
            )
            pairs.append(PreferenceRow(row.prompt, row.completion, rejected, source=row))
        return pairs

    sources.task_pairs = lambda task, train, held_out, seed: (
        mistakes(train, seed),
        preference_pairs(held_out, seed),
    )


def pairwise_lr(args, method: str) -> float:
    return args.lr if args.lr is not None else PAIRWISE_LR.get(method, 3e-5)


def run_dpo(
    args, method: str, uri: str, workbench, seed: int
) -> tuple[dict, dict, tuple[float, float]]:
    spec = workbench.RunSpec.parse(dpo_spec(args, method, uri, seed))
    if args.pairs == "on-policy":
        use_on_policy_pairs(spec)
    result = workbench.run(spec, log=lambda *a: None)
    if result.status != "FINISHED":
        raise SystemExit(f"error: the {method} run ended {result.status}")
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=uri).get_metric_history(result.run_id, "pref/chosen_logps")
    history = sorted(history, key=lambda m: m.step)
    chosen_logps = (
        (history[0].value, history[-1].value) if history else (float("nan"), float("nan"))
    )
    (first_step, before), (last_step, after) = result.trajectory[0], result.trajectory[-1]
    if first_step != 0 or last_step != args.dpo_steps:
        raise SystemExit(
            f"error: DPO evaluations at steps {first_step} and {last_step}, "
            f"expected 0 and {args.dpo_steps}"
        )
    return before, after, chosen_logps


def dpo_part(args, method: str, seed: int, uri: str, workbench) -> dict[str, float]:
    """One pairwise run from the base; prints its table and returns its gains in points."""
    started = time.perf_counter()
    before, after, chosen_logps = run_dpo(args, method, uri, workbench, seed)
    seconds = time.perf_counter() - started
    print(
        f"{method.upper()} on {args.task}, seed {seed} ({args.adapter} fine-tuning of the default "
        f"tiny base, beta {args.beta}, lr {pairwise_lr(args, method):g}, {args.dpo_steps} steps "
        f"x 16 {args.pairs} pairs), held-out {args.eval_size} prompts; {seconds:.0f} s"
    )
    print()
    print(f"{'figure':<20}{'step 0':>10}{'end':>10}{'gain (points)':>16}")
    gains = {}
    for name in ("reward_accuracy", "exact_match"):
        gains[name] = 100 * (after[name] - before[name])
        print(f"{name:<20}{before[name]:>10.3f}{after[name]:>10.3f}{gains[name]:>16.1f}")
    print(
        f"training pairs' chosen log-prob (pref/chosen_logps), first and last logged step: "
        f"{chosen_logps[0]:.2f} -> {chosen_logps[1]:.2f}"
    )
    print()
    return gains


def modpo_part(
    args, seed: int, uri: str, weights: list[float], workbench, compute_front
) -> tuple[int, float] | None:
    """One MODPO sweep; prints its table and returns (policies non-dominated and beating the
    reference, the smaller Spearman), or None (after an error line) where a check fails."""
    started = time.perf_counter()
    spec = workbench.RunSpec.parse(modpo_spec(args, uri, seed))
    sweep = workbench.run_sweep(spec, weights, log=lambda *a: None)
    seconds = time.perf_counter() - started
    finished = [(w, r.objectives) for w, r in zip(weights, sweep.runs) if r.status == "FINISHED"]
    if len(finished) != len(weights):
        print(f"error: {len(weights) - len(finished)} MODPO run(s) did not finish", file=sys.stderr)
        return None
    names, directions = ["correctness", "length"], ["max", "min"]
    points = [[o[n] for n in names] for _, o in finished]
    reference = [MODPO_REFERENCE[n] for n in names]
    front = compute_front(points, directions, reference=reference, names=names)
    brute = brute_force_non_dominated(points, directions)
    # workbench's front and the sweep's own (same objectives, the spec's references) against
    # the brute-force check.
    for what, mask in (("workbench's front", front.mask), ("the sweep's front", sweep.front.mask)):
        if list(map(bool, mask)) != brute:
            print(f"error: {what} {list(mask)} differs from brute force {brute}", file=sys.stderr)
            return None
    beats_reference = [p[0] > reference[0] and p[1] < reference[1] for p in points]
    counted = sum(m and b for m, b in zip(brute, beats_reference))
    ws = [w for w, _ in finished]
    rho_correctness = spearman(ws, [o["correctness"] for _, o in finished])
    rho_length = spearman([round(1 - w, 4) for w in ws], [-o["length"] for _, o in finished])
    base = sweep.base_objectives
    print(
        f"MODPO on order, seed {seed} ({args.modpo_adapter} fine-tuning of the default tiny base, "
        f"beta {args.modpo_beta}, lr {args.modpo_lr}, {args.modpo_steps} steps x 16 pairs per "
        f"policy), {len(weights)} weights, held-out {args.eval_size} prompts; {seconds:.0f} s"
    )
    print(
        f"reference point (correctness, length) = ({reference[0]:g}, {reference[1]:g}); "
        f"the base at step 0: ({base.get('correctness', float('nan')):.3f}, "
        f"{base.get('length', float('nan')):.2f}); hypervolume {front.hypervolume:.3f}"
    )
    print()
    print(f"{'w (correctness)':<17}{'correctness':>12}{'length':>10}{'front':>8}")
    for (w, o), on in zip(finished, brute):
        print(f"{w:<17g}{o['correctness']:>12.3f}{o['length']:>10.2f}{'yes' if on else 'no':>8}")
    print()
    print(
        f"Spearman: correctness with w {rho_correctness:.3f}; shortness (-length) with 1 - w "
        f"{rho_length:.3f}; non-dominated and beating the reference: {counted} of {len(points)} "
        "(workbench's front equals the brute-force check)"
    )
    print()
    return counted, min(rho_correctness, rho_length)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few steps, 3 weights, 16 held-out prompts (a smoke test)",
    )
    parser.add_argument("--task", default="reverse", help="built-in task for DPO (default reverse)")
    parser.add_argument("--dpo-steps", type=int, default=None, help="DPO steps (default 200)")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="part 1's learning rate (default per method: "
        + ", ".join(f"{m} {lr:g}" for m, lr in PAIRWISE_LR.items())
        + ")",
    )
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["dpo", "rpo"],
        help="part 1's pairwise methods (default dpo rpo)",
    )
    parser.add_argument(
        "--adapter", choices=("full", "lora"), default="full", help="DPO: full or LoRA r16"
    )
    parser.add_argument(
        "--pairs",
        choices=("corrupted", "on-policy"),
        default="corrupted",
        help="DPO's training pairs: the built-in corruptions (default) or the base's own mistakes",
    )
    parser.add_argument(
        "--modpo-adapter",
        choices=("full", "lora"),
        default="lora",
        help="MODPO: full or LoRA r16 (default)",
    )
    parser.add_argument(
        "--modpo-steps", type=int, default=None, help="MODPO steps per policy (default 120)"
    )
    parser.add_argument(
        "--modpo-lr", type=float, default=1e-3, help="MODPO learning rate (default 1e-3)"
    )
    parser.add_argument("--modpo-beta", type=float, default=0.5, help="MODPO beta (default 0.5)")
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=None,
        help=f"MODPO correctness weights (default {' '.join(map(str, MODPO_WEIGHTS))})",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; --quick 1)")
    parser.add_argument("--skip-dpo", action="store_true", help="the MODPO sweep only")
    parser.add_argument("--skip-modpo", action="store_true", help="the DPO run only")
    args = parser.parse_args(argv)
    args.dpo_steps = args.dpo_steps or (2 if args.quick else 200)
    args.modpo_steps = args.modpo_steps or (2 if args.quick else 120)
    args.eval_size = 16 if args.quick else 48
    args.train_size = 32 if args.quick else 1000
    args.seeds = args.seeds or (1 if args.quick else 3)
    weights = list(args.weights or ((0.1, 0.5, 0.9) if args.quick else MODPO_WEIGHTS))

    import torch

    import workbench
    from workbench.fronts.pareto import compute_front

    gains: dict[str, list[dict]] = {m: [] for m in ([] if args.skip_dpo else args.methods)}
    modpo: list[tuple[int, float]] = []  # per seed: policies counted, the smaller Spearman
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for seed in range(args.seeds):
            for method in gains:
                gains[method].append(dpo_part(args, method, seed, uri, workbench))
            if not args.skip_modpo:
                figures = modpo_part(args, seed, uri, weights, workbench, compute_front)
                if figures is None:
                    return 1
                modpo.append(figures)
    seeds = ", ".join(map(str, range(args.seeds)))
    lines: list[str] = []
    for method, per_seed in gains.items():
        figures = (("reward_accuracy", "reward_accuracy"), ("exact_match", "task_metric"))
        for name, figure in figures:
            values = [g[name] for g in per_seed]
            print(
                f"{method.upper()} {name} gain over seeds {seeds}: median "
                f"{statistics.median(values):.1f} points (spread {min(values):.1f} to "
                f"{max(values):.1f})"
            )
            lines.append(
                f"BENCH {method}_{figure}_gain_points {statistics.median(values):.1f} points "
                "target=>=15"
            )
    if modpo:
        counts, rhos = [c for c, _ in modpo], [r for _, r in modpo]
        print(
            f"MODPO over seeds {seeds}: non-dominated policies beating the reference "
            f"{', '.join(map(str, counts))} (median {statistics.median(counts):g}); smaller "
            f"Spearman {', '.join(f'{r:.3f}' for r in rhos)} (median {statistics.median(rhos):.3f})"
        )
        lines += [
            f"BENCH modpo_non_dominated {statistics.median(counts):g} policies target=>=3",
            f"BENCH modpo_spearman_min {statistics.median(rhos):.3f} rho target=>=0.8",
        ]
    print(
        f"torch {torch.__version__}, python {platform.python_version()}; "
        f"load average {load_average()}"
    )
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
