"""The batches a run's trainer sees: packed bins one per row, the padding mask dropped where it changes
nothing, and every batch counted (samples, tokens, non-padding tokens) for the throughput figures.

Why packing keeps one bin per row and why the padding mask can go: docs/performance.md ("Speed options").
"""

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class PackedRowsCollator:
    """Batches TRL-packed bins (`input_ids` plus `seq_lengths`) one bin per row, without an attention mask.

    position_ids restart at 0 for each sequence, so the model masks attention at every boundary; the
    padding after the last sequence of a row forms its own segment and carries no labels. The first
    token of each sequence carries no label either: it would be predicted from the previous sequence.
    Rows without `seq_lengths` (the held-out split, which is never packed) count as one sequence.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(feature["input_ids"]) for feature in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            lengths = [int(n) for n in feature.get("seq_lengths", [len(ids)])]
            if sum(lengths) != len(ids):
                raise ValueError(f"packed row {row}: seq_lengths add up to {sum(lengths)}, input_ids has {len(ids)}")
            input_ids[row, : len(ids)] = ids
            labels[row, : len(ids)] = ids
            position_ids[row] = _restarting_positions(lengths + [width - len(ids)])
            starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
            labels[row, starts] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def _restarting_positions(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths if n > 0])


@dataclass
class WithoutPaddingMask:
    """Batches of `inner` without their attention mask where every row is padded on the right only."""

    inner: object

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        mask = batch.get("attention_mask")
        if mask is not None and is_right_padded(mask):
            del batch["attention_mask"]
        return batch


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones, then zeros (no padding at all counts)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


class TokenCountingCollator:
    """Wraps a collator to count samples, all tokens and non-padding tokens, and the sum of the squared
    lengths of the sequences (what attention's FLOPs grow with, ftcompare.flops)."""

    def __init__(self, inner):
        self.inner = inner
        self.samples = 0
        self.tokens = 0
        self.nonpad_tokens = 0
        self.squared_lengths = 0
        # (non-padding tokens, squared lengths) of the batch collated last: the data loader collates one
        # batch ahead of the one the trainer trains on (ftcompare.callbacks.StepTimer)
        self.last_batch = (0, 0)

    def __call__(self, features):
        batch = self.inner(features)
        packed = isinstance(features[0], dict) and "seq_lengths" in features[0]
        self.samples += sum(len(f["seq_lengths"]) for f in features) if packed else len(features)
        self.tokens += int(batch["input_ids"].numel())
        lengths = sequence_lengths(batch, features, packed)
        nonpad, squared = sum(lengths), sum(n * n for n in lengths)
        self.nonpad_tokens += nonpad
        self.squared_lengths += squared
        self.last_batch = (nonpad, squared)
        return batch


def sequence_lengths(batch: dict, features: list, packed: bool) -> list[int]:
    """The non-padding length of each sequence in a batch: from the attention mask, the packed bins'
    seq_lengths (the rows' padding is what the sequences leave free), else every row's full width."""
    if "attention_mask" in batch:
        return [int(n) for n in batch["attention_mask"].sum(dim=-1).reshape(-1)]
    if packed:
        return [int(n) for f in features for n in f["seq_lengths"]]
    rows = batch["input_ids"].reshape(-1, batch["input_ids"].shape[-1])
    return [rows.shape[1]] * rows.shape[0]


def install_collator(trainer, training: dict, packed_layout: str | None) -> TokenCountingCollator:
    """Give the trainer the collator `training` asks for, behind a token counter, and return the counter.

    The counter reads the attention mask, so it counts before `drop_padding_mask` removes it.
    """
    inner = trainer.data_collator
    if packed_layout == "rows":
        inner = PackedRowsCollator(pad_token_id=trainer.data_collator.pad_token_id)
    counter = TokenCountingCollator(inner)
    trainer.data_collator = WithoutPaddingMask(counter) if training["drop_padding_mask"] else counter
    return counter
