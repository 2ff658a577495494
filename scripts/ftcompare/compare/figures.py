"""The comparison's figures, from summary.json's content: held-out loss against learning rate per arm
(the U-shaped curves of Schulman et al. 2025, "LoRA Without Regret"), expected best held-out loss against
the number of trials (Dodge et al. 2019), and held-out loss against training FLOPs (a compute-matched
reading). Each is saved as PDF, SVG and PNG (ftcompare.report.figure_style.save_figure)."""

from pathlib import Path

import matplotlib.pyplot as plt

from ftcompare.compare.measures import arm_name
from ftcompare.report.figure_style import FIGURE_WIDTH_IN, figure_style, run_colors, save_figure

FIGURE_NAMES = ("loss_vs_learning_rate", "expected_best", "loss_vs_flops")
_HEIGHT_IN = 3.6


def write_figures(summary: dict, folder: Path) -> list[Path]:
    """The three figures in `folder` (which exists), as <name>.pdf, .svg and .png."""
    written = []
    with figure_style():
        colors = run_colors(list(summary["arms"]))
        for name, draw in (
            ("loss_vs_learning_rate", loss_vs_learning_rate),
            ("expected_best", expected_best_figure),
            ("loss_vs_flops", loss_vs_flops),
        ):
            files = save_figure(draw(summary, colors), folder, name)
            written += [files.pdf, files.svg, files.png]
    return written


def loss_vs_learning_rate(summary: dict, colors: dict):
    """Mean held-out loss over seeds per learning rate (log axis), its interval as error bars, each seed as
    a dot, and the arm's best rate ringed."""
    figure, axes = plt.subplots(figsize=(FIGURE_WIDTH_IN, _HEIGHT_IN))
    level = f"{summary['confidence'] * 100:g}%"
    plotted = False
    for name, arm in summary["arms"].items():
        points = [entry for entry in arm["learning_rates"] if entry["eval_loss"]["mean"] is not None]
        if not points:
            continue
        plotted = True
        color = colors[name]
        rates = [entry["learning_rate"] for entry in points]
        means = [entry["eval_loss"]["mean"] for entry in points]
        lower = [_below(entry["eval_loss"]) for entry in points]
        upper = [_above(entry["eval_loss"]) for entry in points]
        axes.errorbar(
            rates,
            means,
            yerr=[lower, upper],
            color=color,
            marker="o",
            markersize=4,
            capsize=3,
            label=arm_name(name, arm["method"]),
        )
        for entry in points:
            seeds = entry["eval_loss"]["values"]
            if len(seeds) > 1:
                axes.scatter([entry["learning_rate"]] * len(seeds), seeds, color=color, s=8, alpha=0.35, zorder=1)
        best = next(entry for entry in points if entry["learning_rate"] == arm["best_learning_rate"])
        axes.scatter(
            [best["learning_rate"]],
            [best["eval_loss"]["mean"]],
            s=110,
            facecolors="none",
            edgecolors=color,
            linewidths=1.4,
            zorder=3,
        )
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("held-out loss (nats per token)")
    axes.set_title(f"Held-out loss against learning rate (mean over seeds, {level} interval; ringed: best)")
    _finish(axes, plotted, "no run has a held-out loss")
    return figure


def expected_best_figure(summary: dict, colors: dict):
    """Expected best held-out loss of n trials drawn from each arm's runs (Dodge et al. 2019)."""
    figure, axes = plt.subplots(figsize=(FIGURE_WIDTH_IN, _HEIGHT_IN))
    plotted = False
    for name, arm in summary["arms"].items():
        curve = arm["expected_best"]
        if not curve:
            continue
        plotted = True
        axes.plot(
            [p["trials"] for p in curve],
            [p["eval_loss"] for p in curve],
            marker="o",
            markersize=3,
            color=colors[name],
            label=arm_name(name, arm["method"]),
        )
    axes.set_xlabel("trials (runs drawn from the arm's learning rates and seeds)")
    axes.set_ylabel("expected best held-out loss (nats per token)")
    axes.set_title("Expected best held-out loss against the number of trials (Dodge et al. 2019)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    _finish(axes, plotted, "no run has a held-out loss")
    return figure


def loss_vs_flops(summary: dict, colors: dict):
    """Each run's held-out loss against the model FLOPs it trained with; each arm's best run ringed."""
    figure, axes = plt.subplots(figsize=(FIGURE_WIDTH_IN, _HEIGHT_IN))
    best_runs = {arm["best_run"] for arm in summary["arms"].values()}
    plotted = False
    for name, arm in summary["arms"].items():
        runs = [r for r in summary["runs"] if r["arm"] == name and r["eval_loss"] is not None and r["flops"]]
        if not runs:
            continue
        plotted = True
        axes.scatter(
            [r["flops"] for r in runs],
            [r["eval_loss"] for r in runs],
            color=colors[name],
            s=16,
            label=arm_name(name, arm["method"]),
        )
        best = [r for r in runs if r["run"] in best_runs]
        axes.scatter(
            [r["flops"] for r in best],
            [r["eval_loss"] for r in best],
            s=110,
            facecolors="none",
            edgecolors=colors[name],
            linewidths=1.4,
        )
    axes.set_xscale("log")
    axes.set_xlabel("training compute (model FLOPs, log scale)")
    axes.set_ylabel("held-out loss (nats per token)")
    axes.set_title("Held-out loss against training compute (each run; ringed: each arm's best)")
    _finish(axes, plotted, "no run has both a held-out loss and its FLOPs")
    return figure


def _below(stat: dict) -> float:
    return stat["mean"] - stat["ci_low"] if stat["ci_low"] is not None else 0.0


def _above(stat: dict) -> float:
    return stat["ci_high"] - stat["mean"] if stat["ci_high"] is not None else 0.0


def _finish(axes, plotted: bool, empty: str) -> None:
    if plotted:
        axes.legend(title="arm")
    else:
        axes.text(0.5, 0.5, empty, transform=axes.transAxes, ha="center", va="center")
        axes.set_xscale("linear")
