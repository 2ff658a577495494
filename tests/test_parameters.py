"""Parameter counts: plain sums for a model, PEFT's own count for a PEFT model, the blog's figures."""

import dataclasses

import pytest
from helpers.tiny_llama import tiny_llama
from peft import LoraConfig, get_peft_model

from ftcompare.parameters import ParameterCount, count_parameters

# The blog's LoraConfig: r 8, alpha 8, dropout 0.1, bias none, PEFT's default targets (q_proj, v_proj).
BLOG_LORA = dict(r=8, lora_alpha=8, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM")


def test_a_model_counts_all_its_parameters_and_those_that_train():
    model = tiny_llama()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == ParameterCount(trainable=total, total=total)
    assert count_parameters(model).trainable_pct == 100.0

    model.model.embed_tokens.weight.requires_grad_(False)
    frozen = model.model.embed_tokens.weight.numel()
    count = count_parameters(model)
    assert count == ParameterCount(trainable=total - frozen, total=total)
    assert count.trainable_pct == pytest.approx(100 * (total - frozen) / total)


def test_a_shared_tensor_counts_once():
    model = tiny_llama()
    untied = count_parameters(model).total
    model.lm_head.weight = model.model.embed_tokens.weight
    assert count_parameters(model).total == untied - model.lm_head.weight.numel()


def test_a_peft_model_counts_as_peft_does():
    model = get_peft_model(tiny_llama(), LoraConfig(**BLOG_LORA))
    count = count_parameters(model)
    assert (count.trainable, count.total) == model.get_nb_trainable_parameters()
    assert 0 < count.trainable < count.total


def test_a_count_is_a_frozen_record():
    count = ParameterCount(trainable=1, total=4)
    assert count.trainable_pct == 25.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        count.total = 5
