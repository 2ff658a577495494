"""How many parameters a model has, and how many of them train: one count for every stage.

Imports neither torch nor PEFT: a PEFT model is recognised by the method PEFT gives it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterCount:
    """A model's parameters: those that train (requires_grad) and all of them."""

    trainable: int
    total: int

    @property
    def trainable_pct(self) -> float:
        """The trainable share in percent, as PEFT prints it ("trainable%")."""
        return 100 * self.trainable / self.total


def count_parameters(model) -> ParameterCount:
    """PEFT's own count for a PeftModel, plain sums over `model.parameters()` otherwise.

    Each shared tensor is counted once, as transformers and PEFT count them. PEFT's count also
    gives the true size of quantized (4-bit) weights, which a plain sum of numel() halves.
    """
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return ParameterCount(trainable=int(trainable), total=int(total))
    parameters = list(model.parameters())
    return ParameterCount(
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        total=sum(p.numel() for p in parameters),
    )
