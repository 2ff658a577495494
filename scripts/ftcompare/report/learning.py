"""The report's learning and forgetting: a table of every model's loss on each evaluation set with each
run's learning or forgetting there, and the learning-forgetting figure (Biderman et al., "LoRA Learns Less
and Forgets Less", TMLR 2024: forgetting on x, learning on y, a point per run, the base model at the origin)."""

import matplotlib.pyplot as plt

from ftcompare.learning import BASE_MODEL, LearningForgetting, set_losses
from ftcompare.report.figure_style import BASE_MODEL_COLOR, FIGURE_WIDTH_IN, figure_style, run_colors
from ftcompare.report.figures import FigureSpec
from ftcompare.report.headline import method_name
from ftcompare.report.table import Cell, Column, Table

FIGURE_NAME = "learning_forgetting"
METHOD_MARKERS = {"lora": "o", "qlora": "s", "full": "^"}
OTHER_MARKER = "D"
CHANGE_NAMES = {"target": "learning", "source": "forgetting"}


def learning_table(evaluations: list[dict], learning: dict[str, LearningForgetting]) -> Table:
    """A row per model (the base first): its loss on each set, each run's learning (target sets) or
    forgetting (source sets) there, and their means."""
    by_model = {evaluation["model"]: evaluation for evaluation in evaluations}
    base = set_losses(by_model[BASE_MODEL])
    columns = [Column("model", "Model"), Column("method", "Method")]
    for name, (role, _) in base.items():
        change = CHANGE_NAMES[role]
        group = f"{name} ({role})"
        columns.append(Column(f"{name}_loss", f"{name}: loss", "nats/token", decimals=3, group=group, short="loss"))
        columns.append(
            Column(f"{name}_{change}", f"{name}: {change}", "nats/token", decimals=3, group=group, short=change)
        )
    columns += [
        Column(
            "mean_learning", "Learning, mean of target sets", "nats/token", decimals=3, group="Mean", short="learning"
        ),
        Column(
            "mean_forgetting",
            "Forgetting, mean of source sets",
            "nats/token",
            decimals=3,
            group="Mean",
            short="forgetting",
        ),
    ]
    rows = [_row(columns, BASE_MODEL, None, base, {name: 0.0 for name in base}, 0.0, 0.0)]
    for model, result in learning.items():
        checkpoints = {entry["step"]: entry for entry in by_model[model].get("checkpoints") or []}
        for step, at_step in result.checkpoints:
            rows.append(_result_row(columns, f"{model} @ step {step}", at_step, set_losses(checkpoints[step])))
        rows.append(_result_row(columns, model, result, set_losses(by_model[model])))
    notes = [
        "Loss: mean token cross-entropy in nats on each evaluation set, measured as training measures its held-out "
        "loss (results/evaluate/<model>.json). Perplexity is exp(loss).",
        "Learning = the base model's loss minus the run's, on target sets (the task's text: heldout is the data's "
        "own held-out split). Forgetting = the run's loss minus the base model's, on source sets (text the base "
        "model handled before fine-tuning). The base model is the zero of both; positive is more.",
    ]
    return Table(columns=columns, rows=rows, notes=notes)


def _result_row(columns, label: str, result: LearningForgetting, losses) -> list[Cell]:
    changes = {s.eval_set: s.change for s in result.sets}
    return _row(columns, label, result.method, losses, changes, result.mean_learning, result.mean_forgetting)


def _row(columns, model, method, losses, changes, mean_learning, mean_forgetting) -> list[Cell]:
    values = {"model": model, "method": method_name(method), "mean_learning": mean_learning}
    values["mean_forgetting"] = mean_forgetting
    for name, (role, loss) in losses.items():
        values[f"{name}_loss"] = loss
        values[f"{name}_{CHANGE_NAMES[role]}"] = changes.get(name)
    return [Cell(values.get(column.key)) for column in columns]


def learning_forgetting_figure(learning: dict[str, LearningForgetting]) -> tuple[FigureSpec | None, str]:
    """The figure, or None and a sentence saying why there is none."""
    points = {
        model: (result.mean_forgetting, result.mean_learning, result.method)
        for model, result in learning.items()
        if result.mean_forgetting is not None and result.mean_learning is not None
    }
    if not points:
        return None, (
            "No learning-forgetting figure: it needs a source set (eval_sets with role: source) and every run's "
            "loss on it."
        )
    with figure_style():
        figure, axes = plt.subplots(figsize=(FIGURE_WIDTH_IN * 0.75, 3.6))
        colors = run_colors(list(points))
        axes.axhline(0, color="#999999", linewidth=0.8, zorder=1)
        axes.axvline(0, color="#999999", linewidth=0.8, zorder=1)
        axes.scatter([0], [0], marker="*", s=140, color=BASE_MODEL_COLOR, zorder=3, label="base model")
        axes.annotate("base", (0, 0), textcoords="offset points", xytext=(6, -10), fontsize=7.5, color=BASE_MODEL_COLOR)
        methods_shown = {}
        for model, (x, y, method) in points.items():
            marker = METHOD_MARKERS.get(method, OTHER_MARKER)
            axes.scatter([x], [y], marker=marker, s=42, color=colors[model], edgecolor="black", linewidth=0.5, zorder=4)
            axes.annotate(model, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7.5)
            path = _checkpoint_path(learning[model])
            if path:
                # The run's way there: from the base model through its kept checkpoints.
                xs, ys = zip(*[(0.0, 0.0), *path, (x, y)])
                axes.plot(xs, ys, color=colors[model], linewidth=0.8, alpha=0.7, zorder=2)
                axes.scatter(xs[1:-1], ys[1:-1], marker=marker, s=14, color=colors[model], alpha=0.7, zorder=3)
            methods_shown.setdefault(method, marker)
        handles = [
            plt.Line2D([], [], linestyle="", marker="*", markersize=10, color=BASE_MODEL_COLOR, label="base model")
        ] + [
            plt.Line2D(
                [],
                [],
                linestyle="",
                marker=marker,
                markersize=6,
                color="#bbbbbb",
                markeredgecolor="black",
                label=method_name(method) or "other",
            )
            for method, marker in methods_shown.items()
        ]
        axes.legend(handles=handles, frameon=False, loc="best")
        axes.set_xlabel("Forgetting on the source sets [nats/token]")
        axes.set_ylabel("Learning on the target sets [nats/token]")
        axes.margins(0.2)
    if any(_checkpoint_path(result) for result in learning.values()):
        caption_checkpoints = (
            " Small markers joined by a line: the run's kept checkpoints (checkpoints.keep), from the base model "
            "to where the run ended."
        )
    else:
        caption_checkpoints = ""
    caption = (
        'Learning against forgetting, after Biderman et al., "LoRA Learns Less and Forgets Less" (TMLR 2024), in '
        "loss: one point per run, the base model at the origin. Up is more learned on the target sets (the mean "
        "over them of the base model's loss minus the run's); right is more forgotten on the source sets (the "
        "mean of the run's loss minus the base model's). Losses from results/evaluate/<model>.json."
    ) + caption_checkpoints
    return FigureSpec(FIGURE_NAME, "Learning and forgetting per run", caption, figure), ""


def _checkpoint_path(result: LearningForgetting) -> list[tuple[float, float]]:
    """(forgetting, learning) at each kept checkpoint that has both, oldest first."""
    return [
        (at_step.mean_forgetting, at_step.mean_learning)
        for _, at_step in result.checkpoints
        if at_step.mean_forgetting is not None and at_step.mean_learning is not None
    ]
