"""The adapter a run trains on its base model: LoRA as the run's `lora` section sets it (PEFT), on the
base model as loaded (lora) or on its 4-bit quantized weights (qlora), or none (full).

PEFT is imported where an adapter is built, not with this module: importing it imports bitsandbytes too,
about 2.5 s of every job's start on a CPU, which the jobs of the base model and of full runs need not pay."""

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from peft import LoraConfig

# The methods that train an adapter on a frozen base model.
ADAPTER_METHODS = ("lora", "qlora")


def build_lora_config(lora: dict) -> "LoraConfig":
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        bias=lora["bias"],
        target_modules=lora["target_modules"],
        use_dora=lora["use_dora"],
        use_rslora=lora["use_rslora"],
        task_type="CAUSAL_LM",
    )


def add_adapter(model, method: str, lora: dict | None):
    """`model` with the method's adapter on it (a PeftModel for LoRA and QLoRA); `full` trains the model itself.

    For qlora, `model` was loaded in 4-bit (ftcompare.quantization). PEFT's preparation freezes it and
    casts what stayed unquantized (norms, embeddings, LM head) to fp32; gradient checkpointing is left
    to training.gradient_checkpointing, as for LoRA, so the two arms differ only in the quantization.
    """
    if method not in ADAPTER_METHODS:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, build_lora_config(lora))


def keep_adapter_in_float32(model) -> None:
    """Cast the trainable (adapter) weights back to fp32 after TRL's SFTTrainer has cast them to bf16.

    TRL 1.16 casts a quantized model's adapter to bf16 (after the QLoRA paper), but PEFT loads it
    back in fp32 when a run resumes from a checkpoint, so a resumed run would train on in another
    dtype than an uninterrupted one. In fp32, with bf16 autocast where training.bf16 is on, the
    adapter trains as the LoRA run's does, and the two arms differ only in the base's quantization.
    """
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.to(torch.float32)
