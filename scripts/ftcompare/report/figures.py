"""The report's figures, each with the caption the HTML prints under it (unit and source).

Drawing only: figure_style sets the look and saves the files.
"""

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from ftcompare.report import costs
from ftcompare.report.comparison import MANY_RUNS, folds_per_run_detail
from ftcompare.report.figure_style import (
    BASE_MODEL_COLOR,
    FIGURE_WIDTH_IN,
    OTHER_PHASE_COLOR,
    PHASE_COLORS,
    figure_style,
    run_colors,
)
from ftcompare.report.headline import method_name
from ftcompare.report.inputs import RunResult
from ftcompare.report.telemetry import Telemetry

MEMORY_SERIES = [  # (telemetry column, legend label, colour)
    ("vram_used_mb", "VRAM used, device-wide", "#1f4e79"),
    ("torch_reserved_mb", "torch reserved (allocator)", "#d55e00"),
    ("torch_allocated_mb", "torch allocated (allocator)", "#009e73"),
    ("process_vram_mb", "process VRAM", "#cc79a7"),
    ("rss_mb", "process RSS (host)", "#7f3c8d"),
]
DEVICE_LINESTYLES = ["-", "--", ":", "-."]


def _tick_label(value: float, _position) -> str:
    """Axis ticks with thousands grouped (12,000 rather than 12000)."""
    return f"{value:,.0f}" if abs(value) >= 1000 or value == int(value) else f"{value:g}"


THOUSANDS = FuncFormatter(_tick_label)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    caption: str
    figure: Figure


def report_figures(runs: list[RunResult], base_eval_loss: float | None) -> tuple[list[FigureSpec], list[str]]:
    """The figures there is data for, and a sentence for each one left out saying why."""
    with figure_style():
        colors = run_colors([run.name for run in runs])
        backends = ", ".join(sorted({run.telemetry.backend or "none" for run in runs}))
        candidates = [
            (
                training_loss_figure(runs, "step", base_eval_loss, colors),
                "No training-loss figure against step: no run logged a loss.",
            ),
            (
                training_loss_figure(runs, "elapsed_s", base_eval_loss, colors),
                "No training-loss figure against wall-clock time: no run logged its elapsed time.",
            ),
            (memory_over_time_figure(runs), "No memory-over-time figure: no run's telemetry has memory samples."),
            (
                utilisation_power_figure(runs),
                f"No utilisation or power figure: the telemetry of these runs (backend: {backends}) has neither.",
            ),
            (cost_figure_by_run(runs) if folds_per_run_detail(len(runs)) else cost_figure(runs, colors), ""),
        ]
    figures = [spec for spec, _ in candidates if spec is not None]
    missing = [why for spec, why in candidates if spec is None]
    return figures, missing


def training_loss_figure(runs, x: str, base_eval_loss, colors) -> FigureSpec | None:
    plotted = [run for run in runs if run.log_history[[x, "loss"]].dropna().shape[0]]
    if not plotted:
        return None
    figure, axes = plt.subplots(figsize=(FIGURE_WIDTH_IN, 3.0))
    by_method = folds_per_run_detail(len(plotted))  # many runs: a colour and a legend entry per method
    method_colors = run_colors(list(dict.fromkeys(str(run.method) for run in plotted)))
    for run in plotted:
        points = run.log_history[[x, "loss"]].dropna()
        axes.plot(
            points[x],
            points["loss"],
            color=method_colors[str(run.method)] if by_method else colors[run.name],
            label=(method_name(run.method) or str(run.method)) if by_method else _run_label(run),
            marker="o" if len(points) <= 40 and not by_method else None,
            markersize=2.5,
            linewidth=0.8 if by_method else None,
            alpha=0.6 if by_method else None,
        )
    if base_eval_loss is not None:
        axes.axhline(
            base_eval_loss,
            color=BASE_MODEL_COLOR,
            linestyle="--",
            linewidth=1,
            label="base model: eval loss before training",
        )
    if x == "step":
        axes.set_xlabel("Optimizer step")
        name, title, against = "training_loss_vs_step", "Training loss against step", "optimizer step"
    else:
        axes.set_xlabel("Wall-clock time since training started [s]")
        name, title, against = (
            "training_loss_vs_time",
            "Training loss against wall-clock time",
            "wall-clock seconds since training started",
        )
    axes.set_ylabel("Training loss [nats/token]")
    axes.xaxis.set_major_formatter(THOUSANDS)
    handles, labels = axes.get_legend_handles_labels()
    handles = list(dict(zip(labels, handles)).values())  # a method's runs share one entry
    columns = min(len(handles), 3)
    axes.legend(
        handles=_row_major(handles, columns),
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        ncol=columns,
        frameon=False,
        borderaxespad=0,
    )
    steps = sorted({int(s) for run in plotted for s in run.log_history["step"].diff().dropna() if s > 0})
    every = f" (logged every {steps[0]} steps)" if len(steps) == 1 else ""
    caption = (
        f"Training loss (mean token cross-entropy, nats per token) of each run{every} against "
        f"{against}. Dashed: the base model's eval loss on the held-out split before training. "
        f"Source: each run's log_history.csv."
    )
    if by_method:
        caption += f" With more than {MANY_RUNS} runs, a colour per method rather than per run."
    figure.tight_layout()
    return FigureSpec(name, title, caption, figure)


def memory_over_time_figure(runs: list[RunResult]) -> FigureSpec | None:
    shown = [run for run in runs if any(run.telemetry.has_series(c) for c, _, _ in MEMORY_SERIES)]
    if not shown:
        return None
    figure, axes_list = plt.subplots(len(shown), 1, figsize=(FIGURE_WIDTH_IN, 0.6 + 2.0 * len(shown)), squeeze=False)
    legend_lines: dict[str, Line2D] = {}
    phases: set[str] = set()
    for axes, run in zip(axes_list[:, 0], shown):
        phases |= _shade_phases(axes, run.telemetry)
        devices = _devices(run.telemetry)
        for column, label, color in MEMORY_SERIES:
            # RSS is the process's, not a device's: one legend entry whatever the devices.
            _plot_per_device(
                axes,
                run.telemetry,
                column,
                label,
                color,
                devices,
                1.2,
                legend_lines,
                per_device_legend=len(devices) > 1 and column != "rss_mb",
            )
        axes.set_title(_run_title(run), loc="left")
        axes.set_ylabel("Memory [MB]")
        _group_thousands(axes)
        axes.set_ylim(bottom=0)
        axes.set_xlim(left=0)
    axes_list[-1, 0].set_xlabel("Time since the job started [s]")
    legend_rows = _figure_legend(figure, legend_lines, phases)
    backends = ", ".join(sorted({run.telemetry.backend or "unknown" for run in shown}))
    caption = (
        "Memory over each training job, sampled by the telemetry (backend: " + backends + "). "
        "Device-wide VRAM used is what the vendor library reports for the whole device; torch "
        "allocated and reserved are this process's caching-allocator figures; on a CPU run the "
        "process's resident memory (RSS) is shown. Shading marks the job's phases. Unit: MB. "
        "Source: each run's telemetry.csv."
    )
    figure.tight_layout(rect=(0, 0, 1, _legend_top(figure, legend_rows)))
    return FigureSpec("memory_over_time", "Memory over time", caption, figure)


def _plot_per_device(
    axes,
    telemetry,
    column: str,
    label: str,
    color: str,
    devices: list,
    linewidth: float,
    legend_lines: dict,
    per_device_legend: bool,
) -> bool:
    """One line per device that sampled `column` (a line style per device); whether any was drawn."""
    drawn = False
    for index, device in enumerate(devices):
        series = _series(telemetry, column, device)
        if series is None:
            continue
        style = DEVICE_LINESTYLES[index % len(DEVICE_LINESTYLES)]
        axes.plot(series[0], series[1], color=color, linestyle=style, linewidth=linewidth)
        key = f"{label}, {device}" if per_device_legend else label
        legend_lines.setdefault(key, Line2D([], [], color=color, linestyle=style))
        drawn = True
    return drawn


def utilisation_power_figure(runs: list[RunResult]) -> FigureSpec | None:
    shown = [
        run
        for run in runs
        if run.telemetry.has_series("util_pct")
        or run.telemetry.has_series("mem_util_pct")
        or run.telemetry.has_series("power_w")
    ]
    if not shown:
        return None
    figure, axes_grid = plt.subplots(len(shown), 2, figsize=(FIGURE_WIDTH_IN, 0.6 + 1.9 * len(shown)), squeeze=False)
    legend_lines: dict[str, Line2D] = {}
    phases: set[str] = set()
    panels = [
        (
            0,
            [
                ("util_pct", "compute utilisation", "#1f4e79"),
                ("mem_util_pct", "memory-bandwidth utilisation", "#56b4e9"),
            ],
            "Utilisation [%]",
        ),
        (1, [("power_w", "board power", "#d55e00")], "Power [W]"),
    ]
    for row, run in enumerate(shown):
        devices = _devices(run.telemetry)
        for col, series_list, ylabel in panels:
            axes = axes_grid[row, col]
            phases |= _shade_phases(axes, run.telemetry)
            drawn = False
            for column, label, color in series_list:
                drawn |= _plot_per_device(
                    axes,
                    run.telemetry,
                    column,
                    label,
                    color,
                    devices,
                    1.0,
                    legend_lines,
                    per_device_legend=len(devices) > 1,
                )
            if not drawn:
                axes.text(
                    0.5,
                    0.5,
                    f"not reported by {run.telemetry.backend or 'the backend'}",
                    transform=axes.transAxes,
                    ha="center",
                    va="center",
                    color="#777777",
                )
            axes.set_ylabel(ylabel)
            _group_thousands(axes)
            axes.set_ylim(bottom=0, top=105 if col == 0 else None)
            axes.set_xlim(left=0)
            axes.set_title(_run_title(run) if col == 0 else "", loc="left")
        axes_grid[row, 0].set_xlabel("Time since the job started [s]" if row == len(shown) - 1 else "")
        axes_grid[row, 1].set_xlabel("Time since the job started [s]" if row == len(shown) - 1 else "")
    legend_rows = _figure_legend(figure, legend_lines, phases)
    caption = (
        "Device utilisation (compute and memory bandwidth, %) and board power (W) over each "
        "training job, as the telemetry backend samples them; shading marks the job's phases. "
        "Source: each run's telemetry.csv."
    )
    figure.tight_layout(rect=(0, 0, 1, _legend_top(figure, legend_rows)))
    return FigureSpec("utilisation_power_over_time", "Utilisation and power over time", caption, figure)


def cost_figure(runs: list[RunResult], colors) -> FigureSpec:
    figure, (time_axes, memory_axes, energy_axes) = plt.subplots(1, 3, figsize=(FIGURE_WIDTH_IN, 2.6))
    names = [run.name for run in runs]
    positions = list(range(len(runs)))
    run_palette = [colors[name] for name in names]

    runtimes = [run.metrics.train_runtime_s for run in runs]
    _bars(time_axes, positions, runtimes, run_palette)
    time_axes.set_ylabel("Training runtime [s]")

    device = [costs.device_memory_peak(run) for run in runs]
    allocator = [costs.allocator_peak(run) for run in runs]
    kinds = sorted({m.kind for m in device if m})
    width = 0.4 if any(allocator) else 0.8
    offset = width / 2 if any(allocator) else 0
    _bars(
        memory_axes, [p - offset for p in positions], [m.value if m else None for m in device], run_palette, width=width
    )
    if any(allocator):
        _bars(
            memory_axes,
            [p + offset for p in positions],
            [m.value if m else None for m in allocator],
            run_palette,
            width=width,
            hatch="////",
            alpha=0.55,
        )
        memory_axes.legend(
            handles=[
                Patch(facecolor="#bbbbbb", label=_device_wide_label(kinds)),
                Patch(facecolor="#dddddd", hatch="////", label="torch max allocated"),
            ],
            frameon=False,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
        )
    memory_axes.set_ylabel("Peak memory [MB]")

    energy = [costs.energy(run) for run in runs]
    if any(energy):
        _bars(energy_axes, positions, [e.value / 1000.0 if e else None for e in energy], run_palette)
    else:
        energy_axes.text(
            0.5, 0.5, "not measured", transform=energy_axes.transAxes, ha="center", va="center", color="#777777"
        )
    energy_axes.set_ylabel("Energy [kJ]")

    for axes in (time_axes, memory_axes, energy_axes):
        axes.yaxis.set_major_formatter(THOUSANDS)
        axes.set_xticks(
            positions, names, rotation=30 if len(runs) > 3 else 0, ha="right" if len(runs) > 3 else "center"
        )
        axes.set_xlim(-0.6, len(runs) - 0.4)
        axes.grid(axis="x", visible=False)
    caption = (
        "Cost per run: training runtime (s, from metrics.json), peak memory (MB; solid: "
        + _device_wide_label(kinds)
        + "; hatched: torch's max allocated) and energy "
        "(kJ, from the energy counter or integrated power; see the table for each source). "
        "A missing bar means the figure was not measured."
    )
    figure.tight_layout()
    return FigureSpec("cost_per_run", "Runtime, peak memory and energy per run", caption, figure)


def cost_figure_by_run(runs: list[RunResult]) -> FigureSpec:
    """The cost per run when there are too many runs for labelled bars side by side: a row per run, the
    three figures side by side, a colour per method."""
    methods = list(dict.fromkeys(str(run.method) for run in runs))
    method_colors = run_colors(methods)
    figure, panels = plt.subplots(1, 3, figsize=(FIGURE_WIDTH_IN, 1.0 + 0.13 * len(runs)), sharey=True)
    device = [costs.device_memory_peak(run) for run in runs]
    energy = [costs.energy(run) for run in runs]
    kinds = sorted({m.kind for m in device if m})
    columns = [
        ([run.metrics.train_runtime_s for run in runs], "Training runtime [s]"),
        ([m.value if m else None for m in device], "Peak memory [MB]"),
        ([e.value / 1000.0 if e else None for e in energy], "Energy [kJ]"),
    ]
    for axes, (values, label) in zip(panels, columns):
        for position, (run, value) in enumerate(zip(runs, values)):
            if value is None:
                axes.text(0, position, " n/a", va="center", fontsize=6, color="#777777")
            else:
                axes.barh(position, value, height=0.75, color=method_colors[str(run.method)])
        axes.set_xlabel(label)
        axes.xaxis.set_major_formatter(THOUSANDS)
        axes.grid(axis="y", visible=False)
    panels[0].set_yticks(range(len(runs)), [run.name for run in runs], fontsize=6)
    panels[0].set_ylim(len(runs) - 0.4, -0.6)  # the first run on top
    figure.legend(
        handles=[Patch(facecolor=method_colors[m], label=method_name(m) or m) for m in methods],
        loc="upper center",
        ncol=len(methods),
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    figure.tight_layout(rect=(0, 0, 1, _legend_top(figure, 1)))
    caption = (
        "Cost per run, a row per run coloured by method: training runtime (s, from metrics.json), peak memory "
        "(MB, " + _device_wide_label(kinds) + ") and energy (kJ, from the energy counter or integrated power; "
        "see the table for each source). n/a: not measured. The comparison section gives each method's mean "
        "and interval at its best learning rate."
    )
    return FigureSpec("cost_per_run", "Runtime, peak memory and energy per run", caption, figure)


def _device_wide_label(kinds: list[str]) -> str:
    return "device-wide: " + " / ".join(kinds) if kinds else "device-wide"


def _bars(axes, positions, values, colors, width=0.8, hatch=None, alpha=1.0):
    top = max((v for v in values if v is not None), default=0)
    for position, value, color in zip(positions, values, colors):
        if value is None:
            axes.text(position, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#777777")
            continue
        axes.bar(
            position,
            value,
            width=width,
            color=color,
            hatch=hatch,
            alpha=alpha,
            edgecolor="white" if hatch is None else color,
            linewidth=0.5,
        )
        axes.text(position, value + 0.01 * top, _short(value), ha="center", va="bottom", fontsize=6.5)
    axes.set_ylim(0, top * 1.15 if top else 1)


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _group_thousands(axes) -> None:
    axes.xaxis.set_major_formatter(THOUSANDS)
    axes.yaxis.set_major_formatter(THOUSANDS)


def _shade_phases(axes, telemetry: Telemetry) -> set[str]:
    seen = set()
    for span in telemetry.phase_spans():
        if span.end_s > span.start_s:
            axes.axvspan(
                span.start_s, span.end_s, color=PHASE_COLORS.get(span.phase, OTHER_PHASE_COLOR), linewidth=0, zorder=0
            )
            seen.add(span.phase)
    return seen


def _figure_legend(figure, lines: dict[str, Line2D], phases: set[str]) -> int:
    """A legend across the top of the figure; returns how many rows it takes."""
    handles = [
        Line2D(line.get_xdata(), line.get_ydata(), color=line.get_color(), linestyle=line.get_linestyle(), label=label)
        for label, line in lines.items()
    ]
    order = list(PHASE_COLORS) + sorted(phases - set(PHASE_COLORS))
    handles += [
        Patch(facecolor=PHASE_COLORS.get(p, OTHER_PHASE_COLOR), label=f"phase: {p}") for p in order if p in phases
    ]
    columns = min(len(handles), 3)
    figure.legend(
        handles=_row_major(handles, columns), loc="upper center", ncol=columns, frameon=False, bbox_to_anchor=(0.5, 1.0)
    )
    return -(-len(handles) // columns)


def _row_major(handles: list, columns: int) -> list:
    """Legend entries reordered so that matplotlib, which fills a legend column by column, shows
    them row by row in their given order."""
    rows = -(-len(handles) // columns)
    grid = [handles[row * columns : (row + 1) * columns] for row in range(rows)]
    return [grid[row][col] for col in range(columns) for row in range(rows) if col < len(grid[row])]


def _legend_top(figure, legend_rows: int) -> float:
    """The top of the subplots' area, leaving room for the figure legend above it."""
    return 1 - (0.1 + 0.16 * legend_rows) / figure.get_figheight()


def _devices(telemetry: Telemetry) -> list:
    devices = list(dict.fromkeys(telemetry.samples["device"].dropna()))
    return devices or [None]


def _series(telemetry: Telemetry, column: str, device):
    samples = telemetry.samples
    if device is not None and column != "rss_mb":
        samples = samples[samples["device"] == device]
    points = samples[["time_s", column]].dropna()
    if column == "rss_mb":  # one process figure, repeated on every device's row
        points = points.groupby("time_s", as_index=False)[column].max()
    if points.empty:
        return None
    points = points.sort_values("time_s")
    return points["time_s"].to_numpy(), points[column].to_numpy()


def _run_label(run: RunResult) -> str:
    method = method_name(run.method)
    return f"{run.name} ({method})" if method and method != run.name else run.name


def _run_title(run: RunResult) -> str:
    devices = ", ".join(run.telemetry.device_names) or run.metrics.device_name or run.metrics.device or ""
    return _run_label(run) + (f" — {devices}" if devices else "")
