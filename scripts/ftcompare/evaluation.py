"""Score one model on every evaluation set: loss in nats per token and perplexity, as training scores its
held-out split.

The same code path as a run's eval_loss: TRL's SFTTrainer tokenizes each set (truncated to max_seq_length,
never packed) and transformers' Trainer.evaluate averages the batches' mean token cross-entropy, weighted
by rows per batch, through the loss path and collator training installs (lm_head_loss, drop_padding_mask).
Every model is scored with the same settings, the global `training` section's, so their losses compare.
"""

import logging
import tempfile
import time
from pathlib import Path

import datasets
import transformers
from trl import SFTConfig

from ftcompare.checkpoints import checkpoint_step, checkpoints_in, is_complete
from ftcompare.collators import install_collator
from ftcompare.data_order import SeededSFTTrainer
from ftcompare.lm_head_loss import use_lm_head_loss
from ftcompare.metrics import perplexity
from ftcompare.speed_options import resolve_bf16
from ftcompare.trainer_builder import TEXT_COLUMN

log = logging.getLogger("ftcompare.evaluation")


def kept_checkpoints(checkpoint_dir) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint a finished run kept (checkpoints.keep), oldest first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    complete = [path for path in checkpoints_in(folder) if is_complete(path)]
    return sorted((checkpoint_step(path), path) for path in complete)


def eval_sft_config(settings: dict, seed: int, output_dir, device: str) -> SFTConfig:
    """The SFTConfig of training (trainer_builder.build_sft_config) as far as evaluation reads it."""
    return SFTConfig(
        output_dir=str(output_dir),
        per_device_eval_batch_size=settings["per_device_eval_batch_size"],
        fp16=settings["fp16"],
        bf16=resolve_bf16(settings["bf16"], device),
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        dataset_text_field=TEXT_COLUMN,
        max_length=settings["max_seq_length"],
        packing=False,
        eval_packing=False,
    )


def score_eval_sets(model, tokenizer, sets: dict[str, Path], settings: dict, seed: int, device: str) -> dict:
    """{set name: {loss, perplexity, rows, tokens, seconds}} for the Parquet files `sets` (one column, `text`).

    `tokens` counts the non-padding tokens the model read, after truncation to max_seq_length.
    """
    transformers.set_seed(seed)
    loaded = {name: datasets.Dataset.from_parquet(str(path)) for name, path in sets.items()}
    with tempfile.TemporaryDirectory(prefix="ftcompare-evaluate-") as output_dir:
        trainer = SeededSFTTrainer(
            model=model,
            args=eval_sft_config(settings, seed, output_dir, device),
            train_dataset=next(iter(loaded.values())).select(range(1)),  # required by TRL; nothing trains
            processing_class=tokenizer,
        )
        use_lm_head_loss(trainer, settings)
        counter = install_collator(trainer, settings, packed_layout=None)
        scores = {}
        for name, dataset in loaded.items():
            counter.samples = counter.tokens = counter.nonpad_tokens = 0
            began = time.perf_counter()
            loss = float(trainer.evaluate(eval_dataset=dataset)["eval_loss"])
            scores[name] = {
                "loss": loss,
                "perplexity": perplexity(loss),
                "rows": counter.samples,
                "tokens": counter.nonpad_tokens,
                "seconds": round(time.perf_counter() - began, 3),
            }
            log.info(
                "%s: loss %.4f nats/token over %d rows, %d tokens", name, loss, len(dataset), counter.nonpad_tokens
            )
    return scores
