"""A qlora run's 4-bit base model (ftcompare.quantization): the config's keys as transformers'
BitsAndBytesConfig, the compute dtype `auto` picks, and 4-bit weights that stay trainable after an
evaluation."""

import pytest
import torch
from helpers.tiny_llama import tiny_llama, word_tokenizer
from helpers.tiny_run import settings_for

from ftcompare.adapters import add_adapter
from ftcompare.quantization import bnb_config, resolve_compute_dtype, resolved_quantization
from ftcompare.trainer_builder import load_model


def test_the_config_keys_become_a_4_bit_bits_and_bytes_config():
    config = bnb_config(
        {"bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": "float16"}, "cpu"
    )
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "fp4" and config.bnb_4bit_use_double_quant is False
    assert config.bnb_4bit_compute_dtype == torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_auto_computes_in_bfloat16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    expected = "bfloat16" if native else "float32"
    assert resolve_compute_dtype("auto", "cpu") == expected
    assert resolve_compute_dtype("bfloat16", "cpu") == "bfloat16"  # asked for: emulated where it must be
    settings = settings_for("qlora")["quantization"]
    assert resolved_quantization({**settings, "bnb_4bit_compute_dtype": "auto"}, "cpu") == {
        **settings,
        "bnb_4bit_compute_dtype": expected,
        "bnb_4bit_compute_dtype_setting": "auto",
    }


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_compute_dtype("auto", "cuda") == expected


def test_an_evaluation_leaves_the_4_bit_weights_trainable(tmp_path):
    """bitsandbytes 0.50.2 repacks a 4-bit weight for a CPU inference kernel without a backward at an
    eval-mode forward without gradients (where the CPU has AVX512-BF16); the evaluation before training
    must not change the gradients training gets."""
    tiny_llama().save_pretrained(tmp_path)
    settings = settings_for("qlora")
    lora = {**settings["lora"], "lora_dropout": 0.0}
    quantization = {**settings["quantization"], "bnb_4bit_compute_dtype": "float32"}
    model = add_adapter(load_model(tmp_path, "float32", "sdpa", False, quantization, "cpu"), "qlora", lora)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    batch = word_tokenizer()(["w1 w2 w3 w4 w5 w6"], return_tensors="pt")
    first_layer_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight

    def gradient():
        model.train()
        model.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        return first_layer_a.grad.clone()

    before = gradient()
    model.eval()
    with torch.no_grad():
        model(**batch)
    torch.testing.assert_close(gradient(), before)
