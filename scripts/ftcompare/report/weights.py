"""The report's "What the weights changed" section: each run's results/analysis/{run}.json (rule
analyse_weights) as figures per decoder layer and module type, one line per run, and a summary table."""

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ftcompare.report.figure_style import FIGURE_WIDTH_IN, figure_style, run_colors
from ftcompare.report.figures import FigureSpec
from ftcompare.report.headline import method_name
from ftcompare.report.table import Cell, Column, Table
from ftcompare.strict_json import read_json_object

# Llama's order of the attention and MLP linears; other module types follow in the order they appear.
MODULE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PANEL_COLUMNS = 4
SOURCE = "Source: results/analysis/<run>.json (rule analyse_weights)."


@dataclass(frozen=True)
class WeightAnalysis:
    run: str
    method: str | None
    settings: dict  # k, epsilon, energy, modules as the analysis used them
    seconds: float | None
    device: str | None
    summary: dict
    modules: pd.DataFrame  # a row per weight matrix (ftcompare.weight_change.ModuleChange's fields)

    @property
    def label(self) -> str:
        method = method_name(self.method)
        return f"{self.run} ({method})" if method and method != self.run else self.run


def load_weight_analysis(path: Path) -> WeightAnalysis:
    document = read_json_object(Path(path))
    modules = pd.DataFrame(document.get("modules") or [])
    return WeightAnalysis(
        run=str(document.get("run") or Path(path).stem),
        method=document.get("method"),
        settings=document.get("settings") or {},
        seconds=document.get("seconds"),
        device=document.get("device"),
        summary=document.get("summary") or {},
        modules=modules,
    )


def weight_summary_table(analyses: list[WeightAnalysis]) -> Table:
    """Per run: the matrices analysed, their mean relative change, median rank at the energy share, intruders."""
    columns = [
        Column("run", "Run"),
        Column("method", "Method"),
        Column("modules", "Weight matrices", "count", decimals=0),
        Column("mean_relative_change", "Mean relative change", "ratio", significant=3),
        Column("median_rank90", "Median rank at energy share", "rank", decimals=1),
        Column("median_rank90_pct", "Median rank at energy share", "% of full rank", decimals=2),
        Column("total_intruders", "Intruder dimensions", "count", decimals=0),
        Column("modules_with_intruders", "Matrices with intruders", "count", decimals=0),
        Column("seconds", "Analysis time", "s", decimals=1),
    ]
    rows = []
    for analysis in analyses:
        summary = analysis.summary
        fraction = summary.get("median_rank90_fraction")
        rows.append(
            [
                Cell(analysis.run),
                Cell(method_name(analysis.method)),
                Cell(summary.get("modules")),
                Cell(summary.get("mean_relative_change")),
                Cell(summary.get("median_rank90")),
                Cell(100 * fraction if fraction is not None else None),
                Cell(summary.get("total_intruders")),
                Cell(summary.get("modules_with_intruders")),
                Cell(analysis.seconds),
            ]
        )
    settings = analyses[0].settings if analyses else {}
    notes = [
        "Relative change: the Frobenius norm of the change over the base weight's, averaged over the run's weight "
        "matrices (LoRA and QLoRA: the adapted ones, adapter merged; full: every attention and MLP linear). "
        f"Rank at energy share: the smallest rank holding {_percent(settings.get('energy'))} of the change's squared "
        "singular values (Biderman et al. 2024), the median over the matrices. Intruder dimensions: of each tuned "
        f"matrix's top {settings.get('k', '—')} left singular vectors, those whose |cosine| with every base singular "
        f"vector is below {settings.get('epsilon', '—')} (Shuttleworth et al. 2024), summed over the matrices. "
        + SOURCE
    ]
    return Table(columns=columns, rows=rows, notes=notes)


def weight_figures(
    analyses: list[WeightAnalysis], run_names: list[str] | None = None
) -> tuple[list[FigureSpec], list[str]]:
    """The section's figures, and a sentence for each left out saying why."""
    shown = [analysis for analysis in analyses if not analysis.modules.empty]
    if not shown:
        return [], ["No weight-change figures: no run's analysis holds a weight matrix."] if analyses else []
    settings = shown[0].settings
    energy, k, epsilon = settings.get("energy", 0.9), settings.get("k", 10), settings.get("epsilon", 0.5)
    with figure_style():
        colors = run_colors(run_names or [analysis.run for analysis in analyses])
        figures = [
            _per_layer_figure(
                shown,
                colors,
                "relative_change",
                "weight_relative_change",
                "Relative weight change per layer",
                "‖ΔW‖ / ‖W‖ (Frobenius)",
                "The Frobenius norm of each weight matrix's change over the base weight's, per decoder layer (x) and "
                "module type (panel), one line per run. LoRA and QLoRA: the adapted matrices, adapter merged; "
                "full: every attention and MLP linear. " + SOURCE,
            ),
            _per_layer_figure(
                shown,
                colors,
                "rank90",
                "weight_rank90",
                f"Rank holding {_percent(energy)} of the change's energy per layer",
                f"rank at {_percent(energy)} energy",
                f"The smallest rank whose largest singular values hold {_percent(energy)} of the squared singular "
                "values of each matrix's change, per decoder layer and module type, one line per run; after Biderman "
                'et al., "LoRA Learns Less and Forgets Less" (TMLR 2024), which finds a full fine-tune\'s change '
                "needs 10-100 times the ranks LoRA uses. A LoRA change cannot exceed the adapter's rank r. " + SOURCE,
            ),
            _per_layer_figure(
                shown,
                colors,
                "intruders",
                "weight_intruders",
                "Intruder dimensions per layer",
                "intruder dimensions",
                f"How many of each tuned matrix's top {k} left singular vectors have an absolute cosine similarity "
                f"below {epsilon} with every singular vector of the base matrix: intruder dimensions, after "
                'Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (2024), who find them '
                "in low-rank LoRA, with forgetting, and hardly in full fine-tuning. Per decoder layer and module "
                "type, one line per run. " + SOURCE,
            ),
            _spectrum_figure(shown, colors, energy),
        ]
    return figures, []


def _module_types(analyses: list[WeightAnalysis]) -> list[str]:
    present = list(dict.fromkeys(t for a in analyses for t in a.modules["module_type"]))
    return [t for t in MODULE_ORDER if t in present] + [t for t in present if t not in MODULE_ORDER]


def _panels(count: int, height_per_row: float = 1.7):
    columns = min(PANEL_COLUMNS, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(FIGURE_WIDTH_IN, 0.7 + height_per_row * rows), squeeze=False, sharex=True, sharey=True
    )
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return figure, axes


def _per_layer_figure(analyses, colors, column: str, name: str, title: str, unit: str, caption: str) -> FigureSpec:
    module_types = _module_types(analyses)
    figure, axes = _panels(len(module_types))
    values = pd.concat([a.modules[column] for a in analyses])
    log_scale = column != "intruders" and bool((values > 0).all()) and values.max() > 20 * values.min()
    for axes_, module_type in zip(axes.flat, module_types):
        for analysis in analyses:
            points = analysis.modules[analysis.modules["module_type"] == module_type].dropna(subset=["layer"])
            points = points.sort_values("layer")
            if points.empty:
                continue
            axes_.plot(
                points["layer"].astype(int),
                points[column],
                color=colors[analysis.run],
                marker="o",
                markersize=2.5,
            )
        axes_.set_title(module_type)
    first = axes.flat[0]  # the panels share their axes
    if log_scale:
        first.set_yscale("log")
    if column == "intruders":
        first.set_ylim(-0.05 * max(1, values.max()), 1.05 * max(1, values.max()))
    if column in ("intruders", "rank90") and not log_scale:
        first.yaxis.set_major_locator(MaxNLocator(integer=True))
    first.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes_ in axes[-1]:
        axes_.set_xlabel("decoder layer")
    for row in axes:
        row[0].set_ylabel(unit)
    _legend(figure, analyses, colors)
    return FigureSpec(name, title, caption, figure)


def _spectrum_figure(analyses, colors, energy: float) -> FigureSpec:
    """The cumulative share of each change's energy held by its top i singular values, the median over layers."""
    module_types = _module_types(analyses)
    figure, axes = _panels(len(module_types))
    for axes_, module_type in zip(axes.flat, module_types):
        for analysis in analyses:
            rows = analysis.modules[analysis.modules["module_type"] == module_type]
            curves = [
                [sum(v * v for v in values[:i]) / total for i in range(1, len(values) + 1)]
                for values, total in zip(rows["change_singular_values"], rows["change_energy"])
                if total and len(values)
            ]
            if not curves:
                continue
            length = min(len(curve) for curve in curves)
            median = pd.DataFrame([curve[:length] for curve in curves]).median(axis=0)
            axes_.plot(range(1, length + 1), 100 * median, color=colors[analysis.run], marker="o", markersize=2)
        axes_.axhline(100 * energy, color="#555555", linestyle="--", linewidth=0.8)
        axes_.set_title(module_type)
        axes_.set_ylim(0, 102)
    for axes_ in axes[-1]:
        axes_.set_xlabel("top singular values")
    for row in axes:
        row[0].set_ylabel("share of energy [%]")
    _legend(figure, analyses, colors)
    caption = (
        "The share of each weight change's energy (its squared singular values) that its largest i singular values "
        "hold, against i (the 32 largest), the median over the decoder layers, per module type, one line per run; "
        f"dashed: {_percent(energy)}, the share the rank figure reads off. A LoRA change of rank r reaches 100% at "
        "i = r; a full fine-tune's rises slowly (Biderman et al. 2024). " + SOURCE
    )
    return FigureSpec("weight_change_spectrum", "Spectrum of the weight change", caption, figure)


def _legend(figure, analyses, colors) -> None:
    handles = [Line2D([], [], color=colors[a.run], marker="o", markersize=3, label=a.label) for a in analyses]
    columns = min(len(handles), 3)
    figure.legend(handles=handles, loc="upper center", ncol=columns, frameon=False, bbox_to_anchor=(0.5, 1.0))
    rows = -(-len(handles) // columns)
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.1 + 0.16 * rows) / figure.get_figheight()))


def _percent(share) -> str:
    return f"{100 * share:g}%" if isinstance(share, (int, float)) else "—"
