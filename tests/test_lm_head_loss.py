"""The loss from the whole logits (ftcompare.lm_head_loss) equals TRL's chunked LM-head loss."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


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

    from ftcompare.collators import install_collator
    from ftcompare.config import run_settings
    from ftcompare.lm_head_loss import use_lm_head_loss
    from ftcompare.speed_options import resolve_speed_options
    from ftcompare.trainer_builder import build_sft_config

    generator = torch.Generator().manual_seed(1)
    texts = [
        "<s> " + " ".join(f"w{int(i)}" for i in torch.randint(0, 60, (int(n),), generator=generator)) + " </s>"
        for n in torch.randint(3, 20, (12,), generator=generator)
    ]
    training = {
        **run_settings(default_config, "full")["training"],
        "max_seq_length": 48,
        "packing": packing,
        "drop_padding_mask": False,  # TRL's chunked head counts tokens from the mask
        "report_to": [],
    }
    speed = resolve_speed_options(training, "cpu")
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
        args=build_sft_config(training, 0, tmp_path, "cpu", speed),
        train_dataset=datasets.Dataset.from_dict({"text": texts}),
        processing_class=word_tokenizer,
    )
    install_collator(trainer, training, speed.packed_layout)
    collate = trainer.data_collator
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
