"""The order training sees its rows in: seeded per epoch, so a resumed run sees what an uninterrupted one did.

transformers' group_by_length sampler shuffles with torch's global random state as it stands when
an epoch begins. A run resumed from a checkpoint reaches that point by another path (no evaluation
before training, no epochs before the one it resumes in), so it would see the rows in another
order and end with another loss. Seeding each epoch's shuffle with seed + epoch, as accelerate
already does for plain random sampling, gives both runs the same order.
"""

import torch
from torch.utils.data import SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import has_length
from trl import SFTTrainer


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """LengthGroupedSampler whose shuffle depends only on (seed, epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate's data loader) before each epoch."""
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class SeededSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the group_by_length order seeded by data_seed (else seed) and the epoch, and the
    held-out rows evaluated in file order."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset):
        # The eval loss is a mean of batch means, so it depends on which rows share a batch. transformers
        # groups eval batches by length too, in an order drawn from the seed; in file order instead, every
        # run and seed measures the base model alike, and the evaluate rule's losses equal training's.
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
