"""``train.compile``: the trained model's decoder through ``torch.compile`` for training steps.

What is compiled is the decoder stack (a Llama's ``model.model``, the module that
:func:`workbench.models.kernel_patch.head_logprobs` calls too), so the plain path (logits)
and the fused loss head both run it compiled; the head and the losses stay eager. Only
training steps take the compiled forward: in eval mode (held-out losses, evaluations,
the generations of a GRPO step) the same module runs its plain forward, so decoding never
waits on recompilations for each new length. Under DDP every process compiles its own copy
(on a CPU, gloo: checked to give the uncompiled losses).

Where compilation cannot apply, the run trains uncompiled and says why once, in its log and
in the tag ``workbench.compile`` (``mlflow_names.COMPILE_TAG``: ``off (why)``; ``on`` when it
ran compiled):

- before training: torch.compile unsupported on this Python or platform, no C++
  compiler for TorchInductor's CPU code (or no Triton for its GPU code), Triton kernels in
  the model (``kernels: triton``, or ``auto`` on a GPU: their launches are not traced), a
  strategy that shards the weights (FSDP), or ``torch.compile`` itself raising;
- at the first compiled forward: any error while tracing or compiling; the step then runs
  the plain forward (an error of the step itself raises there again, from the plain code).

Not caught: an error while compiling the backward pass, which TorchInductor compiles at the
first backward, outside the forward this module wraps; the run then fails with that error.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class CompileState:
    """Whether a run's training steps run compiled (``on``), and if not, why.

    ``announce`` (set by the runner once the run is recorded) receives the new tag value
    when a fallback happens during training, so the run's tag says ``off`` from then on even
    if the run fails later.
    """

    on: bool
    why: str = ""
    # Set once a compiled forward has returned: errors after that are the step's own.
    proven: bool = False
    announce: Callable[[str], object] | None = None

    def tag(self) -> str:
        """``on``, or ``off (why)``: the value of the run's ``workbench.compile`` tag."""
        return "on" if self.on else f"off ({self.why})"

    def turn_off(self, why: str, log: Callable[[str], object]) -> None:
        self.on, self.why = False, why
        log(f"note: train.compile: the run trains uncompiled ({why})")
        if self.announce is not None:
            self.announce(self.tag())


def compile_problem(*, on_gpu: bool, kernel_usage=None, sharded: bool = False) -> str | None:
    """Why ``torch.compile`` cannot compile this run's model here, or None.

    ``on_gpu``: the run trains on CUDA devices; ``kernel_usage``: the model's fused kernels
    (a :class:`~workbench.models.kernel_patch.KernelUsage`, None with ``kernels: off``);
    ``sharded``: the strategy shards the weights.
    """
    import torch

    if not _dynamo_supported(torch):
        return "torch.compile is not supported on this Python or platform"
    if sharded:
        return "the strategy shards the weights (FSDP); compile its wrapped layers yourself"
    if kernel_usage is not None and _runs_triton(kernel_usage, on_gpu):
        return (
            f"kernels: {kernel_usage.backend} runs Triton kernels, which are not compiled; "
            "set kernels: torch or off to compile"
        )
    if on_gpu:
        from torch.utils._triton import has_triton

        if not has_triton():
            return "TorchInductor needs Triton for GPU code and it is not installed"
        return None
    try:
        from torch._inductor import cpp_builder

        cpp_builder.get_cpp_compiler()
    except Exception as err:  # InvalidCxxCompiler, or an inductor that cannot load
        return f"no C++ compiler for TorchInductor's CPU code ({type(err).__name__}); set CXX"
    return None


def _dynamo_supported(torch) -> bool:
    check = getattr(torch._dynamo, "is_dynamo_supported", None)
    return True if check is None else bool(check())


def _runs_triton(usage, on_gpu: bool) -> bool:
    """Whether any op the patched model runs goes through a Triton kernel."""
    from workbench.models.kernel_patch import OPS

    if all(op in usage.left_out for op in OPS):
        return False
    return usage.backend == "triton" or (usage.backend == "auto" and on_gpu)


def compile_decoder(
    model,
    *,
    on_gpu: bool,
    kernel_usage=None,
    sharded: bool = False,
    log: Callable[[str], object] = print,
) -> CompileState:
    """Compile ``model``'s decoder (in place) for training-mode forwards; returns whether it
    did and why not. ``model``: a transformers causal LM, or a peft model around one."""
    import torch

    state = CompileState(on=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    if not isinstance(decoder, torch.nn.Module):
        state.turn_off(f"{type(base).__name__} has no decoder module (.model) to compile", log)
        return state
    why = compile_problem(on_gpu=on_gpu, kernel_usage=kernel_usage, sharded=sharded)
    if why is not None:
        state.turn_off(why, log)
        return state
    # The function, not the bound method: a copy of the module (deepcopy rebinds the method
    # below to the copy) runs its own weights through the same compiled code.
    plain = getattr(decoder.forward, "__func__", type(decoder).forward)
    try:
        compiled = torch.compile(plain)
    except Exception as err:
        state.turn_off(f"torch.compile raised {_one_line(err)}", log)
        return state

    def forward(self, *args, **kwargs):
        if self.training and state.on:
            try:
                out = compiled(self, *args, **kwargs)
            except Exception as err:
                if state.proven:
                    raise
                state.turn_off(f"compiling the first training step failed: {_one_line(err)}", log)
            else:
                state.proven = True
                return out
        return plain(self, *args, **kwargs)

    decoder.forward = types.MethodType(forward, decoder)
    return state


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
