"""Text each model writes for the fixed prompts: Llama-2 chat format, batched, greedy by default."""

import logging
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from ftcompare.adapters import ADAPTER_METHODS
from ftcompare.quantization import bnb_config, device_map

log = logging.getLogger("ftcompare.generation")


def format_prompt(prompt: str) -> str:
    """The Llama-2 chat format the blog used: "<s>[INST] question [/INST]"."""
    return f"<s>[INST] {prompt} [/INST]"


def load_generation_model(
    base_model,
    run_model,
    method: str,
    merge_lora: bool,
    dtype: str,
    trust_remote_code: bool,
    device: str,
    quantization: dict | None = None,
):
    """The base model, a full fine-tune, or the base with a LoRA adapter (merged, as the blog did).

    A QLoRA adapter goes on the weights it was trained against, as the QLoRA recipe merges it: the
    base loaded in 4-bit with the run's `quantization`, then dequantized to `dtype`. The original
    weights differ from those by the quantization error, which the adapter never saw.
    """
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    source = run_model if method == "full" else base_model
    options = {}
    if method == "qlora":
        options = {"quantization_config": bnb_config(quantization, device), "device_map": device_map(device)}
    model = AutoModelForCausalLM.from_pretrained(
        str(source), dtype=torch_dtype, trust_remote_code=trust_remote_code, **options
    )
    if method == "qlora":
        model = model.dequantize(dtype=None if dtype == "auto" else torch_dtype)
    if method in ADAPTER_METHODS:
        from peft import PeftModel  # here, not above: see ftcompare.adapters

        model = PeftModel.from_pretrained(model, str(run_model))
        if merge_lora:
            model = model.merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(
        str(run_model if method != "base" else base_model), trust_remote_code=trust_remote_code
    )
    model.to("cuda" if device == "cuda" else "cpu")
    model.eval()
    return model, tokenizer


def build_generation_config(settings: dict, tokenizer) -> GenerationConfig:
    """Only the settings the config names, so a checkpoint's own sampling defaults never leak in."""
    options = {
        "max_new_tokens": settings["max_new_tokens"],
        "do_sample": settings["do_sample"],
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if settings["do_sample"]:
        options.update(temperature=settings["temperature"], top_p=settings["top_p"])
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    return GenerationConfig(**options)


def generate_outputs(model, tokenizer, prompts: list[str], settings: dict, seed: int, model_name: str) -> list[dict]:
    """Generate for every prompt in batches of settings["batch_size"], left-padded, with the KV cache."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = build_generation_config(settings, tokenizer)
    device = next(model.parameters()).device
    records = []
    batch_size = settings["batch_size"]
    for start in range(0, len(prompts), batch_size):
        batch_prompts = prompts[start : start + batch_size]
        formatted = [format_prompt(p) for p in batch_prompts]
        encoded = tokenizer(formatted, return_tensors="pt", padding=True).to(device)
        torch.manual_seed(seed)
        began = time.perf_counter()
        with torch.inference_mode():
            generated = model.generate(**encoded, generation_config=config)
        seconds = time.perf_counter() - began
        new_ids = generated[:, encoded["input_ids"].shape[1] :]
        for offset, (prompt, text_prompt, ids) in enumerate(zip(batch_prompts, formatted, new_ids)):
            kept = _until_eos(ids.tolist(), tokenizer.eos_token_id, tokenizer.pad_token_id)
            records.append(
                {
                    "model": model_name,
                    "prompt_id": start + offset,
                    "prompt": prompt,
                    "formatted_prompt": text_prompt,
                    "output": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    "new_tokens": len(kept),
                    "seconds": seconds / len(batch_prompts),
                    "batch_seconds": seconds,
                    "batch_size": len(batch_prompts),
                }
            )
        log.info("%s: generated %d prompts in %.2f s", model_name, len(batch_prompts), seconds)
    return records


def _until_eos(ids: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    """The generated ids up to and including the first end-of-sequence token."""
    for index, token in enumerate(ids):
        if token == eos_id:
            return ids[: index + 1]
    if pad_id is not None and pad_id != eos_id:
        while ids and ids[-1] == pad_id:
            ids = ids[:-1]
    return ids
