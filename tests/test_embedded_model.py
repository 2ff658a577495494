"""The embedded base model: tokenizer, pretraining, determinism, and the saved folder."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file

from ftcompare.config import validate_config
from ftcompare.embedded_model import (
    CARD_NAME,
    EmbeddedModelSpec,
    build_embedded_model,
    train_tokenizer,
)
from ftcompare.parameters import count_parameters
from ftcompare.pretraining_text import pretraining_texts

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "config.schema.yaml"
SMALL = EmbeddedModelSpec(
    vocab_size=384,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pretrain_steps=20,
    pretrain_batch_size=8,
    pretrain_seq_length=32,
    pretrain_learning_rate=1e-2,
    seed=7,
)
CHAT = "<s>[INST] What does os.path.join do? [/INST] It joins path parts: é, ☃, \ttabs\nand lines. </s>"
CARD_KEYS = {
    "source",
    "name",
    "model_type",
    "parameter_count",
    "dtype",
    "vocab_size",
    "spec",
    "pretraining_text",
    "pretrain_steps",
    "pretrain_loss_first",
    "pretrain_loss_last",
    "pretrain_seconds",
    "build_seconds",
    "pretrain_loss_curve",
}


@pytest.fixture(scope="module")
def texts():
    return pretraining_texts()


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts[:200], 320)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("embedded") / "model"
    messages = []
    card = build_embedded_model(SMALL, out_dir, log=messages.append)
    return out_dir, card, messages


def test_pretraining_texts_are_fixed_plain_prose(texts):
    assert texts == pretraining_texts()
    assert len(texts) > 100 and sum(map(len, texts)) > 100_000
    assert all(isinstance(text, str) and text.strip() for text in texts)
    joined = "\n".join(texts)
    assert "[INST]" not in joined and "[/INST]" not in joined
    assert len(set(texts)) > 0.9 * len(texts), "class docstrings inherited from a base class are repeated"


def test_tokenizer_special_tokens_match_llama2(tokenizer):
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerFast)
    assert len(tokenizer) == 320
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}) == 4
    ids = tokenizer(CHAT)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1, "no bos is added on top of the text's own <s>"
    for marker in ("[INST]", "[/INST]"):
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.padding_side == "right"


def test_tokenizer_round_trips_text(tokenizer):
    ids = tokenizer(CHAT)["input_ids"]
    assert tokenizer.decode(ids) == CHAT
    assert tokenizer.decode(ids, skip_special_tokens=True) == CHAT.removeprefix("<s>").removesuffix("</s>")
    assert tokenizer.unk_token_id not in tokenizer("ünïcödé ✓ 中文 \x00")["input_ids"]


def test_tokenizer_saves_and_loads_identically(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(CHAT)["input_ids"] == tokenizer(CHAT)["input_ids"]
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.unk_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    )
    assert loaded.padding_side == "right"
    batch = loaded(["<s>short", "<s>a longer line of text"], padding=True)
    assert batch["input_ids"][0][-1] == loaded.pad_token_id


def test_tokenizer_training_is_deterministic(texts, tokenizer):
    again = train_tokenizer(texts[:200], 320)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_spec_has_a_field_for_each_schema_key_and_no_defaults_of_its_own():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    section = schema["properties"]["base_model"]["properties"]["embedded"]["properties"]
    fields = dataclasses.fields(EmbeddedModelSpec)
    assert {field.name for field in fields} == {*section, "seed"}
    assert all(field.default is dataclasses.MISSING for field in fields)


def test_spec_from_the_validated_config_takes_the_schema_defaults():
    raw = {"seed": 3, "base_model": {"name": "embedded", "embedded": {"hidden_size": 64, "pretrain_steps": 5}}}
    spec = EmbeddedModelSpec.from_config(validate_config(raw, search_dirs=[REPO]))
    assert (spec.seed, spec.hidden_size, spec.pretrain_steps, spec.vocab_size) == (3, 64, 5, 2048)


def test_build_writes_a_loadable_llama_folder(built):
    out_dir, card, _ = built
    names = {path.name for path in out_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        CARD_NAME,
    } <= names
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    assert isinstance(model, transformers.LlamaForCausalLM)
    assert model.config.tie_word_embeddings is False
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert model.config.vocab_size == len(tokenizer) == SMALL.vocab_size
    assert model.generation_config.do_sample is False
    assert tokenizer.model_max_length == SMALL.max_position_embeddings
    assert json.loads((out_dir / CARD_NAME).read_text()) == card
    assert set(card) == CARD_KEYS
    assert (card["source"], card["dtype"], card["spec"]) == ("embedded", "float32", dataclasses.asdict(SMALL))
    assert card["parameter_count"] == count_parameters(model).total

    prompt = tokenizer("<s>[INST] What does copy do? [/INST]", return_tensors="pt")
    first = model.generate(**prompt, max_new_tokens=8)
    second = model.generate(**prompt, max_new_tokens=8)
    assert first.shape[1] > prompt["input_ids"].shape[1] and torch.equal(first, second)


def test_parameter_count_follows_the_llama_formula(built):
    _, card, _ = built
    v, h, i, layers = SMALL.vocab_size, SMALL.hidden_size, SMALL.intermediate_size, SMALL.num_hidden_layers
    kv = h // SMALL.num_attention_heads * SMALL.num_key_value_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h  # q, o, k, v, MLP, two RMSNorms
    assert card["parameter_count"] == 2 * v * h + layers * per_layer + h


def test_pretraining_loss_falls(built):
    _, card, messages = built
    curve = card["pretrain_loss_curve"]
    assert curve[0][0] == 1 and curve[-1][0] == SMALL.pretrain_steps
    assert [step for step, _ in curve] == sorted({step for step, _ in curve})
    assert card["pretrain_loss_first"] == curve[0][1] and card["pretrain_loss_last"] == curve[-1][1]
    assert curve[0][1] > 5.0  # about ln(384): an untrained model
    assert card["pretrain_loss_last"] < card["pretrain_loss_first"] - 0.7
    assert any("pretrain step 20/20" in message for message in messages)


def test_same_seed_gives_the_same_model(built, tmp_path):
    out_dir, card, _ = built
    again = build_embedded_model(SMALL, tmp_path / "again", log=lambda message: None)
    assert again["pretrain_loss_curve"] == card["pretrain_loss_curve"]
    first, second = load_file(out_dir / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (out_dir / "tokenizer.json").read_bytes()


def test_another_seed_gives_another_model(built, tmp_path):
    out_dir, _, _ = built
    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1, pretrain_steps=1)
    build_embedded_model(other, tmp_path / "other", log=lambda message: None)
    first, second = load_file(out_dir / "model.safetensors"), load_file(tmp_path / "other" / "model.safetensors")
    embeddings = "model.embed_tokens.weight"
    assert not torch.equal(first[embeddings], second[embeddings])


def test_zero_pretraining_steps_and_bfloat16(tmp_path):
    spec = dataclasses.replace(SMALL, pretrain_steps=0)
    card = build_embedded_model(spec, tmp_path / "model", log=lambda message: None, dtype="bfloat16")
    assert card["pretrain_loss_curve"] == [] and card["pretrain_loss_first"] is None
    assert card["dtype"] == "bfloat16"
    weights = load_file(tmp_path / "model" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.bfloat16}
