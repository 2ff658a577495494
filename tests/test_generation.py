"""Generation (ftcompare.generation): prompt format, batched greedy decoding with left padding, the seed
in sampling, and a QLoRA adapter merged into the dequantized base it trained on."""

import os
import subprocess
import sys

import pytest
import torch
from helpers.tiny_llama import tiny_llama, word_tokenizer
from helpers.tiny_run import settings_for

from conftest import REPO
from ftcompare.adapters import add_adapter
from ftcompare.generation import (
    _until_eos,
    build_generation_config,
    format_prompt,
    generate_outputs,
    load_generation_model,
)
from ftcompare.trainer_builder import load_model

SETTINGS = {
    "max_new_tokens": 6,
    "do_sample": False,
    "temperature": 1.0,
    "top_p": 1.0,
    "batch_size": 4,
    "merge_lora": True,
}


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer():
    model = tiny_llama()
    model.eval()
    return model, word_tokenizer()


def test_format_is_the_llama_2_chat_format():
    assert format_prompt("Hi there?") == "<s>[INST] Hi there? [/INST]"


def test_until_eos_keeps_the_eos_and_drops_padding():
    assert _until_eos([5, 6, 2, 3, 3], eos_id=2, pad_id=3) == [5, 6, 2]
    assert _until_eos([5, 6, 3, 3], eos_id=2, pad_id=3) == [5, 6]
    assert _until_eos([5, 6], eos_id=2, pad_id=2) == [5, 6]


def test_greedy_config_names_no_sampling_options(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    config = build_generation_config(SETTINGS, tokenizer)
    assert config.do_sample is False and config.max_new_tokens == 6
    assert config.temperature is None and config.top_p is None
    sampled = build_generation_config({**SETTINGS, "do_sample": True, "temperature": 0.7, "top_p": 0.9}, tokenizer)
    assert sampled.temperature == 0.7 and sampled.top_p == 0.9


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    prompts = ["w1 w2 w3 w4 w5", "w7", "w9 w10", "w11 w12 w13", "w20"]
    batched = generate_outputs(model, tokenizer, prompts, SETTINGS, seed=0, model_name="base")
    single = generate_outputs(model, tokenizer, prompts, {**SETTINGS, "batch_size": 1}, seed=0, model_name="base")
    assert [r["output"] for r in batched] == [r["output"] for r in single]
    assert [r["prompt_id"] for r in batched] == [0, 1, 2, 3, 4]
    assert all(1 <= r["new_tokens"] <= 6 and r["seconds"] > 0 for r in batched)
    assert batched[0]["formatted_prompt"] == "<s>[INST] w1 w2 w3 w4 w5 [/INST]"
    assert {r["batch_size"] for r in batched} == {4, 1}


def test_sampling_follows_the_seed():
    tokenizer = word_tokenizer()
    model = tiny_llama(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).eval()
    settings = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "top_p": 1.0, "batch_size": 2}
    prompts = ["w1 w2", "w4 w5 w6"]

    def outputs(seed):
        return [r["output"] for r in generate_outputs(model, tokenizer, prompts, settings, seed, "m")]

    assert outputs(7) == outputs(7)
    assert outputs(7) != outputs(8)


def test_a_qlora_adapter_is_merged_into_the_dequantized_base_it_trained_on(tmp_path):
    """The merged model computes what the 4-bit model with its adapter computed in training (fp32 compute
    here, so exactly up to rounding); the adapter on the original weights would not."""
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    base, run = tmp_path / "base", tmp_path / "run"
    tiny_llama().save_pretrained(base)
    word_tokenizer().save_pretrained(base)
    settings = settings_for("qlora")
    quantization = {**settings["quantization"], "bnb_4bit_compute_dtype": "float32"}
    trained = add_adapter(load_model(base, "float32", "sdpa", False, quantization, "cpu"), "qlora", settings["lora"])
    with torch.no_grad():
        for name, parameter in trained.named_parameters():
            if "lora_B" in name:  # as if trained: PEFT starts B at zero
                parameter.normal_(std=0.5)
    trained.save_pretrained(run)
    word_tokenizer().save_pretrained(run)
    trained.eval()

    model, tokenizer = load_generation_model(base, run, "qlora", True, "float32", False, "cpu", quantization)
    assert not any(isinstance(module, (bnb.nn.Linear4bit, LoraLayer)) for module in model.modules())
    assert not getattr(model, "is_quantized", False) and model.dtype == torch.float32
    batch = tokenizer(["w1 w2 w3 w4 w5"], return_tensors="pt")
    with torch.no_grad():
        expected = trained(**batch).logits
        torch.testing.assert_close(model(**batch).logits, expected, atol=1e-5, rtol=1e-4)
        on_original, _ = load_generation_model(base, run, "lora", True, "float32", False, "cpu")
        assert (on_original(**batch).logits - expected).abs().max() > 1e-3
    [record] = generate_outputs(model, tokenizer, ["w1 w2"], SETTINGS, seed=0, model_name="qlora")
    assert record["model"] == "qlora" and 1 <= record["new_tokens"] <= SETTINGS["max_new_tokens"]


def test_the_base_model_and_a_full_fine_tune_load_without_peft(tmp_path):
    """PEFT imports bitsandbytes, seconds of every job's start on a CPU: only adapters import it."""
    tiny_llama().save_pretrained(tmp_path / "base")
    word_tokenizer().save_pretrained(tmp_path / "base")
    code = f"""
import sys
from ftcompare.generation import load_generation_model
for method in ("base", "full"):
    load_generation_model({str(tmp_path / "base")!r}, {str(tmp_path / "base")!r}, method, True, "float32", False, "cpu")
print(sorted(name for name in ("peft", "bitsandbytes", "trl") if name in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
