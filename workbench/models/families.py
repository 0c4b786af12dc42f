"""The model families whose norms and MLPs the fused kernels replace, and what each one's
RMSNorm, gated MLP and loss head compute (read from transformers' ``modeling_<family>.py``).

``kernel_patch.patch_model`` looks a model's ``config.model_type`` up in :data:`FAMILIES`,
finds the modules below with :func:`find_norms` and :func:`find_mlps`, and patches what
matches; any other model type keeps its own norms and MLPs. The loss head does not depend
on the family: any causal LM with a plain ``nn.Linear`` head over a ``.model`` decoder can
take the fused head, once :func:`head_mismatch` has found that its own forward computes
nothing else from that head's output (:data:`FAMILIES` says what their heads add: a soft
cap, or nothing).

- Llama, Mistral, Qwen2, Qwen3 (whose attention also normalises queries and keys with
  RMSNorms), Phi3: ``weight * (x * rstd).to(dtype)`` norms (``variance_epsilon``) and
  SiLU-gated MLPs; Phi3's gate and up projections are one ``gate_up_proj`` whose output is
  chunked in two.
- Gemma 1, 2, 3 (text: ``Gemma3ForCausalLM``): ``(x * rstd * (1 + weight)).to(dtype)``
  norms, in float32 (``eps``), GELU-tanh-gated MLPs (``gelu_pytorch_tanh``), and for Gemma 2
  (Gemma 3 where its config sets it) final logits ``cap * tanh(logits / cap)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NormStyle:
    """How a family's RMSNorm computes (``workbench.kernels.rms_norm``'s ``offset`` and
    ``casting``) and the attribute that holds its epsilon."""

    eps_attr: str
    offset: float
    casting: str


# LlamaRMSNorm: weight * (x.float() * rstd).to(x.dtype)
LLAMA_NORM = NormStyle(eps_attr="variance_epsilon", offset=0.0, casting="llama")
# GemmaRMSNorm: (x.float() * rstd * (1.0 + weight.float())).type_as(x)
GEMMA_NORM = NormStyle(eps_attr="eps", offset=1.0, casting="gemma")


@dataclass(frozen=True)
class MlpStyle:
    """A gated MLP ``down_proj(act(gate) * up)``: where ``gate`` and ``up`` come from and the
    attribute that holds ``act``."""

    fused_gate_up: bool  # one gate_up_proj whose output is chunked into (gate, up)
    act_attr: str

    @property
    def projections(self) -> tuple[str, ...]:
        if self.fused_gate_up:
            return ("gate_up_proj", "down_proj")
        return ("gate_proj", "up_proj", "down_proj")

    def gate_and_up(self, module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused_gate_up:
            gate, up = module.gate_up_proj(x).chunk(2, dim=-1)
            return gate, up
        return module.gate_proj(x), module.up_proj(x)


# LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x))
SEPARATE_GATE_UP = MlpStyle(fused_gate_up=False, act_attr="act_fn")
# Phi3MLP: gate, up = gate_up_proj(x).chunk(2, -1); down_proj(up * activation_fn(gate))
FUSED_GATE_UP = MlpStyle(fused_gate_up=True, act_attr="activation_fn")


@dataclass(frozen=True)
class Family:
    """One family: the ``config.model_type`` values it covers, its norm and MLP, and the
    config attribute of its final-logit soft cap (None: its head adds nothing)."""

    name: str
    model_types: tuple[str, ...]
    norm: NormStyle
    mlp: MlpStyle
    softcap_attr: str | None = None


FAMILIES = (
    Family("llama", ("llama",), LLAMA_NORM, SEPARATE_GATE_UP),
    Family("mistral", ("mistral",), LLAMA_NORM, SEPARATE_GATE_UP),
    Family("qwen2", ("qwen2",), LLAMA_NORM, SEPARATE_GATE_UP),
    Family("qwen3", ("qwen3",), LLAMA_NORM, SEPARATE_GATE_UP),
    Family("phi3", ("phi3",), LLAMA_NORM, FUSED_GATE_UP),
    Family("gemma", ("gemma",), GEMMA_NORM, SEPARATE_GATE_UP),
    Family("gemma2", ("gemma2",), GEMMA_NORM, SEPARATE_GATE_UP, "final_logit_softcapping"),
    Family("gemma3", ("gemma3_text",), GEMMA_NORM, SEPARATE_GATE_UP, "final_logit_softcapping"),
)


def family_of(config) -> Family | None:
    """The family of a model's config (by ``model_type``), or None."""
    model_type = getattr(config, "model_type", None)
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def activation_of(module) -> str | None:
    """``workbench.kernels.swiglu``'s name for an MLP's activation module, or None where the
    kernel has no such activation."""
    name = type(module).__name__
    if isinstance(module, torch.nn.SiLU) or name == "SiLUActivation":
        return "silu"
    # transformers' "gelu_pytorch_tanh" (GELUTanh, formerly PytorchGELUTanh): the tanh
    # approximation through torch's own gelu.
    if name in ("GELUTanh", "PytorchGELUTanh"):
        return "gelu_tanh"
    return None


def find_norms(base, family: Family | None) -> tuple[list, str | None]:
    """The RMSNorm modules of ``base`` that the kernel can take, or ([], why not).

    All or none: every module whose class is an ``...RMSNorm`` must have a 1-D weight and the
    family's epsilon attribute."""
    if family is None:
        return [], _not_a_family(base)
    norms = [m for m in base.modules() if type(m).__name__.endswith("RMSNorm")]
    if not norms:
        return [], f"{type(base).__name__} has no RMSNorm"
    for m in norms:
        weight = getattr(m, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.dim() != 1:
            return [], f"{type(m).__name__} has no 1-D weight"
        if not hasattr(m, family.norm.eps_attr):
            return [], f"{type(m).__name__} has no {family.norm.eps_attr}"
    return norms, None


def find_mlps(base, family: Family | None) -> tuple[list[tuple[object, str]], str | None]:
    """(module, activation) of every gated MLP of ``base``, or ([], why not).

    All or none: every module whose class is an ``...MLP`` must have the family's
    projections and an activation the kernel has."""
    if family is None:
        return [], _not_a_family(base)
    mlps = [m for m in base.modules() if type(m).__name__.endswith("MLP")]
    if not mlps:
        return [], f"{type(base).__name__} has no gated MLP"
    found = []
    for m in mlps:
        missing = [n for n in family.mlp.projections if not hasattr(m, n)]
        if missing:
            return [], f"{type(m).__name__} has no {missing[0]}"
        act = getattr(m, family.mlp.act_attr, None)
        activation = activation_of(act)
        if activation is None:
            kind = type(act).__name__
            return [], f"{type(m).__name__}'s activation {kind} is not silu or gelu_tanh"
        found.append((m, activation))
    return found, None


def _not_a_family(base) -> str:
    model_type = getattr(base.config, "model_type", None)
    return f"model type {model_type} is not in workbench.models.families"


def head_softcap(config, family: Family | None) -> float | None:
    """The final-logit soft cap the model's forward applies after its head, or None.

    For a model type outside :data:`FAMILIES`, the same config attribute (transformers'
    name for it), which :func:`head_mismatch` then checks against the model's forward."""
    attr = "final_logit_softcapping" if family is None else family.softcap_attr
    value = None if attr is None else getattr(config, attr, None)
    return None if value is None else float(value)


def head_mismatch(base, softcap: float | None) -> str | None:
    """Why the fused head would not give ``base``'s own logits, or None.

    For a model type outside :data:`FAMILIES` (whose forward may scale, shift or cap the
    logits after ``lm_head``, as Cohere's and Granite's do): one forward of a few tokens,
    in eval mode and without gradients, through the model and through its decoder plus
    head (and soft cap); the two must agree. Every module's training mode is restored.
    """
    head = base.get_output_embeddings()
    modes = {m: m.training for m in base.modules()}
    try:
        base.eval()
        with torch.no_grad():
            ids = torch.arange(min(8, head.weight.shape[0]), device=head.weight.device)[None]
            logits = base(input_ids=ids, use_cache=False).logits
            ours = head(base.model(input_ids=ids, use_cache=False).last_hidden_state)
            if softcap is not None:
                ours = torch.tanh(ours / softcap) * softcap
    except Exception as error:  # any failure: the head cannot be shown to agree
        return f"could not compare its logits with the head's ({type(error).__name__})"
    finally:
        for m, training in modes.items():
            m.training = training
    scale = float(logits.float().abs().max()) if logits.numel() else 0.0
    if logits.shape != ours.shape or not torch.allclose(
        ours.float(), logits.float(), rtol=1e-3, atol=1e-3 * scale
    ):
        return f"{type(base).__name__}'s forward changes the logits after lm_head"
    return None
