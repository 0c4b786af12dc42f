"""MeZO (zeroth-order SGD): its gradient estimate has the true gradient as its expectation,
its perturbation is regenerated from the step's seed, and it trains the full tiny base with
far less memory than backprop on the same batch, each measured in its own process; a short run
through the pipeline lowers the held-out loss, of the full base and of a LoRA adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import FAST_TINY, fast_spec
from workbench.running.mezo import MeZO


def test_the_estimate_s_mean_over_seeds_is_the_true_gradient_of_a_quadratic():
    # f(theta) = 1/2 theta^T A theta + b^T theta: the finite difference along z is exactly
    # z^T grad f, so E[(z^T grad f) z] = grad f; one step with lr 1 moves theta by -estimate.
    rng = np.random.default_rng(0)
    dim, trials = 6, 1500
    m = rng.normal(size=(dim, dim))
    a = m @ m.T / dim + np.eye(dim)
    b = rng.normal(size=dim)
    theta0 = rng.normal(size=dim)
    true_gradient = a @ theta0 + b  # float64, independent of the optimizer
    a_t, b_t = torch.tensor(a), torch.tensor(b)
    estimates = np.empty((trials, dim))
    theta = torch.nn.Parameter(torch.tensor(theta0))
    optimizer = MeZO([theta], lr=1.0, eps=1e-3)
    torch.manual_seed(0)  # each step draws its own seed from here
    for trial in range(trials):
        with torch.no_grad():
            theta.copy_(torch.tensor(theta0))
        optimizer.step(lambda: 0.5 * theta @ a_t @ theta + b_t @ theta)
        estimates[trial] = theta0 - theta.detach().numpy()
    # Each estimate's i-th entry has variance |g|^2 + g_i^2 (z Gaussian): a 5-sigma margin on
    # the mean of `trials` of them.
    sigma = np.sqrt((true_gradient @ true_gradient + true_gradient**2) / trials)
    error = np.abs(estimates.mean(axis=0) - true_gradient)
    assert np.all(error < 5 * sigma), (error / sigma, true_gradient)
    # Not the gradient of another function: each draw's direction is random, the mean is not.
    assert np.linalg.norm(estimates[0] - true_gradient) > 10 * sigma.max()


def test_the_perturbation_is_regenerated_from_the_seed_so_the_weights_come_back():
    # With a closure that reads the weights, the two probes are theta +/- eps z and the
    # update is along that same z: theta_new - theta = -lr * g * z with z from the probes.
    torch.manual_seed(1)
    theta = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    seen = []
    optimizer = MeZO([theta], lr=0.5, eps=0.1)
    optimizer.step(lambda: seen.append(theta.detach().clone()) or float(theta.sum()))
    plus, minus = seen
    z = (plus - minus) / (2 * 0.1)
    torch.testing.assert_close(plus + minus, torch.zeros(5, dtype=torch.float64))
    g = float(z.sum())  # (sum(0.1 z) - sum(-0.1 z)) / 0.2
    torch.testing.assert_close(theta.detach(), -0.5 * g * z)


# One training stretch in a fresh process: the tiny base, a fixed batch, three steps of full
# fine-tuning with MeZO or with backprop and AdamW; prints the stretch's peak (MiB above the
# memory held after loading and one forward pass without grad, as perf/peak_mem_mb measures
# it). The warm-up forward takes what any first pass sets up once (tens of MiB that varied
# from run to run and hid the difference at a smaller batch) out of both sides' stretch.
CHILD = """
import json, sys, torch
from workbench.models.loading import load_base
from workbench.running.mezo import MeZO
from workbench.running.process_memory import MemoryMark
from workbench.spec.run_spec import ModelSpec
torch.manual_seed(0)
model = load_base(ModelSpec(tiny=json.loads(sys.argv[2])), log=lambda *a: None).model.train()
ids = torch.randint(3, model.config.vocab_size, (64, 256))
loss = lambda: model(input_ids=ids, labels=ids).loss
with torch.no_grad():
    loss()
params = list(model.parameters())
if sys.argv[1] == "mezo":
    optimizer = MeZO(params, lr=1e-4)
    mark = MemoryMark()
    for _ in range(3):
        optimizer.step(loss)
else:
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    mark = MemoryMark()
    for _ in range(3):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
print(json.dumps({"peak_mb": mark.peak_above_mb()}))
"""


def peak_mb(way: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, way, json.dumps(FAST_TINY)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def test_mezo_s_peak_memory_is_below_backprop_s_on_the_same_batch(default_fast_base):
    backprop, mezo = peak_mb("backprop"), peak_mb("mezo")
    # Backprop keeps every layer's activations (and the logits' gradient) for the backward,
    # plus gradients and Adam's two moments; MeZO holds one forward pass and one z at a time.
    assert mezo < 0.5 * backprop, (mezo, backprop)


@pytest.fixture(scope="module")
def default_fast_base():
    """The fast tiny base built in this process first, so each child only loads it."""
    from workbench.models.loading import load_base
    from workbench.spec.run_spec import ModelSpec

    load_base(ModelSpec(tiny=FAST_TINY), log=lambda *a: None)


@pytest.mark.parametrize(
    ("adapter", "lr", "least_fall"),
    # Seeds 0, 1, 2 (100 steps, fast base): full 0.058-0.089, LoRA 0.0047-0.0077. The
    # assertions keep a margin of more than 2x below the smallest fall seen.
    [("full", 1e-3, 0.02), ("lora", 3e-3, 0.002)],
)
def test_a_short_mezo_run_lowers_the_held_out_loss(adapter, lr, least_fall, store_uri):
    from workbench.running.pipeline import run

    spec = fast_spec(
        method="sft",
        adapter={"name": adapter},
        optimizer={"name": "mezo", "lr": lr},
        train={"steps": 100, "eval_every": 100, "batch_size": 16, "seed": 0},
        objectives=[{"name": "nll", "direction": "min", "source": "term:completion"}],
        eval={"samples_logged": 0, "max_new_tokens": 4},
    )
    result = run(spec, log=lambda *a: None)
    before, after = result.trajectory[0][1]["nll"], result.objectives["nll"]
    assert after < before - least_fall, (before, after)
