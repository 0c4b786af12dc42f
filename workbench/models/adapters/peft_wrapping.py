"""What the peft-backed adapters share: the projections they target by default, the check that
the targets exist in the model, and the one call that wraps a model in a peft config.

Imported by the adapters' settings models (the spec layer validates with them), so torch and
peft are imported inside the functions only.
"""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import AdapterParams
from workbench.spec.errors import SpecError

# A decoder layer's attention and MLP projections (Llama, Mistral, Qwen, Gemma, SmolLM).
DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def present_targets(model, targets: list[str], field: str = "adapter.target_modules") -> list[str]:
    """The names of ``targets`` some module of ``model`` ends with (``field`` names the spec
    setting in the error when none does)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [t for t in targets if t in present]
    if not found:
        raise SpecError(
            f"{field} {targets} match no module of this model; "
            f"its modules include: {sorted(present)[:20]}"
        )
    return found


def wrap(model, config):
    """``model`` under the peft ``config`` (a causal language model); the base is frozen."""
    from peft import get_peft_model

    config.task_type = "CAUSAL_LM"
    return get_peft_model(model, config)


def take_inputs_as_they_come(model) -> int:
    """Stop ``model``'s plain LoRA layers casting their input to their weights' dtype; the
    number of layers changed.

    peft casts a LoRA layer's input to ``lora_A``'s dtype (float32) before ``lora_A`` runs, so
    that a model in one precision and its adapter in another can be mixed without autocast.
    Under autocast (``train.precision: bf16-mixed``) the cast only costs: a bfloat16 input
    (``down_proj``'s, ``o_proj``'s) is widened to float32, then narrowed back by autocast for
    ``lora_A``, and the backward pass does both again for its gradient. The values are exact
    in both directions, so without the casts outputs and gradients are the same bit for bit
    (tested); at SmolLM2-135M's shape the bf16 step took about 5% less time.

    Only layers without dropout and without a LoRA variant are changed: dropout on the
    widened input scales it in float32, on the bfloat16 one by ``1 / (1 - p)`` rounded to
    bfloat16 (a different number), and a variant (DoRA and the like) computes more from the
    input. Only a run under autocast calls this; outside it every activation is float32.
    """
    from peft.tuners.lora import LoraLayer
    from torch import nn

    changed = 0
    for module in model.modules():
        if (
            isinstance(module, LoraLayer)
            and not module.lora_variant
            and all(isinstance(d, nn.Identity) for d in module.lora_dropout.values())
        ):
            module.cast_input_dtype_enabled = False  # peft's own switch (peft.helpers)
            changed += 1
    return changed


def can_merge(model) -> bool:
    """Whether ``model``'s adapter folds into the base's weights (peft's ``merge_and_unload``):
    not prompt or prefix tuning, whose virtual tokens are extra inputs, not a weight change."""
    config = getattr(model, "active_peft_config", None)
    return config is None or not config.is_prompt_learning


class ProjectionAdapterParams(AdapterParams):
    """What the adapters on named projections share (LoHa, LoKr, VeRA): the modules they
    wrap, and what follows from wrapping them: the fused head reads ``lm_head`` as a plain
    weight, so it runs unless ``lm_head`` is a target; switched off, the model is the base."""

    target_modules: list[str] = Field(
        default_factory=lambda: list(DECODER_PROJECTIONS),
        description="Module names that get adapters.",
    )

    def works_with_fused_head(self) -> bool:
        return "lm_head" not in self.target_modules

    def can_be_disabled(self) -> bool:
        return True


class UpdateDropoutParams(ProjectionAdapterParams):
    """The two dropouts of the LyCORIS-style adapters (LoHa, LoKr) in peft."""

    rank_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout of the update's rows during training."
    )
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability of skipping a module's update in a step."
    )


class VirtualTokenAdapterParams(AdapterParams):
    """What prompt and prefix tuning share: learned virtual tokens that every sequence sees
    before its own, and what follows from them.

    The fused head runs the decoder on the input ids alone (it would leave the tokens out), so
    it is refused; the tokens are extra inputs, not a change of the base's weights, so they
    cannot be merged into it; switched off (peft's ``disable_adapter``), the model is the
    base.
    """

    num_virtual_tokens: int = Field(
        20, ge=1, le=512, description="How many learned virtual tokens precede each sequence."
    )

    def works_with_fused_head(self) -> bool:
        return False

    def can_be_disabled(self) -> bool:
        return True

    def merges_into_weights(self) -> bool:
        return False
