"""How many parameters a model has, and how many of them train."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.trainable / self.total


def count_parameters(model) -> ParameterCount:
    """PEFT's own count for a PeftModel, the plain sums otherwise."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return ParameterCount(*model.get_nb_trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParameterCount(trainable=trainable, total=total)
