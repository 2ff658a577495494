"""The embedded base model: a tiny Llama-architecture causal LM built and pretrained here, offline.

It gives LoRA and full fine-tuning something real to adapt when no hub model can be downloaded:
a byte-level BPE tokenizer and a few hundred steps of next-token prediction on documentation
that ships with Python, saved with save_pretrained like any hub checkpoint. Deterministic by seed
for a given Python version (the text is the installed standard library's documentation).
"""

import dataclasses
import logging
import math
import platform
import random
import time

import numpy as np
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from ftcompare import strict_json
from ftcompare.atomic import atomic_path
from ftcompare.errors import FtcompareError
from ftcompare.parameters import count_parameters
from ftcompare.pretraining_text import pretraining_texts

CARD_NAME = "ftcompare_model.json"
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
# Llama-2 chat markers: one token each, so the fine-tuning text stays short.
CHAT_MARKERS = ("[INST]", "[/INST]")
LOSS_LOG_INTERVAL = 25
WARMUP_FRACTION = 0.05


def train_tokenizer(texts: list[str], vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Llama-2's special tokens, trained on `texts`.

    `<s>` and `</s>` are the bos and eos tokens, so those literals in Llama-2 chat text become
    their ids; no bos is added automatically, because the chat text carries its own `<s>`.
    """
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD, *CHAT_MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # The chat markers keep their reserved ids but are ordinary text: decode(skip_special_tokens=True) keeps them.
    backend.add_tokens([AddedToken(marker, special=False, normalized=False) for marker in CHAT_MARKERS])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
    )


@dataclasses.dataclass(frozen=True)
class EmbeddedModelSpec:
    """The config's base_model.embedded section plus the seed (the defaults live in config.schema.yaml)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_seq_length: int
    pretrain_learning_rate: float
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> "EmbeddedModelSpec":
        """From a validated config (every default filled in): its `seed` and `base_model.embedded`."""
        return cls(seed=config["seed"], **config["base_model"]["embedded"])


def build_embedded_model(spec: EmbeddedModelSpec, out_dir, log=None, dtype: str = "float32") -> dict:
    """Train the tokenizer, build and pretrain the model, save both into `out_dir`; return the card.

    Pretraining runs on the CPU in float32; `dtype` (float32, bfloat16, float16 or auto = float32)
    is what the saved weights are cast to. `log` takes one message string (default: logging).
    `out_dir` appears complete or not at all. `spec` is as the config check left it (validate_config
    refuses blocks longer than the context, and heads that do not divide the hidden size).
    """
    log = log or logging.getLogger(__name__).info
    started = time.perf_counter()
    _seed_everything(spec.seed)
    texts = pretraining_texts()
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    log(
        f"embedded model: tokenizer of {len(tokenizer)} tokens trained on {len(texts)} documents "
        f"({sum(map(len, texts))} characters) from Python {platform.python_version()}"
    )
    blocks = _packed_blocks(texts, tokenizer, spec.pretrain_seq_length)
    # Set after packing: whole documents are longer than the model's context and must not warn.
    tokenizer.model_max_length = spec.max_position_embeddings
    model = transformers.LlamaForCausalLM(_llama_config(spec, tokenizer))
    parameter_count = count_parameters(model).total
    log(
        f"embedded model: {parameter_count:,} parameters; pretraining {spec.pretrain_steps} steps on "
        f"{len(blocks)} blocks of {spec.pretrain_seq_length} tokens, batch {spec.pretrain_batch_size}"
    )
    pretrain_started = time.perf_counter()
    loss_curve = _pretrain(model, blocks, spec, log)
    pretrain_seconds = time.perf_counter() - pretrain_started

    model.eval()
    saved_dtype = "float32" if dtype == "auto" else dtype
    model.to(getattr(torch, saved_dtype))
    model.generation_config = transformers.GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    card = {
        "source": "embedded",
        "name": "embedded",
        "model_type": model.config.model_type,
        "parameter_count": parameter_count,
        "dtype": saved_dtype,
        "vocab_size": len(tokenizer),
        "spec": dataclasses.asdict(spec),
        "pretraining_text": {
            "python": platform.python_version(),
            "documents": len(texts),
            "characters": sum(map(len, texts)),
            "tokens": int(blocks.numel()),
        },
        "pretrain_steps": spec.pretrain_steps,
        "pretrain_loss_first": loss_curve[0][1] if loss_curve else None,
        "pretrain_loss_last": loss_curve[-1][1] if loss_curve else None,
        "pretrain_seconds": round(pretrain_seconds, 3),
        "build_seconds": round(time.perf_counter() - started, 3),
        "pretrain_loss_curve": loss_curve,
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD_NAME).write_text(strict_json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log(
        f"embedded model: saved to {out_dir} (pretrain loss {card['pretrain_loss_first']} -> "
        f"{card['pretrain_loss_last']}, {card['build_seconds']:.1f} s)"
    )
    return card


def _llama_config(spec: EmbeddedModelSpec, tokenizer) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _packed_blocks(texts: list[str], tokenizer, seq_length: int) -> torch.Tensor:
    """Every text as `<s> text </s>`, concatenated and cut into rows of `seq_length` tokens."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = []
    for ids in encoded:
        stream.append(tokenizer.bos_token_id)
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    rows = len(stream) // seq_length
    if rows == 0:
        raise FtcompareError(
            f"base_model.embedded.pretrain_seq_length = {seq_length}: longer than all the "
            f"pretraining text ({len(stream)} tokens)"
        )
    return torch.tensor(stream[: rows * seq_length], dtype=torch.long).view(rows, seq_length)


def _pretrain(model, blocks: torch.Tensor, spec: EmbeddedModelSpec, log) -> list[list[float]]:
    """Next-token prediction with AdamW, linear warmup then cosine decay; returns [[step, loss], ...].

    The logged loss is the mean over the steps since the previous log (step 1 is its own).
    """
    steps = spec.pretrain_steps
    if steps == 0:
        return []
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.pretrain_learning_rate, betas=(0.9, 0.95), weight_decay=0.01
    )
    warmup = max(1, round(steps * WARMUP_FRACTION))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, steps))
    batches = _batch_indices(len(blocks), spec.pretrain_batch_size, spec.seed)
    interval = max(1, min(LOSS_LOG_INTERVAL, steps // 10))
    curve, pending = [], []
    for step in range(1, steps + 1):
        input_ids = blocks[next(batches)]
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append(loss.item())
        if step == 1 or step % interval == 0 or step == steps:
            mean = round(sum(pending) / len(pending), 4)
            curve.append([step, mean])
            pending = []
            log(f"embedded model: pretrain step {step}/{steps} loss {mean:.4f}")
    return curve


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batch_indices(rows: int, batch_size: int, seed: int):
    """Endless batches of row indices: one shuffled pass over the rows after another."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(rows, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def _seed_everything(seed: int) -> None:
    # No torch.use_deterministic_algorithms: on the CPU these kernels already give identical
    # results run to run (tested), and the flag's fallbacks cost about 40% more time per step.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
