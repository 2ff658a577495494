"""The fast path's options: packed sequences must not attend across their boundaries, bf16 `auto`."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftcompare.errors import FtcompareError
from ftcompare.fast_path import (
    PackedRowsCollator,
    WithoutPaddingMask,
    is_right_padded,
    packed_layout,
    resolve_bf16,
    resolve_torch_compile,
    training_options,
)

PAD = 0


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny_llama(request):
    torch.manual_seed(0)
    # Large initial weights, so that attention moves the loss visibly and a leak across boundaries shows.
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
        initializer_range=0.5,
        attn_implementation=request.param,
    )
    return LlamaForCausalLM(config).train()  # train(): the mode SFTTrainer runs it in (dropout is 0 here)


SEQUENCES = [[5, 9, 13, 2, 7], [11, 3, 8], [4, 6, 10, 12], [15, 14], [21, 22, 23, 24, 25, 26]]
# Two bins per batch, as TRL's best-fit-decreasing packing would hand them over.
BINS = [
    {"input_ids": SEQUENCES[0] + SEQUENCES[1] + SEQUENCES[3], "seq_lengths": [5, 3, 2]},
    {"input_ids": SEQUENCES[2] + SEQUENCES[4], "seq_lengths": [4, 6]},
]


def summed_loss(model, batch) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled positions, as SFTTrainer's forward is called."""
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            position_ids=batch.get("position_ids"),
            attention_mask=batch.get("attention_mask"),
            use_cache=False,
        ).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )


def each_sequence_alone(model) -> torch.Tensor:
    return sum(summed_loss(model, {"input_ids": torch.tensor([s]), "labels": torch.tensor([s])}) for s in SEQUENCES)


def test_packed_rows_give_the_loss_of_each_sequence_alone(tiny_llama):
    batch = PackedRowsCollator(pad_token_id=PAD)(BINS)
    assert "attention_mask" not in batch  # a mask would make transformers ignore the boundaries
    assert batch["position_ids"].tolist()[0] == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1]
    assert torch.allclose(summed_loss(tiny_llama, batch), each_sequence_alone(tiny_llama), rtol=1e-5)


def test_trls_flat_layout_gives_the_same_loss(tiny_llama):
    flat = DataCollatorForLanguageModeling(pad_token_id=PAD, padding_free=True)(BINS)
    assert torch.allclose(summed_loss(tiny_llama, flat), each_sequence_alone(tiny_llama), rtol=1e-5)


def test_attending_across_boundaries_would_change_the_loss(tiny_llama):
    """The control: the same rows with positions that never restart let sequences see each other."""
    batch = PackedRowsCollator(pad_token_id=PAD)(BINS)
    leaky = {**batch, "position_ids": torch.arange(batch["input_ids"].size(1)).expand_as(batch["input_ids"])}
    assert not torch.allclose(summed_loss(tiny_llama, leaky), each_sequence_alone(tiny_llama), rtol=1e-2)


def test_padding_and_sequence_starts_carry_no_label():
    batch = PackedRowsCollator(pad_token_id=PAD)(BINS)
    assert batch["input_ids"].shape == (2, 10)
    assert batch["labels"][0].tolist() == [-100, 9, 13, 2, 7, -100, 3, 8, -100, 14]
    assert batch["labels"][1].tolist() == [-100, 6, 10, 12, -100, 22, 23, 24, 25, 26]
    short = PackedRowsCollator(pad_token_id=PAD)([{"input_ids": [5, 6, 7], "seq_lengths": [3]}, BINS[1]])
    assert short["input_ids"][0].tolist() == [5, 6, 7] + [PAD] * 7
    assert short["labels"][0].tolist() == [-100, 6, 7] + [-100] * 7
    assert short["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6]  # the padding is its own segment
    unpacked = PackedRowsCollator(pad_token_id=PAD)([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert unpacked["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]
    assert unpacked["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    with pytest.raises(ValueError, match="seq_lengths add up to 4"):
        PackedRowsCollator(pad_token_id=PAD)([{"input_ids": [5, 6, 7], "seq_lengths": [4]}])


def test_bf16_auto_means_a_gpu_with_bf16():
    assert resolve_bf16("auto", "cpu") is False
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cuda") is False
    if not torch.cuda.is_available():
        assert resolve_bf16("auto", "cuda") is False


def test_torch_compile_auto_needs_the_compiler_inductor_runs(monkeypatch, tmp_path):
    import importlib.util

    compiler = tmp_path / "my-c++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "my-c++")
    assert resolve_torch_compile("auto", "cpu") == (True, f"auto: inductor builds CPU kernels with {compiler}")
    assert resolve_torch_compile(True, "cpu") == (True, "asked for in the config")
    monkeypatch.setenv("CXX", "no-such-c++")
    compiled, why = resolve_torch_compile("auto", "cpu")
    assert not compiled and "no C++ compiler 'no-such-c++'" in why and "on PATH" in why
    # Asked for where inductor cannot build kernels: refused before the model loads, naming the key.
    with pytest.raises(FtcompareError, match=r"^training.torch_compile: true, but no C\+\+ compiler 'no-such-c\+\+'"):
        resolve_torch_compile(True, "cpu")
    assert resolve_torch_compile(False, "cpu") == (False, "off in the config")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    compiled, why = resolve_torch_compile("auto", "cuda")
    assert not compiled and "Triton" in why
    with pytest.raises(FtcompareError, match="Triton"):
        resolve_torch_compile(True, "cuda")


def test_options_report_what_was_on(default_config, blog_config):
    from ftcompare.config import run_settings

    blog = training_options(run_settings(blog_config, "lora")["training"], "cpu")
    assert blog["packing"] is False and blog["bf16"] is False and blog["optim"] == "paged_adamw_32bit"
    assert blog["packed_layout"] is None
    assert blog["torch_compile"] is False and blog["torch_compile_setting"] is False
    ours = training_options(run_settings(default_config, "lora")["training"], "cpu")
    assert ours["bf16"] is False and ours["bf16_setting"] == "auto"
    assert ours["torch_compile"] is False and ours["torch_compile_setting"] is False
    auto = training_options({**run_settings(default_config, "lora")["training"], "torch_compile": "auto"}, "cpu")
    assert auto["torch_compile"] is resolve_torch_compile("auto", "cpu")[0] and auto["torch_compile_setting"] == "auto"
    assert packed_layout({"packing": True, "attn_implementation": "sdpa"}) == "rows"


@pytest.fixture(scope="module")
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(60)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("packing", [False, True])
def test_full_logits_loss_is_trls_chunked_loss(word_tokenizer, default_config, tmp_path, packing):
    """Both loss paths through SFTTrainer itself, on padded batches and on packed rows."""
    import datasets
    from trl import SFTTrainer

    from ftcompare.config import run_settings
    from ftcompare.fast_path import training_collator, use_lm_head_loss
    from ftcompare.training import build_sft_config

    generator = torch.Generator().manual_seed(1)
    texts = [
        "<s> " + " ".join(f"w{int(i)}" for i in torch.randint(0, 60, (int(n),), generator=generator)) + " </s>"
        for n in torch.randint(3, 20, (12,), generator=generator)
    ]
    training = {
        **run_settings(default_config, "full")["training"],
        "max_seq_length": 48,
        "packing": packing,
        "report_to": [],
    }
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            initializer_range=0.5,
        )
    )
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(training, 0, tmp_path, "cpu"),
        train_dataset=datasets.Dataset.from_dict({"text": texts}),
        processing_class=word_tokenizer,
    )
    collate = training_collator(trainer, training)
    batch = collate([trainer.train_dataset[i] for i in range(min(4, len(trainer.train_dataset)))])
    assert ("seq_lengths" in trainer.train_dataset.column_names) == packing
    if packing:  # several sequences share a row, so the boundaries matter
        assert (batch["position_ids"] == 0).sum() > 2 * len(batch["input_ids"])
    use_lm_head_loss(trainer, {"lm_head_loss": "chunked"})
    assert "compute_loss" not in vars(trainer)  # TRL's own stays
    chunked = trainer.compute_loss(model, dict(batch))
    use_lm_head_loss(trainer, {"lm_head_loss": "full_logits"})
    full = trainer.compute_loss(model, dict(batch))
    assert torch.allclose(chunked, full, rtol=1e-5)


def test_throughput_counts_packed_sequences_not_rows():
    from ftcompare.training import TokenCountingCollator

    counter = TokenCountingCollator(PackedRowsCollator(pad_token_id=PAD))
    counter(BINS)  # rows of 10 tokens, every one a sequence's
    counter([{"input_ids": [5, 6, 7], "seq_lengths": [3]}, BINS[1]])  # 3 + 10 tokens in rows of 10
    assert (counter.samples, counter.tokens, counter.nonpad_tokens) == (5 + 3, 40, 20 + 13)


def loss_and_gradients(model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_a_right_padded_batch_without_its_mask_has_the_same_loss_and_gradients(tiny_llama):
    collate = DataCollatorForLanguageModeling(pad_token_id=PAD)
    features = [{"input_ids": ids} for ids in SEQUENCES]
    masked = collate(features)
    unmasked = WithoutPaddingMask(collate)(features)
    assert (masked["attention_mask"] == 0).any() and "attention_mask" not in unmasked
    loss, gradients = loss_and_gradients(tiny_llama, masked)
    loss_unmasked, gradients_unmasked = loss_and_gradients(tiny_llama, unmasked)
    assert torch.allclose(loss_unmasked, loss, rtol=1e-6)
    for grad, grad_unmasked in zip(gradients, gradients_unmasked, strict=True):
        assert torch.allclose(grad_unmasked, grad, rtol=1e-4, atol=1e-6)


def test_a_left_padded_batch_keeps_its_mask(tiny_llama):
    """Without it, the real tokens would attend to the padding before them, and the loss would change."""
    input_ids = torch.tensor([[PAD, PAD, 5, 9, 13], [11, 3, 8, 2, 7]])
    attention_mask = (input_ids != PAD).long()
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": input_ids.masked_fill(attention_mask == 0, -100),
    }
    assert not is_right_padded(attention_mask)
    assert torch.equal(WithoutPaddingMask(lambda features: dict(batch))([])["attention_mask"], attention_mask)
    with torch.no_grad():
        with_mask = tiny_llama(**batch, use_cache=False).loss
        without = tiny_llama(input_ids=input_ids, labels=batch["labels"], use_cache=False).loss
    assert not torch.allclose(with_mask, without, rtol=1e-3)


def test_right_padding_is_ones_then_zeros_in_every_row():
    assert is_right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not is_right_padded(torch.tensor([[1, 1, 1], [1, 0, 1]]))
