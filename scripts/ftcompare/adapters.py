"""The adapter a run trains on its base model: LoRA as the run's `lora` section sets it (PEFT), or none."""

from peft import LoraConfig, get_peft_model


def build_lora_config(lora: dict) -> LoraConfig:
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
    """`model` with the method's adapter on it (a PeftModel for LoRA); `full` trains the model itself."""
    if method == "lora":
        return get_peft_model(model, build_lora_config(lora))
    return model
