"""The built-in Adam builders: fused on CPU by default, the step they take checked against
AdamW written out in float64, and the one combination Lightning cannot run refused up front."""

from __future__ import annotations

import pytest
import torch

from workbench.running.optimizers import build_adam, build_adamw
from workbench.spec.components import AdamParams
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec


def parameters(device="cpu", dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    return [
        torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype).to(device))
        for s in shapes
    ]


@pytest.mark.parametrize("build", [build_adamw, build_adam])
def test_on_cpu_the_default_is_the_fused_step_and_false_keeps_it_off(build):
    assert build(parameters(), AdamParams(name="adamw")).defaults["fused"] is True
    assert not build(parameters(), AdamParams(name="adamw", fused=False)).defaults["fused"]
    # Parameters off the CPU (here on the meta device) leave the choice to torch.
    assert build(parameters("meta"), AdamParams(name="adamw")).defaults["fused"] is None


def reference_adamw(params, grads, steps, lr, betas, eps, weight_decay):
    """AdamW (decoupled decay, bias-corrected moments) written out in float64."""
    b1, b2 = betas
    out = []
    for p, gs in zip(params, grads, strict=True):
        p, m, v = p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)
        for t, g in enumerate(gs[:steps], start=1):
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            p = p - lr * m_hat / (v_hat.sqrt() + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("fused", [None, False])
def test_the_fused_and_multi_tensor_steps_follow_adamw_written_out_in_float64(fused):
    settings = AdamParams(
        name="adamw", lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, fused=fused
    )
    params = parameters()
    start = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=generator, dtype=p.dtype) for _ in range(5)]
             for p in params]  # fmt: skip
    optimizer = build_adamw(params, settings)
    for step in range(5):
        for p, gs in zip(params, grads, strict=True):
            p.grad = gs[step].clone()
        optimizer.step()
    expected = reference_adamw(start, grads, 5, 0.01, (0.8, 0.95), 1e-6, 0.1)
    for got, want in zip(params, expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)
    moved = max((p.detach() - s).abs().max().item() for p, s in zip(params, start, strict=True))
    assert moved > 0.01  # five steps of lr 0.01 moved the weights


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_fused_under_a_mixed_precision_that_clips_is_refused_and_the_default_unfuses(precision):
    """Lightning refuses to clip a fused optimizer's gradients under mixed precision (its
    check is the optimizer's, whatever the dtype): an explicit ``fused: true`` is refused when
    the spec is read, and the default resolves to the multi-tensor step there."""
    spec = {
        "optimizer": {"name": "adamw", "fused": True},
        "train": {"precision": precision, "grad_clip": 1.0},
    }
    with pytest.raises(SpecError) as info:
        RunSpec.parse(spec)
    message = str(info.value)
    assert "optimizer.fused: true" in message and precision in message
    assert "optimizer.fused: false" in message  # the fix
    # The default and an explicit false validate; the default becomes false for this run.
    for fused in (None, False):
        parsed = RunSpec.parse({**spec, "optimizer": {"name": "adamw", "fused": fused}})
        assert parsed.optimizer.fused is fused  # the spec keeps what was written
        assert parsed.optimizer.for_train(parsed.train).fused is False
    # Without clipping, or in float32, the default stays for the builder to resolve.
    for train in ({"precision": precision, "grad_clip": None}, {"grad_clip": 1.0}):
        parsed = RunSpec.parse({"optimizer": {"name": "adamw"}, "train": train})
        assert parsed.optimizer.for_train(parsed.train).fused is None
