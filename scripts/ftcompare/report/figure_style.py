"""The one look every figure shares, and saving a figure as PDF, SVG and PNG byte-for-byte
reproducibly (no dates, fixed SVG ids)."""

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import seaborn as sns  # noqa: E402

# matplotlib's PDF font subsetting logs every table it prunes at INFO: hundreds of lines per report.
logging.getLogger("fontTools").setLevel(logging.WARNING)

FIGURE_WIDTH_IN = 6.4
PNG_DPI = 200
BASE_MODEL_COLOR = "#555555"
PHASE_COLORS = {"load": "#e6e6e6", "train": "#dbe9f6", "eval": "#e2f0d9", "save": "#fde3c8", "generate": "#efe0f3"}
OTHER_PHASE_COLOR = "#f2f2f2"
SAVE_METADATA = {
    "pdf": {"Creator": "ftcompare", "Producer": "ftcompare", "CreationDate": None, "ModDate": None},
    "svg": {"Creator": "ftcompare", "Date": None},
    "png": {"Software": "ftcompare"},
}


@dataclass(frozen=True)
class FigureFiles:
    pdf: Path
    svg: Path
    png: Path


def style_params() -> dict:
    params = {}
    params.update(sns.axes_style("whitegrid"))
    params.update(sns.plotting_context("paper"))
    params.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same glyphs everywhere
            "font.size": 8.5,
            "axes.titlesize": 9,
            "axes.labelsize": 8.5,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
            "legend.fontsize": 7.5,
            "legend.title_fontsize": 8,
            "axes.prop_cycle": matplotlib.cycler(color=sns.color_palette("colorblind")),
            "lines.linewidth": 1.4,
            "figure.dpi": 100,
            "savefig.dpi": PNG_DPI,
            "savefig.bbox": "tight",
            "savefig.pad_inches": 0.05,
            "pdf.fonttype": 42,  # TrueType in the PDF: text stays text for journals
            "svg.fonttype": "path",  # SVG text as outlines: renders the same without the font
            "svg.hashsalt": "ftcompare",  # fixed element ids: the same figure gives the same file
        }
    )
    return params


@contextlib.contextmanager
def figure_style():
    """Every figure is drawn and saved inside this."""
    with matplotlib.rc_context(style_params()):
        yield


def run_colors(names: list[str]) -> dict[str, tuple]:
    palette = sns.color_palette("colorblind", max(len(names), 1))
    return {name: palette[index % len(palette)] for index, name in enumerate(names)}


def save_figure(figure, directory: Path, name: str) -> FigureFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = FigureFiles(pdf=directory / f"{name}.pdf", svg=directory / f"{name}.svg", png=directory / f"{name}.png")
    with figure_style():
        for fmt in ("pdf", "svg", "png"):
            figure.savefig(getattr(files, fmt), format=fmt, metadata=SAVE_METADATA[fmt])
    plt.close(figure)
    return files
