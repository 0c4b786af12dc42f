"""Kernel tests: the triton paths run on CPU tensors through Triton's interpreter.

Triton picks the interpreter from ``TRITON_INTERPRET`` when a kernel is defined (and reads
some settings at import), so tests/conftest.py sets it before any test module is collected
and takes it back once collection is done; it is set again only while the kernel tests run
(a package-scoped fixture), so the processes that later tests start do not inherit it.

Seeds: each test function that takes ``kernel_seed`` draws a fresh one per session, shown
in its test id (``[...-seed=N]``) and, when it fails, in a "kernel seed" section with the
command that replays it (``WORKBENCH_TEST_SEED=N``, which fixes every kernel test's seed).

The fixtures build random inputs of a linear head with a naive float64 reference (full
logits, log_softmax, gather) for the fused linear cross-entropy and token log-prob tests.
"""

from __future__ import annotations

import os
import random

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def triton_interpreter():
    """TRITON_INTERPRET=1 while the kernel tests run (for them and the processes they start),
    restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield


# Largest error of a value relative to the size of what it is compared with, per dtype:
# float32 runs the same maths in another order; bfloat16 rounds the logits and the matmul
# operands to 8 significant bits (the interpreter rounds float32 -> bfloat16 toward zero),
# float16 to 11.
LINEAR_SOFTMAX_TOLERANCES = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}


SEED_VARIABLE = "WORKBENCH_TEST_SEED"


def draw_seed() -> int:
    """``$WORKBENCH_TEST_SEED`` when set (a replay), else a fresh seed."""
    value = os.environ.get(SEED_VARIABLE)
    return int(value) if value else random.SystemRandom().randrange(2**31)


def pytest_generate_tests(metafunc):
    # A seed per test function, drawn at collection so that it is part of the test id: a CI
    # log's FAILED line names it.
    if "kernel_seed" in metafunc.fixturenames:
        seed = draw_seed()
        metafunc.parametrize("kernel_seed", [seed], ids=[f"seed={seed}"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    seed = getattr(item, "callspec", None) and item.callspec.params.get("kernel_seed")
    if report.failed and seed is not None:
        report.sections.append(
            (
                "kernel seed",
                f"seed {seed}; replay with: {SEED_VARIABLE}={seed} "
                f"python -m pytest '{item.nodeid}'",
            )
        )
    return report


def pytest_report_header(config):
    return f"kernel tests: a fresh seed per test, in its id (seed=N); {SEED_VARIABLE}=N replays" + (
        f" (now {os.environ[SEED_VARIABLE]})" if os.environ.get(SEED_VARIABLE) else ""
    )


@pytest.fixture
def kernel_seed() -> int:
    """The test's seed (parametrized by ``pytest_generate_tests``; this is the fallback)."""
    return draw_seed()


class LinearSoftmaxCase:
    """Random inputs of a linear head, a float64 reference, and checks against it."""

    def __init__(self, seed, lead, hidden_size, vocab, dtype, bias, ignored, ignore_index=-100):
        self.seed, self.dtype, self.ignore_index = seed, dtype, ignore_index
        self.tol = LINEAR_SOFTMAX_TOLERANCES[dtype]
        gen = torch.Generator().manual_seed(seed)
        lead = (lead,) if isinstance(lead, int) else tuple(lead)
        # Logits of a few units, as a trained head gives: the softmax is far from uniform.
        self.hidden = torch.randn(*lead, hidden_size, generator=gen).to(dtype)
        self.weight = (torch.randn(vocab, hidden_size, generator=gen) * 0.7).to(dtype)
        self.bias = torch.randn(vocab, generator=gen).to(dtype) if bias else None
        self.targets = torch.randint(0, vocab, lead, generator=gen)
        if ignored == "all":
            self.targets.fill_(ignore_index)
        elif ignored == "some":
            flat = self.targets.view(-1)
            flat[torch.randperm(flat.numel(), generator=gen)[: max(1, flat.numel() // 3)]] = (
                ignore_index
            )
        self.grad_rows = torch.randn(lead, generator=gen)  # incoming per-row gradient
        self.grad_scalar = float(torch.rand((), generator=gen)) * 3 + 0.5
        self.originals = [t.clone() for t in self.inputs()]

    def inputs(self):
        tensors = [self.hidden, self.weight, self.targets]
        return tensors + ([self.bias] if self.bias is not None else [])

    def leaves(self):
        """Fresh leaves (copies) of the float inputs that want gradients."""
        hidden = self.hidden.clone().requires_grad_()
        weight = self.weight.clone().requires_grad_()
        bias = None if self.bias is None else self.bias.clone().requires_grad_()
        return hidden, weight, bias

    def reference(self, reduce, softcap=None, temperature=1.0):
        """``reduce(logprobs64, valid)`` -> output; float64 output and gradients of
        ``sum(output * grad)`` (grad: ``grad_rows`` for per-row outputs, ``grad_scalar``).
        Log-probs under ``softmax(softcap * tanh(z / softcap) / temperature)`` of the head's
        logits ``z`` (no cap: ``softmax(z / temperature)``)."""
        hidden = self.hidden.double().requires_grad_()
        weight = self.weight.double().requires_grad_()
        bias = None if self.bias is None else self.bias.double().requires_grad_()
        logits = hidden @ weight.T
        if bias is not None:
            logits = logits + bias
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        logits = logits / temperature
        valid = self.targets != self.ignore_index
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, torch.where(valid, self.targets, 0).unsqueeze(-1)).squeeze(-1)
        out = reduce(torch.where(valid, picked, 0.0), valid)
        self.backward(out)
        grads = [hidden.grad, weight.grad] + ([bias.grad] if bias is not None else [])
        return out.detach(), grads

    def backward(self, out):
        grad = self.grad_rows.to(out.dtype) if out.dim() else torch.tensor(self.grad_scalar)
        out.backward(grad.to(out.dtype))

    def check(self, label, out, leaves, ref_out, ref_grads):
        msg = f"{label} (seed {self.seed})"
        got = [out] + [leaf.grad for leaf in leaves if leaf is not None]
        want = [ref_out] + ref_grads
        names = ["output", "grad_hidden", "grad_weight", "grad_bias"]
        for name, actual, expected in zip(names, got, want):
            assert actual is not None, f"{msg}: no {name}"
            assert actual.shape == expected.shape, f"{msg}: {name} shape {actual.shape}"
            assert torch.isfinite(actual).all(), f"{msg}: {name} is not finite"
            if name != "output":
                assert actual.dtype == self.dtype, f"{msg}: {name} dtype {actual.dtype}"
            scale = expected.abs().max().item() if expected.numel() else 0.0
            if scale == 0.0:
                assert (actual == 0).all(), f"{msg}: {name} should be exactly 0"
                continue
            error = (actual.double() - expected).abs().max().item() / scale
            assert error <= self.tol, f"{msg}: {name} relative error {error:.2e} > {self.tol}"
        for original, now in zip(self.originals, self.inputs()):
            assert torch.equal(original, now), f"{msg}: an input tensor was modified"


@pytest.fixture
def linear_softmax_case(kernel_seed):
    """Factory: ``make(lead, hidden_size, vocab, dtype, bias, ignored)`` -> LinearSoftmaxCase."""

    def make(lead, hidden_size, vocab, dtype, bias, ignored):
        return LinearSoftmaxCase(kernel_seed, lead, hidden_size, vocab, dtype, bias, ignored)

    return make
