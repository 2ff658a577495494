"""The adapter a run trains (ftcompare.adapters): the blog's LoraConfig on the Llama-2-7b shape, and
QLoRA's on a tiny model loaded in 4-bit."""

import torch
from helpers.llama import LLAMA_2_7B
from helpers.tiny_llama import tiny_llama
from helpers.tiny_run import settings_for
from transformers import LlamaConfig, LlamaForCausalLM

from ftcompare.adapters import add_adapter
from ftcompare.config import run_settings
from ftcompare.parameters import ParameterCount, count_parameters
from ftcompare.trainer_builder import load_model


def test_blog_lora_config_on_llama_2_7b_shape_counts_like_the_blog(blog_config):
    """The blog printed: trainable params: 4,194,304 || all params: 6,742,609,920."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_2_7B))
    assert count_parameters(model) == ParameterCount(trainable=6_738_415_616, total=6_738_415_616)
    peft_model = add_adapter(model, "lora", run_settings(blog_config, "lora")["lora"])
    lora = count_parameters(peft_model)
    assert lora == ParameterCount(trainable=4_194_304, total=6_742_609_920)
    assert f"{lora.trainable_pct:.4f}" == "0.0622"
    targeted = {name.split(".")[-4] for name, _ in peft_model.named_parameters() if "lora_A" in name}
    assert targeted == {"q_proj", "v_proj"}


def test_a_full_fine_tune_trains_the_model_itself():
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**{**LLAMA_2_7B, "num_hidden_layers": 1}))
    assert add_adapter(model, "full", None) is model


def test_qlora_trains_lora_s_parameters_on_4_bit_linear_layers(tmp_path):
    """The same adapter as LoRA's, on a base whose decoder linear layers are bitsandbytes NF4 (double
    quantization); the embeddings, norms and LM head stay unquantized, in fp32, and frozen."""
    import bitsandbytes as bnb

    tiny_llama().save_pretrained(tmp_path)
    settings = settings_for("qlora")
    lora = add_adapter(load_model(tmp_path, "float32", "sdpa", False), "lora", settings["lora"])
    qlora = add_adapter(
        load_model(tmp_path, "float32", "sdpa", False, settings["quantization"], "cpu"), "qlora", settings["lora"]
    )
    assert count_parameters(qlora) == count_parameters(lora)  # PEFT counts a 4-bit weight's packed pairs twice
    assert {n for n, p in qlora.named_parameters() if p.requires_grad} == {
        n for n, p in lora.named_parameters() if p.requires_grad
    }
    quantized = [name for name, m in qlora.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # q_proj and v_proj carry the adapter, around their 4-bit layer (base_layer).
    assert {name.removesuffix(".base_layer").split(".")[-1] for name in quantized} == projections
    assert len(quantized) == 2 * len(projections)  # both layers
    q_proj = qlora.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.dtype == torch.uint8
    assert q_proj.weight.quant_state.quant_type == "nf4" and q_proj.weight.quant_state.nested  # double quantization
    assert q_proj.compute_dtype == torch.bfloat16
    assert type(qlora.base_model.model.lm_head) is torch.nn.Linear
    unquantized = [p for p in qlora.parameters() if type(p) is not bnb.nn.Params4bit]
    assert all(p.dtype == torch.float32 for p in unquantized)
