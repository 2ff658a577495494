"""The performance harness (bench/): its bookkeeping, the sides it compares, and one tiny run of all of it."""

import json
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import job_collector  # noqa: E402
import run_all  # noqa: E402
import training_speed  # noqa: E402
import workflow_overhead  # noqa: E402

import harness  # noqa: E402


def test_alternate_drops_the_warmup_and_flips_the_order():
    calls = []
    sides = {
        name: (lambda repetition, name=name: calls.append((name, repetition)) or repetition) for name in ("a", "b")
    }
    results = harness.alternate(sides, repetitions=3, warmup=1)
    assert calls == [("a", -1), ("b", -1), ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert results == {"a": [0, 1, 2], "b": [0, 1, 2]}


def test_summaries_and_ratios():
    summary = harness.summarise([4.0, 2.0, 3.0, None])
    assert summary == {"median": 3.0, "min": 2.0, "max": 4.0, "spread_pct": pytest.approx(66.667, abs=1e-3), "n": 3}
    assert harness.ratio(harness.summarise([6.0]), summary) == 2.0
    assert harness.ratio(harness.summarise([]), summary) is None
    assert harness.figure(summary, 1) == "3.0 (2.0-4.0)"
    text = harness.table(["side", "x"], [["blog", 1.5], ["ours", None]])
    assert text.splitlines()[0].startswith("side") and "n/a" in text


def test_the_blog_side_is_blog_yaml_and_ours_differs_only_in_speed_options():
    default, blog = training_speed.load_configs()
    for method in ("lora", "full"):
        sides = training_speed.side_settings(default, blog, method)
        theirs, ours = sides["blog recipe"][0], sides["ours"][0]
        assert (theirs["bf16"], theirs["packing"], theirs["group_by_length"]) == (False, False, True)
        assert theirs["per_device_train_batch_size"] == 4 and theirs["lm_head_loss"] == "chunked"
        assert theirs["optim"] == "paged_adamw_32bit"  # bitsandbytes' (unpaged on the CPU), as the blog
        assert theirs["learning_rate"] == ours["learning_rate"]
        differing = {key for key in theirs if theirs[key] != ours[key]}
        assert differing <= {"optim", "bf16", "lm_head_loss", "drop_padding_mask"}
        assert sides["ours + packing"][0] == {**ours, "packing": True}
        assert ours["torch_compile"] is False and sides["ours + compile"][0] == {**ours, "torch_compile": True}


def test_the_machine_record_names_the_vector_extensions(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_tile\n")
    assert harness.cpu_vector_flags(cpuinfo) == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "fma"]
    assert harness.cpu_vector_flags(tmp_path / "missing") == []


def test_targets_are_judged_from_the_figures():
    quiet = {
        "blog recipe": {"nonpad_tokens_per_s": harness.summarise([100, 105, 110])},
        "ours": {"nonpad_tokens_per_s": harness.summarise([170, 180, 175])},
    }
    busy = {**quiet, "ours": {"nonpad_tokens_per_s": harness.summarise([40, 170, 165])}}  # x0.36 to x1.7
    training = {
        "cases": [
            {
                "model": "m",
                "method": "lora",
                "summary": quiet,
                "ratios": {
                    "ours": {"nonpad_tokens_per_s": 1.6, "eval_loss_change": 0.0, "final_train_loss_change": 0.0005}
                },
            },
            {
                "model": "m",
                "method": "full",
                "summary": quiet,
                "ratios": {
                    "ours": {"nonpad_tokens_per_s": 2.0, "eval_loss_change": 0.01, "final_train_loss_change": 0.0}
                },
            },
            {
                "model": "n",
                "method": "lora",
                "summary": busy,
                "ratios": {
                    "ours": {"nonpad_tokens_per_s": 1.6, "eval_loss_change": 0.0, "final_train_loss_change": 0.0}
                },
            },
        ]
    }
    training["cases"][0]["ratios"]["ours + compile"] = {"nonpad_tokens_per_s": 1.9}
    training["cases"][0]["summary"] = {**quiet, "ours + compile": {"first_pass_seconds": 41.2}}
    verdicts = [t["met"] for t in run_all.training_targets(training)]
    assert run_all.training_targets(training)[0]["note"].endswith(
        "; with torch_compile (off by default): x1.90, first pass 41 s"
    )
    assert verdicts == ["yes", "no", "yes?"]  # the second is faster but learns worse
    summary = {"tokens_per_s": harness.summarise([10.0, 11.0])}
    generation = {
        "cases": [
            {
                "model": "m",
                "prompts": 8,
                "speedup": 4.0,
                "texts_identical": False,
                "summary": {side: summary for side in run_all.generation_speed.SIDES},
            }
        ]
    }
    assert run_all.generation_targets(generation)[0]["met"] == "no"
    assert run_all.ratio_bounds(harness.summarise([4.0, 6.0]), harness.summarise([1.0, 2.0])) == (2.0, 6.0)


def test_a_fresh_study_keeps_its_config_and_loses_what_a_run_left(tmp_path):
    for path in ("config/config.yaml", "results/report/report.html", ".snakemake/metadata/x", "profiles/p"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    workflow_overhead.wipe_study(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "profiles"]


def test_the_collector_bench_times_a_job_s_import_and_exit_both_ways(tmp_path, capsys):
    result = job_collector.main(["--quick", "--out-dir", str(tmp_path)])
    written = json.loads((tmp_path / "job_collector.json").read_text())
    assert written["summary"] == result["summary"]
    assert set(written["runs"]) == {"as the jobs run", "default collector"}
    for runs in written["runs"].values():
        assert len(runs) == 1 and 0 < runs[0]["import_s"] < 60 and 0 < runs[0]["exit_s"] < 60
    assert "default collector" in capsys.readouterr().out


@pytest.mark.slow
def test_the_whole_harness_runs_quick(tmp_path, capsys):
    summary = run_all.main(["--quick", "--out-dir", str(tmp_path)])
    written = {path.name for path in tmp_path.glob("*.json")}
    assert written == {
        "summary.json",
        "training_speed.json",
        "generation_speed.json",
        "workflow_overhead.json",
        "telemetry_overhead.json",
    }
    training = json.loads((tmp_path / "training_speed.json").read_text())
    assert training["machine"]["cpu_count"] and training["versions"]["torch"]
    sides = {side for case in training["cases"] for side in case["summary"]}
    assert sides == {"blog recipe", "ours", "ours + compile", "ours + packing"}
    for case in training["cases"]:
        for side in case["summary"].values():
            assert side["samples"] == 16 and side["final_train_loss"] > 0 and side["eval_loss"] > 0
            assert side["first_pass_seconds"] > 0
    generation = json.loads((tmp_path / "generation_speed.json").read_text())
    assert generation["cases"][0]["prompts"] == 2 and generation["cases"][0]["texts_identical"]
    assert {t["target"].split(",")[0] for t in summary["targets"]} >= {"training lora", "training full"}
    out = capsys.readouterr().out
    for heading in ("non-pad tok/s", "new tokens/s", "snakemake -n", "sampler every 0.5 s", "targets (issue #6)"):
        assert heading in out


@pytest.mark.slow
def test_the_gpu_script_runs_on_a_tiny_model(tmp_path):
    import gpu_bench

    result = gpu_bench.main(["--tiny", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert set(written["results"]) == {
        f"{method}, {side}" for method in ("lora", "full") for side in ("blog recipe", "ours", "ours + compile")
    }
    ours, blog = result["results"]["full, ours"], result["results"]["full, blog recipe"]
    assert (blog["autocast"], ours["autocast"]) == ("fp32", "bf16")
    assert ours["optimizer"] == "adamw_torch_fused"
    assert 0 < ours["mfu_pct"] and ours["tokens_per_s"] > 0
    compiled = result["results"]["lora, ours + compile"]
    assert compiled["torch_compile"] is True and ours["torch_compile"] is False
    assert compiled["warmup_s"] > 0 and compiled["tokens_per_s"] > 0
    assert written["ratios_ours_compile_over_blog"]["lora"] > 0


def test_the_gpu_script_retries_with_checkpointing_after_running_out_of_memory(monkeypatch):
    import gpu_bench
    import torch

    tries = []

    def fake_train_side(model, method, side, settings, batches, warmup, device, peak_flops, checkpointing):
        tries.append(checkpointing)
        if not checkpointing or side == "blog recipe":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"tokens_per_s": 1.0}

    monkeypatch.setattr(gpu_bench, "train_side", fake_train_side)
    model = torch.nn.Linear(2, 2)
    ours = gpu_bench.run_side(model, "full", "ours", {}, [], 0, torch.device("cpu"), 1.0)
    assert tries == [False, True] and ours["first_try"].startswith("out of memory without gradient checkpointing")
    blog = gpu_bench.run_side(model, "full", "blog recipe", {}, [], 0, torch.device("cpu"), 1.0)
    assert len(blog["out_of_memory"]) == 2 and "tokens_per_s" not in blog
    assert gpu_bench._ratio({"full, blog recipe": blog, "full, ours": ours}, "full") is None
