"""Model FLOPs and MFU arithmetic (ftcompare.flops), checked on the Llama-2-7b shape by hand."""

import pytest
import torch
from helpers.llama import LLAMA_2_7B
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from ftcompare.flops import (
    ModelShape,
    mfu,
    shape_of,
    training_flops,
    training_flops_of_counts,
    training_flops_per_token,
)

EMBEDDING = 32000 * 4096
ALL_PARAMS = 6_738_415_616  # the blog's "Full fine-tune: 6,738,415,616 trainable"


@pytest.fixture(scope="module")
def llama_2_7b():
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMA_2_7B))


def test_shape_counts_every_matmul_weight_but_the_input_embedding(llama_2_7b):
    shape = shape_of(llama_2_7b)
    assert shape == ModelShape(matmul_params=ALL_PARAMS - EMBEDDING, num_layers=32, hidden_size=4096, adapter_params=0)


def test_lora_shape_keeps_the_base_and_counts_the_adapter(llama_2_7b):
    peft_model = get_peft_model(llama_2_7b, LoraConfig(r=8, lora_alpha=8, task_type="CAUSAL_LM"))
    shape = shape_of(peft_model)
    assert shape.adapter_params == 4_194_304  # the blog's LoRA count
    assert shape.matmul_params == ALL_PARAMS - EMBEDDING
    peft_model.unload()


def test_full_and_lora_flops_per_token_at_512():
    shape = ModelShape(matmul_params=6_607_343_616, num_layers=32, hidden_size=4096, adapter_params=4_194_304)
    attention = 12 * 32 * 4096 * 512  # per token: 12 · layers · d · s
    full = training_flops_per_token(ModelShape(6_607_343_616, 32, 4096), 512, "full")
    assert full == 6 * 6_607_343_616 + attention == pytest.approx(40.45e9, rel=1e-3)
    lora = training_flops_per_token(shape, 512, "lora")
    assert lora == 4 * 6_607_343_616 + 6 * 4_194_304 + attention
    assert training_flops_per_token(shape, 512, "qlora") == lora  # the same frozen base, in 4-bit


def test_attention_grows_with_each_sequence_not_with_the_row():
    shape = ModelShape(matmul_params=1000, num_layers=2, hidden_size=8)
    packed = training_flops(shape, [3, 5], "full")  # two sequences in one packed row
    assert packed == 6 * 1000 * 8 + 12 * 2 * 8 * (9 + 25)
    assert packed < training_flops(shape, [8], "full")
    with pytest.raises(ValueError, match="method must be"):
        training_flops(shape, [8], "dora")


def test_a_run_s_flops_from_its_token_counts():
    """What a run counts as it trains (tokens, and the sum of its sequences' squared lengths) gives the
    same FLOPs as the sequences themselves."""
    shape = ModelShape(matmul_params=1000, num_layers=2, hidden_size=8, adapter_params=10)
    assert training_flops_of_counts(shape, 3 + 5, 9 + 25, "lora") == (4 * 1000 + 6 * 10) * 8 + 12 * 2 * 8 * 34
    assert training_flops_of_counts(shape, 8, 34, "full") == training_flops(shape, [3, 5], "full")


def test_mfu_is_achieved_over_peak():
    # 10,000 tokens/s of full fine-tuning at 40.45 GFLOP per token on a 989 TFLOP/s part: about 40.9 %
    flops_per_s = 10_000 * 40.45e9
    assert mfu(flops_per_s, 989e12) == pytest.approx(0.409, abs=1e-3)
    with pytest.raises(ValueError):
        mfu(1.0, 0)
