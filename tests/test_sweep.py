"""Sweeps: a `sweep:` section expanded into named runs, `select_runs`, the run table, the best run each
swept method generates from, and the workflow scheduling only what a grown sweep adds."""

import copy
import json

import pytest
import yaml
from helpers.comparison_html import assert_at_best_table_equals_the_summary, assert_comparisons_table_equals_the_summary
from helpers.html import parse_html
from helpers.workflow import SCENARIOS, copy_workflow, planned_jobs, read_jsonl, snakemake
from snakemake.utils import update_config

from conftest import REPO, load_yaml
from ftcompare.config import ConfigError, run_settings, validate_config
from ftcompare.errors import FtcompareError
from ftcompare.metrics import RunMetrics, read_metrics, write_metrics
from ftcompare.report.inputs import load_generations
from ftcompare.report.outputs import generation_summary_table, prompt_comparisons
from ftcompare.sweep import (
    best_model_candidates,
    best_run,
    exponent_label,
    learning_rates,
    model_names,
    pick_best_run,
    point_name,
    run_table,
)

RUN_TABLE_KEYS = {"run", "method", "arm", "learning_rate", "seed", "grid", "from_sweep"}


def validated(sweep: dict | None = None, **keys) -> dict:
    """config/config.yaml with `sweep` and other top-level `keys` on top, validated."""
    config = load_yaml("config.yaml")
    if sweep is not None:
        config["sweep"] = sweep
    config.update(keys)
    return validate_config(config, search_dirs=[REPO])


def problems_of(sweep: dict | None = None, **keys) -> str:
    with pytest.raises(ConfigError) as error:
        validated(sweep, **keys)
    return str(error.value)


def swept_runs(config: dict) -> list[str]:
    return [row["run"] for row in run_table(config) if row["from_sweep"]]


LORA_SWEEP = {"seeds": 2, "methods": {"lora": {"learning_rates": [3e-4, 1e-3]}}}


@pytest.mark.parametrize(
    "rate, label",
    [(3e-4, "3e-4"), (1e-3, "1e-3"), (2.5e-4, "2.5e-4"), (0.0003, "3e-4"), (1e-2, "1e-2"), (9.28e-4, "9.28e-4")],
)
def test_a_learning_rate_is_written_in_its_shortest_exact_form(rate, label):
    assert exponent_label(rate) == label
    assert float(label) == rate


def test_names_are_readable_and_grid_values_come_in_the_grid_s_key_order():
    assert point_name("lora", {}, 3e-4, 43) == "lora-lr3e-4-s43"
    assert point_name("lora", {"lora.r": 32}, 3e-4, 43) == "lora-r32-lr3e-4-s43"
    assert (
        point_name("qlora", {"lora.r": 8, "quantization.bnb_4bit_quant_type": "fp4"}, 1e-3, 0)
        == "qlora-r8-bnb_4bit_quant_type_fp4-lr1e-3-s0"
    )
    assert point_name("full", {"training.weight_decay": 0.05}, 2e-5, 1) == "full-weight_decay0.05-lr2e-5-s1"


def test_a_sweep_expands_into_distinct_runs_with_their_method_rate_seed_and_grid_values():
    config = validated(
        {
            "seeds": 2,
            "methods": {
                "lora": {"learning_rates": [3e-4, 1e-3], "grid": {"lora.r": [8, 32]}, "lora": {"lora_dropout": 0.0}},
                "full": {"learning_rates": [1e-4]},
            },
        }
    )
    swept = swept_runs(config)
    assert len(swept) == len(set(swept)) == 2 * 2 * 2 + 2
    # Hand-written runs still run beside the sweep (select_runs: null).
    assert {"lora", "qlora", "full"} <= set(config["runs"])
    settings = run_settings(config, "lora-r32-lr1e-3-s43")
    assert settings["method"] == "lora" and settings["seed"] == 43
    assert settings["training"]["learning_rate"] == 1e-3
    assert settings["lora"]["r"] == 32 and settings["lora"]["lora_dropout"] == 0.0
    # Everything the sweep does not set is the global section's.
    assert settings["training"]["weight_decay"] == config["training"]["weight_decay"]
    assert settings["lora"]["lora_alpha"] == config["lora"]["lora_alpha"]
    assert run_settings(config, "full-lr1e-4-s42")["training"]["learning_rate"] == 1e-4


def test_the_same_sweep_gives_the_same_names_and_settings_every_time():
    first, second = validated(copy.deepcopy(LORA_SWEEP)), validated(copy.deepcopy(LORA_SWEEP))
    assert swept_runs(first) == swept_runs(second)
    assert all(run_settings(first, run) == run_settings(second, run) for run in swept_runs(first))


def test_a_log_range_is_log_spaced_and_rounded_to_three_significant_digits():
    assert learning_rates({"from": 1e-4, "to": 1e-2, "points": 5}) == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]
    assert learning_rates({"from": 1e-5, "to": 1.6e-4, "points": 5}) == [1e-5, 2e-5, 4e-5, 8e-5, 1.6e-4]
    config = validated({"methods": {"lora": {"learning_rates": {"from": 2e-4, "to": 2e-2, "points": 4}}}})
    assert swept_runs(config) == ["lora-lr2e-2-s42", "lora-lr2e-4-s42", "lora-lr4.31e-3-s42", "lora-lr9.28e-4-s42"]


def test_seeds_are_a_count_from_the_top_level_seed_or_a_list():
    by_count = validated({"seeds": 3, "methods": {"full": {"learning_rates": [1e-4]}}}, seed=7)
    assert [row["seed"] for row in run_table(by_count) if row["from_sweep"]] == [7, 8, 9]
    by_list = validated({"seeds": [1, 5], "methods": {"full": {"learning_rates": [1e-4]}}})
    assert swept_runs(by_list) == ["full-lr1e-4-s1", "full-lr1e-4-s5"]
    assert run_settings(by_list, "full-lr1e-4-s5")["seed"] == 5
    assert validated({"methods": {"full": {"learning_rates": [1e-4]}}}, seed=3)["runs"]["full-lr1e-4-s3"]["seed"] == 3


def test_adding_a_seed_adds_only_new_runs_and_leaves_the_others_settings_as_they_were():
    before = validated({"seeds": [42, 43], "methods": {"lora": {"learning_rates": [3e-4, 1e-3]}}})
    after = validated({"seeds": [42, 43, 44], "methods": {"lora": {"learning_rates": [3e-4, 1e-3]}}})
    old, new = set(swept_runs(before)), set(swept_runs(after))
    assert old < new and new - old == {"lora-lr3e-4-s44", "lora-lr1e-3-s44"}
    assert all(run_settings(before, run) == run_settings(after, run) for run in old)


def test_a_changed_grid_value_changes_only_that_point_s_runs():
    before = validated({"methods": {"lora": {"learning_rates": [3e-4, 1e-3], "grid": {"lora.r": [8, 16]}}}})
    after = validated({"methods": {"lora": {"learning_rates": [3e-4, 1e-3], "grid": {"lora.r": [8, 32]}}}})
    kept = set(swept_runs(before)) & set(swept_runs(after))
    assert kept == {"lora-r8-lr3e-4-s42", "lora-r8-lr1e-3-s42"}
    assert all(run_settings(before, run) == run_settings(after, run) for run in kept)
    assert set(swept_runs(after)) - kept == {"lora-r32-lr3e-4-s42", "lora-r32-lr1e-3-s42"}


def test_a_swept_method_s_overrides_stay_sparse_so_its_points_keep_the_top_level_settings():
    sweep = {"methods": {"full": {"learning_rates": [1e-4], "training": {"gradient_accumulation_steps": 2}}}}
    config = validated(sweep, training={**load_yaml("config.yaml")["training"], "max_steps": 7, "warmup_ratio": 0.2})
    training = run_settings(config, "full-lr1e-4-s42")["training"]
    assert training["max_steps"] == 7 and training["warmup_ratio"] == 0.2
    assert training["gradient_accumulation_steps"] == 2 and training["learning_rate"] == 1e-4


def test_a_hand_written_run_takes_its_own_seed_else_the_top_level_one():
    config = validated(runs={"a": {"method": "full", "seed": 5}, "b": {"method": "lora"}}, seed=11)
    assert run_settings(config, "a")["seed"] == 5 and run_settings(config, "b")["seed"] == 11


def test_select_runs_keeps_names_globs_and_the_sweep():
    sweep = {"seeds": 2, "methods": {"lora": {"learning_rates": [1e-3]}, "full": {"learning_rates": [1e-4]}}}
    assert list(validated(sweep, select_runs=["sweep"])["runs"]) == [
        "lora-lr1e-3-s42",
        "lora-lr1e-3-s43",
        "full-lr1e-4-s42",
        "full-lr1e-4-s43",
    ]
    assert list(validated(sweep, select_runs=["full", "lora-*"])["runs"]) == [
        "full",
        "lora-lr1e-3-s42",
        "lora-lr1e-3-s43",
    ]
    assert list(validated(sweep, select_runs=["*-s43", "qlora"])["runs"]) == [
        "qlora",
        "lora-lr1e-3-s43",
        "full-lr1e-4-s43",
    ]
    assert len(validated(sweep)["runs"]) == 3 + 4  # null: everything


def test_select_runs_refuses_a_pattern_that_matches_nothing_naming_it():
    message = problems_of(LORA_SWEEP, select_runs=["lora", "dora*", "sweep"])
    assert "select_runs: 'dora*' matches no run; runs here: lora, qlora, full, lora-lr3e-4-s42" in message
    assert "'lora'" not in message and "'sweep'" not in message
    message = problems_of(select_runs=["sweep"])
    assert "select_runs: 'sweep' matches no run" in message and "(and no sweep points" in message


def test_unselected_runs_are_not_checked():
    # The hand-written run would be refused (ddp on one device), but the config leaves it out.
    config = validated(
        LORA_SWEEP, select_runs=["sweep"], runs={"broken": {"method": "full", "training": {"strategy": "ddp"}}}
    )
    assert "broken" not in config["runs"]
    assert "broken" in problems_of(LORA_SWEEP, runs={"broken": {"method": "full", "training": {"strategy": "ddp"}}})


def test_the_run_table_has_one_row_per_selected_run_sorted_by_name():
    config = validated(
        {"seeds": [1], "methods": {"lora": {"learning_rates": [3e-4], "grid": {"lora.r": [8, 32]}}}},
        select_runs=["sweep", "full"],
    )
    table = run_table(config)
    assert [row["run"] for row in table] == ["full", "lora-r32-lr3e-4-s1", "lora-r8-lr3e-4-s1"]
    assert all(set(row) == RUN_TABLE_KEYS for row in table)
    assert table[0] == {
        "run": "full",
        "method": "full",
        "arm": "full",
        "learning_rate": 2e-4,
        "seed": 42,
        "grid": {},
        "from_sweep": False,
    }
    assert table[1] == {
        "run": "lora-r32-lr3e-4-s1",
        "method": "lora",
        "arm": "lora r=32",
        "learning_rate": 3e-4,
        "seed": 1,
        "grid": {"lora.r": 32},
        "from_sweep": True,
    }


def test_a_run_table_of_a_validated_config_validates_again_to_the_same_runs():
    config = validated(LORA_SWEEP)
    assert validate_config(copy.deepcopy(config), search_dirs=[REPO])["runs"] == config["runs"]


@pytest.mark.parametrize(
    "sweep, runs, expected",
    [
        (LORA_SWEEP, {"lora-lr3e-4-s42": {"method": "full"}}, "runs.lora-lr3e-4-s42: the name of a sweep point"),
        (LORA_SWEEP, {"best-lora": {"method": "lora"}}, "runs.best-lora: the name of the model generated from"),
        (
            {"methods": {"lora": {"learning_rates": {"from": 1e-4, "to": 1.0001e-4, "points": 3}}}},
            None,
            "two sweep points would both be named 'lora-lr1e-4-s42'",
        ),
        (
            {"methods": {"lora": {"learning_rates": [1e-3], "grid": {"lora.rank": [8]}}}},
            None,
            "sweep.methods.lora.grid: unknown key 'lora.rank'",
        ),
        (
            {"methods": {"full": {"learning_rates": [1e-3], "grid": {"lora.r": [8]}}}},
            None,
            "sweep.methods.full.grid: lora.r: full runs do not read `lora`",
        ),
        (
            {"methods": {"lora": {"learning_rates": [1e-3], "grid": {"training.learning_rate": [1e-4]}}}},
            None,
            "training.learning_rate is swept by sweep.methods.lora.learning_rates",
        ),
        (
            {"methods": {"lora": {"learning_rates": [1e-3], "training": {"learning_rate": 1e-4}}}},
            None,
            "sweep.methods.lora.training.learning_rate: set the rates in sweep.methods.lora.learning_rates",
        ),
        (
            {"methods": {"lora": {"learning_rates": [1e-3], "grid": {"lora.r": [0, 8]}}}},
            None,
            "sweep.methods.lora (point lora-r0-lr1e-3-s42): `lora.r` = 0",
        ),
        (
            {"methods": {"lora": {"learning_rates": [1e-3], "grid": {"training.weight_decay": ["x" * 60]}}}},
            None,
            "the name is longer than 64 characters",
        ),
        ({"seeds": 0, "methods": {}}, None, "`sweep.seeds` = 0: must be a count (>= 1) or a list of distinct seeds"),
        ({"seeds": [1, 1]}, None, "`sweep.seeds` = [1, 1]: must be a count"),
        (
            {"methods": {"lora": {"learning_rates": []}}},
            None,
            "`sweep.methods.lora.learning_rates` = []: must be a list of distinct positive numbers or {from, to",
        ),
        ({"methods": {"dora": {"learning_rates": [1e-3]}}}, None, "`sweep.methods` = 'dora': allowed values are"),
    ],
)
def test_a_bad_sweep_is_refused_naming_the_key(sweep, runs, expected):
    keys = {"runs": runs} if runs else {}
    assert expected in problems_of(sweep, **keys)


def test_models_are_the_base_the_hand_written_runs_and_each_swept_method_s_best():
    sweep = {"seeds": 2, "methods": {"lora": {"learning_rates": [1e-3, 3e-3]}, "full": {"learning_rates": [1e-4]}}}
    config = validated(sweep, select_runs=["sweep", "full"])
    assert model_names(config) == ["base", "full", "best-lora", "best-full"]
    assert best_model_candidates(config) == {
        "best-lora": ["lora-lr1e-3-s42", "lora-lr1e-3-s43", "lora-lr3e-3-s42", "lora-lr3e-3-s43"],
        "best-full": ["full-lr1e-4-s42", "full-lr1e-4-s43"],
    }
    # Only selected points are candidates; generation.all_runs generates for every point too.
    assert best_model_candidates(validated(sweep, select_runs=["*-s43"]))["best-full"] == ["full-lr1e-4-s43"]
    every = validated(sweep, generation={"all_runs": True}, select_runs=["sweep"])
    assert model_names(every) == ["base", *every["runs"], "best-lora", "best-full"]


def test_the_best_run_has_the_lowest_held_out_loss_ties_to_the_first_name_and_never_a_diverged_run():
    assert pick_best_run({"b": 1.0, "a": 2.0}) == "b"
    assert pick_best_run({"b": 1.0, "a": 1.0}) == "a"
    assert pick_best_run({"a": None, "b": float("nan"), "c": 3.0}) == "c"
    with pytest.raises(FtcompareError, match="no run has a finite held-out loss to pick the best by: a, b"):
        pick_best_run({"a": None, "b": float("inf")})


def test_the_best_run_is_read_from_the_candidates_metrics(tmp_path):
    paths = []
    for run, loss in [("lora-lr1e-3-s1", 2.5), ("lora-lr3e-3-s1", 2.25), ("lora-lr1e-2-s1", None)]:
        paths.append(tmp_path / f"{run}.json")
        write_metrics(paths[-1], RunMetrics(run=run, method="lora", eval_loss=loss, seed=1))
    names = ["lora-lr1e-3-s1", "lora-lr3e-3-s1", "lora-lr1e-2-s1"]
    assert best_run(names, paths) == {
        "run": "lora-lr3e-3-s1",
        "metric": "eval_loss",
        "eval_loss": 2.25,
        "candidates": {"lora-lr1e-3-s1": 2.5, "lora-lr3e-3-s1": 2.25, "lora-lr1e-2-s1": None},
    }
    with pytest.raises(FtcompareError, match="is for run"):
        best_run(list(reversed(names)), paths)


def test_metrics_record_the_run_s_seed(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, RunMetrics(run="x", seed=43))
    assert json.loads(path.read_text())["seed"] == 43
    assert read_metrics(path, "x").seed == 43


def test_the_report_names_the_run_a_best_model_generated_from(tmp_path):
    record = {"model": "best-lora", "prompt_id": 0, "prompt": "p", "output": "o", "new_tokens": 1, "seconds": 0.1}
    (tmp_path / "best-lora.jsonl").write_text(json.dumps({**record, "best_of": {"run": "lora-lr3e-3-s1"}}) + "\n")
    (tmp_path / "base.jsonl").write_text(json.dumps({**record, "model": "base"}) + "\n")
    models = [load_generations(tmp_path / "base.jsonl"), load_generations(tmp_path / "best-lora.jsonl")]
    assert [model.label for model in models] == ["base", "best-lora (lora-lr3e-3-s1)"]
    assert [answer.model for answer in prompt_comparisons(models)[0].answers] == ["base", "best-lora (lora-lr3e-3-s1)"]
    table = generation_summary_table(models)
    assert [row[0].value for row in table.rows] == ["base", "best-lora (lora-lr3e-3-s1)"]
    assert any("best-lora is lora-lr3e-3-s1" in note for note in table.notes)


def merged(*names: str) -> dict:
    """The config files merged in order, as `--configfile` does, over config/config.yaml."""
    config = load_yaml("config.yaml")
    for name in names:
        update_config(config, load_yaml(name))
    return validate_config(config, search_dirs=[REPO])


def test_config_sweep_yaml_sweeps_every_method_over_two_orders_of_magnitude_with_three_seeds():
    config = merged("sweep.yaml")
    table = run_table(config)
    assert len(table) == 3 * 4 * 3 and all(row["from_sweep"] for row in table)
    assert config["base_model"]["name"] == "embedded" and config["data"]["name"] == "embedded"
    for method in ("lora", "qlora", "full"):
        rows = [row for row in table if row["method"] == method]
        rates = sorted({row["learning_rate"] for row in rows})
        assert len(rates) >= 4 and rates[-1] / rates[0] >= 100 - 1e-9
        assert {row["seed"] for row in rows} == {42, 43, 44}
    # The rates that train well in config/config.yaml lie inside each grid.
    default = validate_config(load_yaml("config.yaml"), search_dirs=[REPO])
    for run in ("lora", "qlora", "full"):
        rate = run_settings(default, run)["training"]["learning_rate"]
        rates = sorted({row["learning_rate"] for row in table if row["method"] == run})
        assert rates[0] < rate < rates[-1]
    assert model_names(config) == ["base", "best-lora", "best-qlora", "best-full"]


def test_config_blog_sweep_yaml_sweeps_around_the_blog_s_rates_over_config_blog_yaml():
    config = merged("blog.yaml", "blog-sweep.yaml")
    table = run_table(config)
    assert len(table) == 2 * 5 * 3
    assert config["base_model"]["name"] == "NousResearch/Llama-2-7b-chat-hf"
    rates = {m: sorted({row["learning_rate"] for row in table if row["method"] == m}) for m in ("lora", "full")}
    assert 4e-5 in rates["lora"] and rates["lora"][0] < 4e-5 < rates["lora"][-1]
    assert 4e-7 in rates["full"] and rates["full"][0] < 4e-7 < rates["full"][-1]
    assert run_settings(config, "full-lr4e-7-s42")["training"]["strategy"] == "device_map"
    # The planned cost in the header: 15 runs of each method at the blog's measured runtimes.
    header = (REPO / "config" / "blog-sweep.yaml").read_text(encoding="utf-8")
    lora_hours, full_hours = 15 * 484.8 / 3600, 15 * 10993.8 / 3600
    assert f"{lora_hours:.1f} MI250-hours" in header and f"{full_hours:.1f} MI250-hours" in header
    assert f"{lora_hours + full_hours:.1f} MI250-hours" in header


TINY_RATES = {"lora": [1e-3, 2e-2], "full": [1e-4, 1e-3]}


def tiny_sweep_config(seeds: list[int]) -> dict:
    """The end-to-end scenario's tiny model and data, with a sweep of LoRA and full fine-tuning at two rates
    each in place of its runs; no weight analysis (tests/test_weight_change.py covers it)."""
    config = yaml.safe_load((SCENARIOS / "config_default.yaml").read_text(encoding="utf-8"))
    config["select_runs"] = ["sweep"]
    config["sweep"] = {"seeds": seeds, "methods": {m: {"learning_rates": r} for m, r in TINY_RATES.items()}}
    config["training"]["max_steps"] = 4
    config["weight_analysis"] = {"enabled": False}
    return config


SUMMARY_KEYS = {
    "confidence",
    "sweep",
    "single_seed",
    "reference_arm",
    "runs",
    "arms",
    "comparisons",
    "fairness",
    "notes",
}
ARM_KEYS = {"method", "grid", "learning_rates", "best_learning_rate", "best_on_edge", "grid_step", "best_run"}
ARM_KEYS |= {"at_best", "expected_best", "config"}
MEASURES = {"eval_loss", "final_train_loss", "mean_train_loss", "train_runtime_s", "train_samples_per_s"}
MEASURES |= {"train_tokens_per_s", "peak_memory_mb", "energy_j", "tokens_seen", "flops"}


def test_a_sweep_trains_each_point_compares_the_methods_and_adding_a_seed_trains_only_the_new_runs(tmp_path):
    """2 methods x 2 rates x 2 seeds through the real workflow: results/compare/summary.json has every field,
    the report's comparison section shows its numbers (parsed, cell by cell), each method's best run
    generates, and a third seed schedules only its own runs."""
    workdir = copy_workflow(tmp_path)
    write = lambda name, config: (workdir / "config" / name).write_text(yaml.safe_dump(config))  # noqa: E731
    write("sweep.yaml", tiny_sweep_config([7, 8]))
    assert planned_jobs(workdir, "--configfile", "config/sweep.yaml") == {
        "base_model": 1,
        "plan": 1,
        "prepare_data": 1,
        "prepare_eval_set": 1,
        "train": 8,
        "evaluate": 9,
        "generate": 3,
        "compare": 1,
        "report": 1,
        "all": 1,
    }
    snakemake(workdir, "--cores", "2", "--configfile", "config/sweep.yaml")
    results = workdir / "results"
    losses = {"lora": {}, "full": {}}
    for method, rates in TINY_RATES.items():
        for rate, seed in ((rate, seed) for rate in rates for seed in (7, 8)):
            run = f"{method}-lr{exponent_label(rate)}-s{seed}"
            metrics = json.loads((results / "runs" / run / "metrics.json").read_text())
            assert metrics["seed"] == seed and metrics["learning_rate"] == rate and metrics["method"] == method
            losses[method][run] = metrics["eval_loss"]
    generated = sorted(path.name for path in (results / "generations").glob("*.jsonl"))
    assert generated == ["base.jsonl", "best-full.jsonl", "best-lora.jsonl"]
    records = read_jsonl(results / "generations" / "best-lora.jsonl")
    best = min(sorted(losses["lora"]), key=losses["lora"].get)
    expected = {"run": best, "metric": "eval_loss", "eval_loss": losses["lora"][best], "candidates": losses["lora"]}
    assert records and all(record["best_of"] == expected for record in records)
    assert f"best-lora ({best})" in (results / "report" / "report.html").read_text(encoding="utf-8")

    summary = json.loads((results / "compare" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == SUMMARY_KEYS and summary["sweep"] and not summary["single_seed"]
    assert summary["reference_arm"] == "full" and len(summary["runs"]) == 8
    for method, entry in summary["arms"].items():
        assert set(entry) >= ARM_KEYS and set(entry["at_best"]) == MEASURES, method
        assert [point["learning_rate"] for point in entry["learning_rates"]] == TINY_RATES[method]
        assert entry["best_on_edge"] in ("lowest", "highest")  # two rates: the best is always on an edge
        assert entry["at_best"]["eval_loss"]["n"] == 2 and entry["at_best"]["eval_loss"]["ci_low"] is not None
        assert entry["best_run"] == min(
            (run for run in losses[method] if f"lr{exponent_label(entry['best_learning_rate'])}-" in run),
            key=losses[method].get,
        )
    held_out = next(c for c in summary["comparisons"] if c["metric"] == "eval_loss")
    assert held_out["arm"] == "lora" and held_out["n"] == [2, 2] and "2 seeds each" in held_out["verdict"]
    assert (results / "compare" / "figures" / "loss_vs_learning_rate.pdf").is_file()

    dom = parse_html(results / "report" / "report.html")
    section = dom.find("section", id="comparison")
    assert section.attrs["data-sweep"] == "true"
    assert_at_best_table_equals_the_summary(dom, summary)
    assert_comparisons_table_equals_the_summary(dom, summary)
    verdicts = [li.text() for li in section.find("ul", cls="comparison-verdicts").find_all("li")]
    assert held_out["verdict"] in verdicts

    write("more-seeds.yaml", tiny_sweep_config([7, 8, 9]))
    jobs = planned_jobs(workdir, "--configfile", "config/more-seeds.yaml")
    assert jobs == {"plan": 1, "train": 4, "evaluate": 4, "generate": 2, "compare": 1, "report": 1, "all": 1}
    plan = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/more-seeds.yaml").stdout
    assert all(f"wildcards: run={method}-lr" in plan for method in TINY_RATES)
    assert "-s9\n" in plan and "-s7\n" not in plan and "-s8\n" not in plan
    assert "wildcards: model=best-lora" in plan and "wildcards: model=best-full" in plan


@pytest.mark.parametrize(
    "configfiles, trains, generates, analyses",
    [(["config/sweep.yaml"], 36, 4, 0), (["config/blog.yaml", "config/blog-sweep.yaml"], 30, 3, 30)],
    ids=["sweep", "blog-sweep"],
)
def test_the_shipped_sweeps_dags_train_every_point_and_generate_from_each_method_s_best(
    tmp_path, configfiles, trains, generates, analyses
):
    copy_workflow(tmp_path)
    jobs = planned_jobs(tmp_path, "--configfile", *configfiles)
    assert jobs["train"] == trains and jobs["generate"] == generates
    assert jobs["evaluate"] == trains + 1 and jobs.get("analyse_weights", 0) == analyses and jobs["compare"] == 1
    plan = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", *configfiles).stdout
    # the hand-written runs of config/config.yaml (lora, qlora, full) are not selected
    assert "wildcards: model=best-lora" in plan and "wildcards: model=lora\n" not in plan
