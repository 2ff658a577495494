"""The loss path of `training.lm_head_loss`: TRL's chunked LM head (its own) or the loss from the whole
logits, as transformers computes it. Why and when each pays: docs/performance.md ("Speed options")."""

import functools

import transformers


def use_lm_head_loss(trainer, training: dict) -> None:
    """Give the trainer the loss path `training["lm_head_loss"]` names (TRL's chunked head is its own)."""
    if training["lm_head_loss"] == "full_logits":
        trainer.compute_loss = functools.partial(full_logits_loss, trainer)


def full_logits_loss(trainer, model, inputs, return_outputs=False, num_items_in_batch=None):
    """transformers' Trainer.compute_loss: the model's own loss over the whole logits.

    use_cache=False as SFTTrainer's own passes it, whatever the model's config says: with a cache,
    transformers would not read packed sequences' boundaries from position_ids.
    """
    return transformers.Trainer.compute_loss(
        trainer,
        model,
        {**inputs, "use_cache": False},
        return_outputs=return_outputs,
        num_items_in_batch=num_items_in_batch,
    )
