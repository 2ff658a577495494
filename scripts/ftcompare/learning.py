"""Learning and forgetting of each run, from the losses the evaluate rule measured (results/evaluate/*.json).

As in Biderman et al., "LoRA Learns Less and Forgets Less" (TMLR 2024), in loss rather than accuracy:
learning on a target set = the base model's loss minus the run's (positive: the run fits the task's text
better); forgetting on a source set = the run's loss minus the base model's (positive: the run lost some of
what the base model handled). Both in nats per token; the base model is the zero of both.
"""

from dataclasses import dataclass, field
from pathlib import Path

from ftcompare.errors import FtcompareError
from ftcompare.report.numbers import as_number
from ftcompare.strict_json import read_json_object

BASE_MODEL = "base"
ROLES = ("target", "source")


@dataclass(frozen=True)
class SetChange:
    """One run on one evaluation set, beside the base model."""

    eval_set: str
    role: str  # target: `change` is learning; source: `change` is forgetting
    base_loss: float | None
    run_loss: float | None

    @property
    def change(self) -> float | None:
        """Learning (target) or forgetting (source) in nats per token; None where a loss is missing."""
        if self.base_loss is None or self.run_loss is None:
            return None
        return self.base_loss - self.run_loss if self.role == "target" else self.run_loss - self.base_loss


@dataclass(frozen=True)
class LearningForgetting:
    model: str
    method: str | None
    sets: list[SetChange]
    # The run's kept checkpoints (checkpoints.keep), oldest first: (step, their learning and forgetting).
    checkpoints: list[tuple[int, "LearningForgetting"]] = field(default_factory=list)

    def _changes(self, role: str) -> dict[str, float | None]:
        return {s.eval_set: s.change for s in self.sets if s.role == role}

    @property
    def learning(self) -> dict[str, float | None]:
        return self._changes("target")

    @property
    def forgetting(self) -> dict[str, float | None]:
        return self._changes("source")

    @property
    def mean_learning(self) -> float | None:
        return _mean(self.learning.values())

    @property
    def mean_forgetting(self) -> float | None:
        return _mean(self.forgetting.values())


def _mean(values) -> float | None:
    """The mean of the values, None when there are none or one is missing (a partial mean would mislead)."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def set_losses(evaluation: dict) -> dict[str, tuple[str, float | None]]:
    """{set: (role, loss)} of one evaluate result."""
    return {name: (entry["role"], as_number(entry.get("loss"))) for name, entry in evaluation["sets"].items()}


def learning_forgetting(base: dict, run: dict) -> LearningForgetting:
    """One run's learning on each target set and forgetting on each source set, against the base model.

    `base` and `run` are evaluate results (results/evaluate/<model>.json); a set only one of them has is
    left out, since there is nothing to compare it with.
    """
    base_sets, run_sets = set_losses(base), set_losses(run)
    changes = []
    for name, (role, run_loss) in run_sets.items():
        if name not in base_sets:
            continue
        base_role, base_loss = base_sets[name]
        if base_role != role:
            raise FtcompareError(
                f"evaluation set {name!r} is a {base_role} set for the base model and a {role} set for "
                f"{run['model']}: rerun the evaluate rule for both"
            )
        changes.append(SetChange(name, role, base_loss, run_loss))
    checkpoints = [
        (entry["step"], learning_forgetting(base, {"model": run["model"], "method": run.get("method"), **entry}))
        for entry in sorted(run.get("checkpoints") or [], key=lambda entry: entry["step"])
    ]
    return LearningForgetting(run["model"], run.get("method"), changes, checkpoints)


def read_evaluation(path) -> dict:
    """One results/evaluate/<model>.json, checked to have what learning_forgetting reads."""
    evaluation = read_json_object(Path(path))
    sets = evaluation.get("sets")
    if not isinstance(evaluation.get("model"), str) or not isinstance(sets, dict):
        raise FtcompareError(f"{path}: not an evaluate result (needs `model` and `sets`)")
    checkpoint_sets = [entry.get("sets") for entry in evaluation.get("checkpoints") or []]
    for scored in [sets, *checkpoint_sets]:
        if not isinstance(scored, dict):
            raise FtcompareError(f"{path}: a checkpoint without `sets`")
        for name, entry in scored.items():
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise FtcompareError(f"{path}: evaluation set {name!r} has no role (target or source)")
    return evaluation


def learning_by_run(evaluations: list[dict]) -> dict[str, LearningForgetting]:
    """{run: its learning and forgetting} from the evaluate results of the base model and the runs."""
    by_model = {evaluation["model"]: evaluation for evaluation in evaluations}
    base = by_model.get(BASE_MODEL)
    if base is None:
        if evaluations:
            raise FtcompareError("evaluate results without the base model's: learning and forgetting need it")
        return {}
    return {model: learning_forgetting(base, e) for model, e in by_model.items() if model != BASE_MODEL}
