"""The collators (ftcompare.collators): packed sequences must not attend across their boundaries, a
right-padded batch without its mask learns the same, and the token counter counts sequences."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftcompare.collators import PackedRowsCollator, TokenCountingCollator, WithoutPaddingMask, is_right_padded

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


def test_throughput_counts_packed_sequences_not_rows():
    counter = TokenCountingCollator(PackedRowsCollator(pad_token_id=PAD))
    counter(BINS)  # rows of 10 tokens, every one a sequence's
    counter([{"input_ids": [5, 6, 7], "seq_lengths": [3]}, BINS[1]])  # 3 + 10 tokens in rows of 10
    assert (counter.samples, counter.tokens, counter.nonpad_tokens) == (5 + 3, 40, 20 + 13)
    # Attention's FLOPs grow with each sequence's squared length, the packed bins' padding not counted.
    assert counter.squared_lengths == (25 + 9 + 4 + 16 + 36) + (9 + 16 + 36)
    assert counter.last_batch == (13, 9 + 16 + 36)


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


def test_token_counter_counts_padding_apart():
    def collate(features):
        width = max(len(f) for f in features)
        ids = torch.tensor([f + [0] * (width - len(f)) for f in features])
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in features])
        return {"input_ids": ids, "attention_mask": mask}

    counter = TokenCountingCollator(collate)
    counter([[5, 6, 7], [5]])
    counter([[1, 2], [3, 4]])
    assert (counter.samples, counter.tokens, counter.nonpad_tokens) == (4, 10, 8)
    assert counter.squared_lengths == (9 + 1) + (4 + 4)

    unmasked = TokenCountingCollator(lambda features: {"input_ids": torch.tensor(features)})
    unmasked([[5, 6, 7], [1, 2, 3]])  # no mask, not packed: every row is a sequence of its full width
    assert (unmasked.nonpad_tokens, unmasked.squared_lengths) == (6, 9 + 9)
