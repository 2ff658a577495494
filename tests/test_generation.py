"""Generation (ftcompare.generation): prompt format, batched greedy decoding with left padding, and the seed
in sampling."""

import pytest
from helpers.tiny_llama import tiny_llama, word_tokenizer

from ftcompare.generation import _until_eos, build_generation_config, format_prompt, generate_outputs

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
