"""A synthetic learning-rate sweep of 50 runs (LoRA, QLoRA, full fine-tuning; several rates and seeds) as
the workflow leaves it for the report: each run's metrics.json and log history, the generations of the
base model and each arm's best run, and the compare rule's results/compare/summary.json, figures and tables
in the format of the lead's interface (results/compare/summary.json: stats over seeds with scipy's t
interval, Welch's test, expected best of n trials after Dodge et al. 2019).

The numbers are made up but shaped like a sweep: each arm's held-out loss is a parabola in log learning
rate around its own optimum, plus seed noise. `summary_for` computes the summary from the runs with
scipy, independently of the report, which only formats it.
"""

import csv
import functools
import json
import math
import random
import shutil
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import scipy.stats

from conftest import REPO
from ftcompare.atomic import write_json
from ftcompare.config import config_hash
from ftcompare.report.build import ReportOutputs, build_report
from ftcompare.report.figure_style import figure_style, save_figure
from ftcompare.report.inputs import ReportInputPaths, load_report_inputs
from helpers.report import FIXTURES, cpu_config, scratch_dir

CONFIDENCE = 0.95
# arm: (method, learning rates, seeds, optimal log10 rate, loss at the optimum, curvature)
SWEEP_ARMS = {
    "full": ("full", [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4], [1, 2, 3], -4.6, 3.05, 0.30),
    "lora": ("lora", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], [1, 2, 3], -2.6, 3.12, 0.25),
    "qlora": ("qlora", [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2], [1, 2], -2.0, 3.18, 0.25),
}
SWEEP_RUN_COUNT = 50
STAT_KEYS = [
    "eval_loss",
    "final_train_loss",
    "mean_train_loss",
    "train_runtime_s",
    "train_samples_per_s",
    "train_tokens_per_s",
    "peak_memory_mb",
    "energy_j",
    "tokens_seen",
    "flops",
]
TRAINABLE = {"full": 1_335_040, "lora": 16_384, "qlora": 16_384}


def sweep_runs() -> list[dict]:
    """The run table of the sweep plus each run's figures, sorted by run name (as summary.json's `runs`)."""
    runs = []
    for arm, (method, rates, seeds, best_log_rate, best_loss, curvature) in SWEEP_ARMS.items():
        for rate in rates:
            for seed in seeds:
                name = f"{arm}-lr{rate:.0e}-s{seed}".replace("e-0", "e-")
                noise = random.Random(name)
                eval_loss = best_loss + curvature * (math.log10(rate) - best_log_rate) ** 2 + noise.gauss(0, 0.015)
                runtime = {"full": 61.0, "lora": 38.0, "qlora": 52.0}[arm] * (1 + noise.uniform(-0.05, 0.05))
                tokens = 1_245_184
                runs.append(
                    {
                        "run": name,
                        "method": method,
                        "arm": arm,
                        "learning_rate": rate,
                        "seed": seed,
                        "grid": {},
                        "from_sweep": True,
                        "eval_loss": eval_loss,
                        "final_train_loss": eval_loss - 0.09 + noise.gauss(0, 0.01),
                        "mean_train_loss": eval_loss + 0.12 + noise.gauss(0, 0.01),
                        "train_runtime_s": runtime,
                        "train_samples_per_s": 990.0 / runtime,
                        "train_tokens_per_s": tokens / runtime,
                        "peak_memory_mb": {"full": 1480.0, "lora": 905.0, "qlora": 760.0}[arm] + noise.uniform(0, 20),
                        "energy_j": None if arm == "qlora" else 21.5 * runtime,
                        "tokens_seen": tokens,
                        "flops": 6.0 * 1_335_040 * tokens * (1.0 if arm == "full" else 0.68),
                    }
                )
    assert len(runs) == SWEEP_RUN_COUNT
    return sorted(runs, key=lambda run: run["run"])


def stat(values: list) -> dict:
    values = [v for v in values if v is not None]
    n = len(values)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "std": None, "values": []}
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": n, "std": None, "values": values}
    std = statistics.stdev(values)
    if std == 0:  # scipy's interval is NaN for a zero scale
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": n, "std": 0.0, "values": values}
    low, high = scipy.stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n))
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high), "n": n, "std": std, "values": values}


def expected_best(losses: list[float]) -> list[dict]:
    """Expected minimum of n draws with replacement from `losses` (Dodge et al. 2019), n = 1..len."""
    ordered, total = sorted(losses), len(losses)
    points = []
    for trials in range(1, total + 1):
        expected = sum(
            value * (((total - i) / total) ** trials - ((total - i - 1) / total) ** trials)
            for i, value in enumerate(ordered)
        )
        points.append({"trials": trials, "eval_loss": expected})
    return points


def arm_config(arm: str, method: str, rate: float) -> dict:
    config = {
        "training.learning_rate": rate,
        "training.per_device_train_batch_size": 4,
        "training.gradient_accumulation_steps": 1,
        "training.num_train_epochs": 1,
        "training.optim": "adamw_torch",
        "training.max_grad_norm": 0.3,
        "training.bf16": False,
    }
    if method in ("lora", "qlora"):
        config |= {"lora.r": 8, "lora.lora_alpha": 8, "lora.target_modules": ["q_proj", "v_proj"]}
    if method == "qlora":
        config |= {"quantization.load_in_4bit": True, "quantization.bnb_4bit_quant_type": "nf4"}
    return config


def summary_for(runs: list[dict], reference: str | None = "full", sweep: bool = True) -> dict:
    """summary.json of the interface, computed from `runs` with scipy."""
    arms = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        arm_runs = [run for run in runs if run["arm"] == arm]
        rates = sorted({run["learning_rate"] for run in arm_runs})
        curve = [
            {"learning_rate": rate, "eval_loss": stat([r["eval_loss"] for r in arm_runs if r["learning_rate"] == rate])}
            for rate in rates
        ]
        best = min(curve, key=lambda point: point["eval_loss"]["mean"])["learning_rate"]
        at_best = [run for run in arm_runs if run["learning_rate"] == best]
        edge = None
        if len(rates) > 1 and best == rates[0]:
            edge = "lowest"
        elif len(rates) > 1 and best == rates[-1]:
            edge = "highest"
        best_run = min(arm_runs, key=lambda run: run["eval_loss"])
        arms[arm] = {
            "method": arm_runs[0]["method"],
            "grid": {},
            "learning_rates": curve,
            "best_learning_rate": best,
            "best_on_edge": edge,
            "grid_step": (rates[-1] / rates[0]) ** (1 / (len(rates) - 1)) if len(rates) > 1 else None,
            "best_run": best_run["run"],
            "at_best": {key: stat([run[key] for run in at_best]) for key in STAT_KEYS},
            "expected_best": expected_best([run["eval_loss"] for run in arm_runs]),
            "config": arm_config(arm, arm_runs[0]["method"], best_run["learning_rate"]),
        }
    comparisons = []
    if reference in arms:
        for arm, entry in arms.items():
            if arm != reference:
                comparisons += [_comparison(arm, entry, reference, arms[reference], key) for key in STAT_KEYS]
    keys = list(dict.fromkeys(key for entry in arms.values() for key in entry["config"]))
    fairness = []
    for key in keys:
        values = {arm: entry["config"].get(key) for arm, entry in arms.items() if key in entry["config"]}
        differs = len(values) < len(arms) or len({json.dumps(v) for v in values.values()}) > 1
        fairness.append({"key": key, "values": values, "differs": differs})
    single_seed = all(point["eval_loss"]["n"] <= 1 for entry in arms.values() for point in entry["learning_rates"])
    notes = []
    if single_seed:
        notes.append("One seed per learning rate: no intervals.")
    notes += [
        f"{arm}: the best rate {entry['best_learning_rate']:g} is the {entry['best_on_edge']} of the grid; "
        "extend the grid."
        for arm, entry in arms.items()
        if entry["best_on_edge"]
    ]
    return {
        "confidence": CONFIDENCE,
        "sweep": sweep,
        "single_seed": single_seed,
        "reference_arm": reference if reference in arms else None,
        "runs": runs,
        "arms": arms,
        "comparisons": comparisons,
        "fairness": fairness,
        "notes": notes,
    }


def _comparison(arm: str, entry: dict, reference: str, ref_entry: dict, metric: str) -> dict:
    """The arm against the reference on one measure, as the compare rule writes it (one per measure)."""
    a, b = entry["at_best"][metric]["values"], ref_entry["at_best"][metric]["values"]
    difference = {"mean": None, "ci_low": None, "ci_high": None}
    welch = {"t": None, "p": None, "df": None}
    if a and b:
        difference["mean"] = statistics.fmean(a) - statistics.fmean(b)
    if len(a) >= 2 and len(b) >= 2 and (statistics.stdev(a) > 0 or statistics.stdev(b) > 0):
        test = scipy.stats.ttest_ind(a, b, equal_var=False)
        interval = test.confidence_interval(CONFIDENCE)
        difference |= {"ci_low": float(interval.low), "ci_high": float(interval.high)}
        welch = {"t": float(test.statistic), "p": float(test.pvalue), "df": float(test.df)}
    steps = [step for step in (entry["grid_step"], ref_entry["grid_step"]) if step is not None]
    names = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}
    what = f"At their best learning rates, {names.get(arm, arm)}'s {metric.replace('_', ' ')}"
    if difference["mean"] is None:
        verdict = f"{what} cannot be compared with {names.get(reference, reference)}'s: not measured."
    else:
        higher = "higher" if difference["mean"] > 0 else "lower"
        interval = (
            f" (95% interval {difference['ci_low']:.3g} to {difference['ci_high']:.3g}, {len(a)} and {len(b)} seeds)."
            if difference["ci_low"] is not None
            else " (no interval)."
        )
        verdict = f"{what} is {abs(difference['mean']):.3g} {higher} than {names.get(reference, reference)}'s{interval}"
    return {
        "arm": arm,
        "reference": reference,
        "metric": metric,
        "difference": difference,
        "welch": welch,
        "n": [len(a), len(b)],
        "learning_rate_ratio": entry["best_learning_rate"] / ref_entry["best_learning_rate"],
        "ratio_resolution": max(steps) if len(steps) == 2 else None,
        "verdict": verdict,
    }


def write_compare_outputs(compare_dir: Path, summary: dict) -> None:
    """results/compare/: summary.json, the three figures (PDF, SVG, PNG) and the tables as CSV and LaTeX."""
    write_json(compare_dir / "summary.json", summary)
    figures = compare_dir / "figures"
    with figure_style():
        figure, axes = plt.subplots(figsize=(6.4, 3.2))
        for arm, entry in summary["arms"].items():
            rates = [p["learning_rate"] for p in entry["learning_rates"]]
            means = [p["eval_loss"]["mean"] for p in entry["learning_rates"]]
            axes.plot(rates, means, marker="o", label=arm)
        axes.set_xscale("log")
        axes.set_xlabel("Learning rate")
        axes.set_ylabel("Held-out loss [nats/token]")
        axes.legend()
    save_figure(figure, figures, "loss_vs_learning_rate")
    with figure_style():
        figure, axes = plt.subplots(figsize=(6.4, 3.0))
        for arm, entry in summary["arms"].items():
            points = entry["expected_best"]
            axes.plot([p["trials"] for p in points], [p["eval_loss"] for p in points], label=arm)
        axes.set_xlabel("Trials")
        axes.set_ylabel("Expected best held-out loss [nats/token]")
        axes.legend()
    save_figure(figure, figures, "expected_best")
    if any(run["flops"] is not None for run in summary["runs"]):  # else, as compare does, no figure
        with figure_style():
            figure, axes = plt.subplots(figsize=(6.4, 3.0))
            for arm in summary["arms"]:
                runs = [run for run in summary["runs"] if run["arm"] == arm and run["flops"] is not None]
                axes.scatter([run["flops"] for run in runs], [run["eval_loss"] for run in runs], label=arm, s=10)
            axes.set_xscale("log")
            axes.set_xlabel("Training compute [FLOP]")
            axes.set_ylabel("Held-out loss [nats/token]")
            axes.legend()
        save_figure(figure, figures, "loss_vs_flops")
    tables = compare_dir / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    for name in ["learning_rates", "at_best", "comparisons", "fairness", "expected_best"]:
        with (tables / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([name])
        (tables / f"{name}.tex").write_text(f"% {name}\n", encoding="utf-8")


def write_run_results(root: Path, runs: list[dict], best_runs: list[str]) -> None:
    """Each run's metrics.json and log_history.csv; the generations of the base model and the best runs;
    the data card, base model card and plan of the embedded CPU fixture."""
    source = FIXTURES / "embedded_cpu"
    for part in ["data", "models", "plan"]:
        shutil.copytree(source / part, root / part, dirs_exist_ok=True)
    for run in runs:
        folder = root / "runs" / run["run"]
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            "run": run["run"],
            "method": run["method"],
            "seed": run["seed"],
            "trainable_params": TRAINABLE[run["method"]],
            "total_params": 1_335_040,
            "train_steps": 248,
            "train_runtime_s": run["train_runtime_s"],
            "train_samples_per_s": run["train_samples_per_s"],
            "train_tokens_per_s": run["train_tokens_per_s"],
            "throughput_skipped_steps": 5,
            "final_train_loss": run["final_train_loss"],
            "mean_train_loss": run["mean_train_loss"],
            "eval_loss": run["eval_loss"],
            "eval_loss_before_training": 3.8911,
            "learning_rate": run["learning_rate"],
            "global_batch_size": 4,
            "device": "cpu",
            "peak_memory_mb": run["peak_memory_mb"],
            "peak_memory_source": "rss_mb",
            "energy_j": run["energy_j"],
            "energy_source": None if run["energy_j"] is None else "rapl",
        }
        write_json(folder / "metrics.json", metrics)
        with (folder / "log_history.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s"])
            for step in range(50, 251, 50):
                loss = run["final_train_loss"] + 0.6 * (250 - step) / 250
                writer.writerow([step, step / 248, round(loss, 4), run["learning_rate"], 1.0, step * 0.15])
    generations = root / "generations"
    generations.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "generations" / "base.jsonl", generations / "base.jsonl")
    answers = (source / "generations" / "lora.jsonl").read_text(encoding="utf-8").splitlines()
    for name in best_runs:
        lines = [json.dumps({**json.loads(line), "model": name}) for line in answers if line.strip()]
        (generations / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def report_paths(root: Path, runs: list[str], models: list[str], compare_dir: Path | None) -> ReportInputPaths:
    return ReportInputPaths(
        metrics=[root / "runs" / run / "metrics.json" for run in runs],
        log_history=[root / "runs" / run / "log_history.csv" for run in runs],
        train_telemetry=[root / "runs" / run / "telemetry.json" for run in runs],
        generations=[root / "generations" / f"{model}.jsonl" for model in models],
        data_card=root / "data" / "data_card.json",
        base_card=root / "models" / "base" / "ftcompare_model.json",
        plan=root / "plan" / "plan.json",
        template=REPO / "report" / "report.html.j2",
        style=REPO / "report" / "style.css",
        compare_summary=compare_dir / "summary.json" if compare_dir else None,
        compare_figures=compare_dir / "figures" if compare_dir else None,
    )


@functools.cache
def built_sweep_report() -> tuple[ReportOutputs, Path]:
    """The report of the 50-run sweep, built once per test session: (its outputs, the results folder)."""
    results = scratch_dir() / "results"
    runs = sweep_runs()
    summary = summary_for(runs)
    best_runs = [entry["best_run"] for entry in summary["arms"].values()]
    write_run_results(results, runs, best_runs)
    write_compare_outputs(results / "compare", summary)
    names = [run["run"] for run in runs]
    config = cpu_config()
    inputs = load_report_inputs(
        report_paths(results, names, ["base", *best_runs], results / "compare"),
        names,
        config,
        config_hash(config),
        config["report"]["reference"],
        "A learning-rate sweep of LoRA, QLoRA and full fine-tuning (50 runs)",
    )
    out = results / "report"
    return build_report(inputs, out / "report.html", out / "figures", out / "tables"), results
