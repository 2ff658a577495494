"""The comparison across runs (ftcompare.compare): summary.json from fake metrics.json files, the best
rate and its edge flag, notes for one seed, verdicts in both directions and for an interval that includes
zero, the fairness rows, the tables (parsed back from CSV), the figures and the rule's entry script."""

import csv
import importlib.util
import math
from types import SimpleNamespace

import pytest

from conftest import REPO
from ftcompare.compare.outputs import read_run_metrics, write_comparison
from ftcompare.compare.summary import build_summary, edge_of_grid, grid_step
from ftcompare.config import ConfigError, run_settings, validate_config
from ftcompare.metrics import RunMetrics, write_metrics
from ftcompare.strict_json import read_json_object

# Held-out losses by (method, learning rate): three seeds each, spread ±0.01 around the mean.
# LoRA is best in the middle of its grid (3e-4, mean 1.21); full fine-tuning at the lowest rate (1e-5, 1.11).
LOSSES = {
    ("lora", 1e-4): [1.30, 1.31, 1.32],
    ("lora", 3e-4): [1.20, 1.21, 1.22],
    ("lora", 1e-3): [1.40, 1.41, 1.42],
    ("full", 1e-5): [1.10, 1.11, 1.12],
    ("full", 3e-5): [1.15, 1.16, 1.17],
    ("full", 1e-4): [1.30, 1.31, 1.32],
}
SEEDS = [41, 42, 43]


def run_name(method, rate, seed):
    return f"{method}-lr{rate:g}-s{seed}"


def run_table(losses=LOSSES, seeds=SEEDS):
    rows = []
    for (method, rate), values in losses.items():
        for seed, _ in zip(seeds, values):
            rows.append(
                {
                    "run": run_name(method, rate, seed),
                    "method": method,
                    "arm": method,
                    "learning_rate": rate,
                    "seed": seed,
                    "grid": {},
                    "from_sweep": True,
                }
            )
    return sorted(rows, key=lambda row: row["run"])


def fake_metrics(losses=LOSSES, seeds=SEEDS):
    metrics = {}
    for (method, rate), values in losses.items():
        for index, (seed, loss) in enumerate(zip(seeds, values)):
            name = run_name(method, rate, seed)
            metrics[name] = RunMetrics(
                run=name,
                method=method,
                eval_loss=loss,
                final_train_loss=loss + 0.1,
                mean_train_loss=loss + 0.3,
                train_runtime_s=(100.0 if method == "lora" else 400.0) + index,
                train_samples_per_s=2.0 if method == "lora" else 0.5,
                train_tokens_per_s=1000.0,
                peak_memory_mb=5000.0 if method == "lora" else 20000.0,
                energy_j=None,
                tokens_seen=64_000,
                train_flops=(4.0 if method == "lora" else 6.0) * 1e15,
                learning_rate=rate,
                global_batch_size=4 if method == "lora" else 8,
                train_steps=250,
                dtype="float32",
                options={"torch_compile": False},
            )
    return metrics


def settings_of(table):
    """Each run's run_settings from a config whose full runs accumulate gradients over 2 steps."""
    runs = {}
    for row in table:
        training = {"learning_rate": row["learning_rate"]}
        if row["method"] == "full":
            training["gradient_accumulation_steps"] = 2
        runs[row["run"]] = {"method": row["method"], "training": training}
    config = validate_config({"runs": runs}, search_dirs=[REPO])
    return {row["run"]: run_settings(config, row["run"]) for row in table}


@pytest.fixture(scope="module")
def summary():
    table = run_table()
    return build_summary(table, fake_metrics(), settings_of(table), 0.95, "full")


def test_each_arm_has_its_rates_its_best_rate_and_its_grid(summary):
    lora, full = summary["arms"]["lora"], summary["arms"]["full"]
    assert [entry["learning_rate"] for entry in lora["learning_rates"]] == [1e-4, 3e-4, 1e-3]
    middle = lora["learning_rates"][1]["eval_loss"]
    # mean 1.21, s = 0.01, t_0.975,2 = 4.3026527: 1.21 ± 0.0248414
    assert middle["mean"] == pytest.approx(1.21) and middle["n"] == 3
    assert middle["ci_low"] == pytest.approx(1.21 - 0.0248414, abs=1e-6)
    assert lora["best_learning_rate"] == 3e-4 and lora["best_on_edge"] is None
    assert full["best_learning_rate"] == 1e-5 and full["best_on_edge"] == "lowest"
    assert lora["grid_step"] == pytest.approx(math.sqrt(10))  # 1e-4 to 1e-3 in two steps
    assert lora["best_run"] == "lora-lr0.0003-s41" and full["best_run"] == "full-lr1e-05-s41"
    assert summary["reference_arm"] == "full" and summary["sweep"] is True and summary["single_seed"] is False


def test_the_figures_at_the_best_rate_are_over_its_seeds(summary):
    at_best = summary["arms"]["full"]["at_best"]
    assert at_best["eval_loss"]["values"] == [1.10, 1.11, 1.12]
    assert at_best["train_runtime_s"]["mean"] == pytest.approx(401.0)
    assert at_best["energy_j"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "std": None, "values": []}
    assert at_best["flops"]["mean"] == 6e15 and at_best["tokens_seen"]["mean"] == 64_000
    run = next(r for r in summary["runs"] if r["run"] == "lora-lr0.0003-s42")
    assert (run["eval_loss"], run["flops"], run["tokens_seen"], run["seed"]) == (1.21, 4e15, 64_000, 42)


def test_expected_best_starts_at_the_mean_and_falls_to_the_best_run(summary):
    curve = summary["arms"]["lora"]["expected_best"]
    losses = [v for (method, _), values in LOSSES.items() if method == "lora" for v in values]
    assert [point["trials"] for point in curve] == list(range(1, 10))
    assert curve[0]["eval_loss"] == pytest.approx(sum(losses) / 9)
    assert curve[-1]["eval_loss"] > min(losses)
    assert all(a["eval_loss"] > b["eval_loss"] for a, b in zip(curve, curve[1:]))


def test_a_difference_its_interval_supports_is_stated_with_its_direction(summary):
    comparison = next(c for c in summary["comparisons"] if c["metric"] == "eval_loss")
    # LoRA at 3e-4 (1.20, 1.21, 1.22) minus full at 1e-5 (1.10, 1.11, 1.12): 0.10; standard error
    # sqrt(2 · 0.0001 / 3) = 0.0081650, df 4, t_0.975,4 = 2.7764451: 0.10 ± 0.0226697.
    assert comparison["arm"] == "lora" and comparison["reference"] == "full" and comparison["n"] == [3, 3]
    assert comparison["difference"]["mean"] == pytest.approx(0.10)
    assert comparison["difference"]["ci_low"] == pytest.approx(0.0773303, abs=1e-6)
    assert comparison["welch"]["df"] == pytest.approx(4.0)
    assert comparison["learning_rate_ratio"] == pytest.approx(30.0)
    assert comparison["ratio_resolution"] == pytest.approx(math.sqrt(10))
    assert comparison["verdict"] == (
        "At their best learning rates, LoRA's held-out loss is 0.10 nats higher than full fine-tuning's "
        "(95% interval 0.08 to 0.12, 3 seeds each)."
    )
    assert {c["metric"] for c in summary["comparisons"]} >= {"train_runtime_s", "peak_memory_mb", "flops"}


def test_the_other_direction_reads_lower():
    table = run_table()
    flipped = build_summary(table, fake_metrics(), settings_of(table), 0.95, "lora")
    comparison = next(c for c in flipped["comparisons"] if c["metric"] == "eval_loss")
    assert comparison["arm"] == "full" and comparison["learning_rate_ratio"] == pytest.approx(1 / 30)
    assert comparison["verdict"] == (
        "At their best learning rates, full fine-tuning's held-out loss is 0.10 nats lower than LoRA's "
        "(95% interval 0.08 to 0.12, 3 seeds each)."
    )


def test_an_interval_that_includes_zero_claims_no_direction():
    losses = {("lora", 2e-4): [1.10, 1.20, 1.30], ("full", 2e-5): [1.14, 1.15, 1.16, 1.17]}
    seeds = [1, 2, 3, 4]
    table = run_table(losses, seeds)
    result = build_summary(table, fake_metrics(losses, seeds), settings_of(table), 0.95, "full")
    comparison = next(c for c in result["comparisons"] if c["metric"] == "eval_loss")
    low, high = comparison["difference"]["ci_low"], comparison["difference"]["ci_high"]
    assert low < 0 < high and comparison["n"] == [3, 4]
    verdict = comparison["verdict"]
    assert "higher than" not in verdict and "lower than" not in verdict
    assert verdict.startswith(
        "At their best learning rates, LoRA's held-out loss differs from full fine-tuning's by +0.04"
    )
    assert "3 seeds for LoRA, 4 for full fine-tuning" in verdict
    assert verdict.endswith("the interval includes no difference, so these runs do not show which is higher.")
    assert comparison["ratio_resolution"] is None  # one rate each: no grid
    assert any("one learning rate (2e-4), not tuned" in note for note in result["notes"])


def test_one_seed_gives_no_interval_and_the_notes_say_so():
    losses = {("lora", 1e-4): [1.3], ("lora", 1e-3): [1.2], ("full", 1e-5): [1.25], ("full", 1e-4): [1.28]}
    table = run_table(losses, [7])
    result = build_summary(table, fake_metrics(losses, [7]), settings_of(table), 0.95, "full")
    assert result["single_seed"] is True
    stat = result["arms"]["lora"]["at_best"]["eval_loss"]
    assert stat["n"] == 1 and stat["ci_low"] is None and stat["std"] is None
    comparison = next(c for c in result["comparisons"] if c["metric"] == "eval_loss")
    assert comparison["welch"] == {"t": None, "p": None, "df": None}
    assert comparison["verdict"] == (
        "At their best learning rates, LoRA's held-out loss was 0.050 nats lower than full fine-tuning's "
        "(1 seed each); one seed gives no interval, so this does not show a difference beyond what another "
        "seed might give."
    )
    notes = result["notes"]
    assert notes[0].startswith("One seed per learning rate: no intervals")
    assert "lora: the best rate 1e-3 is the highest of the grid; extend the grid." in notes
    assert "full: the best rate 1e-5 is the lowest of the grid; extend the grid." in notes


def test_a_reference_method_without_runs_falls_back_to_the_first_arm_by_name():
    losses = {("lora", 1e-4): [1.3], ("qlora", 1e-4): [1.35]}
    table = run_table(losses, [1])
    result = build_summary(table, fake_metrics(losses, [1]), settings_of(table), 0.95, "full")
    assert result["reference_arm"] == "lora"
    assert {c["arm"] for c in result["comparisons"]} == {"qlora"}
    assert "compare.reference_method full has no runs: the arms are compared with lora" in " ".join(result["notes"])


def test_fairness_flags_what_differs_besides_the_method_and_its_rate(summary):
    rows = {row["key"]: row for row in summary["fairness"]}
    assert rows["training.gradient_accumulation_steps"]["values"] == {"full": 2, "lora": 1}
    assert rows["training.gradient_accumulation_steps"]["differs"] is True
    assert rows["global_batch_size"]["values"] == {"full": 8, "lora": 4} and rows["global_batch_size"]["differs"]
    assert rows["training.learning_rate"]["differs"] is False  # tuned per arm
    assert rows["lora.r"]["values"] == {"lora": 8} and rows["lora.r"]["differs"] is False  # the method
    assert rows["training.max_seq_length"]["differs"] is False
    assert rows["options.torch_compile"]["values"] == {"full": False, "lora": False}
    assert rows["tokens_seen"]["differs"] is False
    config = summary["arms"]["lora"]["config"]
    assert config["training.learning_rate"] == 3e-4 and config["lora.r"] == 8


def test_edge_and_grid_step_by_hand():
    assert edge_of_grid([1e-4, 3e-4, 1e-3], 1e-4) == "lowest"
    assert edge_of_grid([1e-4, 3e-4, 1e-3], 1e-3) == "highest"
    assert edge_of_grid([1e-4, 3e-4, 1e-3], 3e-4) is None
    assert edge_of_grid([1e-4], 1e-4) is None
    assert grid_step([1e-4, 2e-4, 4e-4, 8e-4]) == pytest.approx(2.0)  # (8)^(1/3)
    assert grid_step([2e-4]) is None


def write_fake_runs(folder, metrics):
    paths = []
    for name, record in metrics.items():
        path = folder / "runs" / name / "metrics.json"
        write_metrics(path, record)
        paths.append(path)
    return list(metrics), paths


def load_compare_script():
    spec = importlib.util.spec_from_file_location("compare_entry", REPO / "scripts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_entry_script_writes_the_summary_tables_and_figures(tmp_path):
    table = run_table()
    runs, paths = write_fake_runs(tmp_path, fake_metrics())
    out = tmp_path / "compare"
    smk = SimpleNamespace(
        input=SimpleNamespace(metrics=[str(p) for p in paths]),
        output=SimpleNamespace(
            summary=str(out / "summary.json"), tables=str(out / "tables"), figures=str(out / "figures")
        ),
        params=SimpleNamespace(
            runs=runs,
            run_table=table,
            compare={"reference_method": "full", "confidence": 0.95},
            settings=settings_of(table),
        ),
    )
    load_compare_script().main(smk)

    summary = read_json_object(out / "summary.json")  # strict JSON
    assert summary["arms"]["lora"]["best_learning_rate"] == 3e-4
    assert summary["comparisons"][0]["verdict"].startswith("At their best learning rates, LoRA's held-out loss is")

    def rows(name):
        with open(out / "tables" / f"{name}.csv", newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    rates = rows("learning_rates")
    assert len(rates) == 6
    best = [row for row in rates if row["best"] == "best"]
    assert [(row["arm"], float(row["learning_rate"])) for row in best] == [("full", 1e-5), ("lora", 3e-4)]
    assert float(rates[4]["eval_loss_mean"]) == pytest.approx(1.21)  # full's three rates, then lora's
    at_best = {(row["arm"], row["metric"]): row for row in rows("at_best")}
    assert float(at_best[("full", "peak_memory_mb")]["mean"]) == 20000 and at_best[("full", "energy_j")]["mean"] == ""
    comparisons = {row["metric"]: row for row in rows("comparisons")}
    assert float(comparisons["eval_loss"]["difference"]) == pytest.approx(0.10)
    assert float(comparisons["eval_loss"]["welch_df"]) == pytest.approx(4.0)
    assert comparisons["eval_loss"]["verdict"] == summary["comparisons"][0]["verdict"]
    fairness = {row["key"]: row for row in rows("fairness")}
    assert fairness["training.gradient_accumulation_steps"] == {
        "key": "training.gradient_accumulation_steps",
        "differs": "yes",
        "lora": "1",
        "full": "2",
    }
    assert fairness["lora.r"]["full"] == ""
    assert len(rows("expected_best")) == 18
    for name in ("learning_rates", "at_best", "comparisons", "fairness", "expected_best"):
        tex = (out / "tables" / f"{name}.tex").read_text(encoding="utf-8")
        assert "\\toprule" in tex and "\\bottomrule" in tex

    from PIL import Image

    for name in ("loss_vs_learning_rate", "expected_best", "loss_vs_flops"):
        for suffix in ("pdf", "svg", "png"):
            assert (out / "figures" / f"{name}.{suffix}").stat().st_size > 0
        with Image.open(out / "figures" / f"{name}.png") as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_metrics_of_another_run_are_refused(tmp_path):
    from ftcompare.errors import FtcompareError

    runs, paths = write_fake_runs(tmp_path, {"a": RunMetrics(run="a"), "b": RunMetrics(run="b")})
    with pytest.raises(FtcompareError, match="is for run 'b', expected 'a'"):
        read_run_metrics(runs, list(reversed(paths))[:1] + paths[1:])


def test_runs_without_a_held_out_loss_are_noted_and_the_figures_still_draw(tmp_path):
    table = run_table({("lora", 1e-4): [1.0]}, [1])
    metrics = {table[0]["run"]: RunMetrics(run=table[0]["run"], method="lora")}
    result = write_comparison(
        table,
        metrics,
        settings_of(table),
        {"reference_method": None, "confidence": 0.9},
        tmp_path / "summary.json",
        tmp_path / "tables",
        tmp_path / "figures",
    )
    assert result["arms"]["lora"]["best_learning_rate"] is None and result["arms"]["lora"]["best_run"] is None
    assert result["comparisons"] == [] and result["reference_arm"] == "lora"
    assert f"{table[0]['run']}: no held-out loss recorded; left out of the statistics." in result["notes"]
    assert (tmp_path / "figures" / "loss_vs_flops.png").is_file()


def test_the_compare_config_is_checked():
    config = validate_config({}, search_dirs=[REPO])
    assert config["compare"] == {"reference_method": "full", "confidence": 0.95}
    with pytest.raises(ConfigError, match="`compare.reference_method` = 'dora': allowed values are"):
        validate_config({"compare": {"reference_method": "dora"}}, search_dirs=[REPO])
    with pytest.raises(ConfigError, match="`compare.confidence` = 1.5: must be < 1"):
        validate_config({"compare": {"confidence": 1.5}}, search_dirs=[REPO])


def test_a_sweep_s_grid_defines_its_arms_and_is_not_flagged():
    """Arms "lora r=8" and "lora r=32" differ in lora.r by design; a verdict names them by method and grid."""
    table, metrics, settings = [], {}, {}
    for r, losses in ((8, [1.30, 1.31, 1.32]), (32, [1.20, 1.21, 1.22])):
        for seed, loss in zip(SEEDS, losses):
            name = f"lora-r{r}-s{seed}"
            table.append(
                {
                    "run": name,
                    "method": "lora",
                    "arm": f"lora r={r}",
                    "learning_rate": 1e-4,
                    "seed": seed,
                    "grid": {"lora.r": r},
                    "from_sweep": True,
                }
            )
            metrics[name] = RunMetrics(run=name, method="lora", eval_loss=loss)
            config = validate_config({"runs": {name: {"method": "lora", "lora": {"r": r}}}}, search_dirs=[REPO])
            settings[name] = run_settings(config, name)
    result = build_summary(table, metrics, settings, 0.95, None)
    assert result["reference_arm"] == "lora r=32"  # null: the first arm in name order
    rows = {row["key"]: row for row in result["fairness"]}
    assert rows["lora.r"]["values"] == {"lora r=32": 32, "lora r=8": 8} and rows["lora.r"]["differs"] is False
    comparison = next(c for c in result["comparisons"] if c["metric"] == "eval_loss")
    assert comparison["verdict"].startswith(
        "At their best learning rates, LoRA (r=8)'s held-out loss is 0.10 nats higher than LoRA (r=32)'s"
    )
    energy = next(c for c in result["comparisons"] if c["metric"] == "energy_j")
    assert energy["verdict"].endswith("LoRA (r=8)'s energy cannot be compared with LoRA (r=32)'s: neither has a value.")
