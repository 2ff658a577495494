"""The seeded data order (ftcompare.data_order): the length-grouped sampler depends only on seed and
epoch, and the trainer uses it."""

import pytest
import torch
from helpers.tiny_run import make_tiny_run, settings_for
from transformers import LlamaForCausalLM

from ftcompare.data_order import EpochSeededLengthGroupedSampler, SeededSFTTrainer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny-run"))


def test_the_length_grouped_order_depends_only_on_seed_and_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(64)]

    def order(seed, epoch):
        sampler = EpochSeededLengthGroupedSampler(4, lengths, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    torch.manual_seed(0)
    first = order(1, 0)
    torch.manual_seed(123)  # the global random state plays no part
    assert order(1, 0) == first
    assert sorted(first) == list(range(64))
    assert order(1, 1) != first and order(2, 0) != first
    # Still grouped by length: the longest row opens the epoch, as transformers' sampler does.
    assert lengths[first[0]] == max(lengths)


@pytest.mark.slow
def test_the_trainer_shuffles_with_the_seeded_sampler_each_epoch(tiny_run, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from ftcompare.speed_options import resolve_speed_options
    from ftcompare.trainer_builder import build_sft_config

    settings = settings_for()
    speed = resolve_speed_options(settings["training"], "cpu")
    args = build_sft_config(settings["training"], settings["seed"], tmp_path, "cpu", speed)
    trainer = SeededSFTTrainer(
        model=LlamaForCausalLM.from_pretrained(tiny_run / "base"),
        args=args,
        train_dataset=datasets.Dataset.from_parquet(str(tiny_run / "train.parquet")),
        processing_class=AutoTokenizer.from_pretrained(tiny_run / "base"),
    )
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, EpochSeededLengthGroupedSampler) and sampler.seed == settings["seed"]
    loader.set_epoch(3)
    assert sampler.epoch == 3
