"""The adapter a run trains (ftcompare.adapters): the blog's LoraConfig on the Llama-2-7b shape."""

import torch
from helpers.llama import LLAMA_2_7B
from transformers import LlamaConfig, LlamaForCausalLM

from ftcompare.adapters import add_adapter
from ftcompare.config import run_settings
from ftcompare.parameters import ParameterCount, count_parameters


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
