"""The report stage, rendered from the fixture results in tests/fixtures/results/ (no training).

The HTML is read back with the standard library's html.parser and every number in the headline
table is checked against the runs' metrics.json and telemetry summaries, read here independently.
"""

import csv
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from helpers.html import assert_shows, parse_html, shown, source_of, table_rows
from helpers.report import (
    BLOG_FIGURES,
    BLOG_RUNS,
    CPU_RUNS,
    FIXTURES,
    blog_config,
    built_blog_report,
    built_cpu_report,
    cpu_config,
    fixture_paths,
)

from conftest import REPO
from ftcompare.config import config_hash, validate_config
from ftcompare.errors import FtcompareError
from ftcompare.report.build import build_report
from ftcompare.report.figure_style import save_figure
from ftcompare.report.figures import report_figures
from ftcompare.report.inputs import load_report_inputs
from ftcompare.report.memory_plan import fits_key
from ftcompare.report.numbers import format_number
from ftcompare.report.verdict import run_verdict


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# The blog scenario: GPU telemetry, published figures


@pytest.fixture(scope="module")
def blog():
    outputs = built_blog_report()
    return outputs, parse_html(outputs.html)


def test_every_run_and_the_base_model_appear(blog):
    _, dom = blog
    assert list(table_rows(dom, "headline")) == ["base", *BLOG_RUNS]
    assert [li.attrs["data-run"] for li in dom.find("ul", cls="verdicts").find_all("li")] == BLOG_RUNS
    prompts = dom.find_all("article", cls="prompt")
    assert len(prompts) == 4
    for prompt in prompts:
        assert [s.attrs["data-model"] for s in prompt.find_all("section", cls="answer")] == ["base", *BLOG_RUNS]


def test_headline_numbers_equal_the_metrics_and_telemetry_summaries(blog):
    _, dom = blog
    rows = table_rows(dom, "headline")
    metrics = {run: read_json(FIXTURES / "blog_mi250" / "runs" / run / "metrics.json") for run in BLOG_RUNS}
    telemetry = {run: read_json(FIXTURES / "blog_mi250" / "runs" / run / "telemetry.json") for run in BLOG_RUNS}
    for run in BLOG_RUNS:
        m, cells = metrics[run], rows[run]
        for key in [
            "trainable_params",
            "trainable_pct",
            "final_train_loss",
            "mean_train_loss",
            "eval_loss",
            "eval_perplexity",
            "train_runtime_s",
            "train_samples_per_s",
            "train_tokens_per_s",
            "train_nonpad_tokens_per_s",
        ]:
            assert_shows(cells[key], m[key], f"{run}.{key}")
        assert_shows(cells["peak_allocated_mb"], m["memory"]["torch_max_allocated_mb"]["value"])
        device_peak = telemetry[run]["peaks"]["cuda:0"]["vram_used_mb"]
        assert m["memory"]["device_vram_used_mb"]["value"] == device_peak
        assert_shows(cells["peak_device_memory_mb"], device_peak)
        assert "VRAM used" in source_of(cells["peak_device_memory_mb"], dom, "headline")
        assert "torch.cuda.max_memory_allocated" in source_of(cells["peak_allocated_mb"], dom, "headline")
        assert sum(telemetry[run]["energy_j"].values()) == m["energy_j"]
        assert_shows(cells["energy_kj"], m["energy_j"] / 1000)
        full = metrics["full"]
        assert_shows(cells["time_vs_full"], m["train_runtime_s"] / full["train_runtime_s"])
        assert_shows(cells["memory_vs_full"], device_peak / telemetry["full"]["peaks"]["cuda:0"]["vram_used_mb"])
        assert_shows(cells["energy_vs_full"], m["energy_j"] / full["energy_j"])
    base = rows["base"]
    assert_shows(base["eval_loss"], metrics["lora"]["eval_loss_before_training"])
    assert_shows(base["eval_perplexity"], math.exp(metrics["lora"]["eval_loss_before_training"]))
    assert shown(base["train_runtime_s"]) == "—" and shown(base["trainable_params"]) == "—"


def test_every_header_names_its_unit(blog):
    _, dom = blog
    thead = dom.find("table", id="headline").find("thead")
    for th in thead.find_all("th"):
        if "data-key" not in th.attrs or th.attrs["data-key"] in ("model", "method"):
            continue
        assert th.attrs["data-unit"] and f"[{th.attrs['data-unit']}]" in thead.text(), th.text()
    groups = {th.text() for th in thead.find_all("th", cls="group")}
    assert "Training loss[nats/token]" in groups and "Peak memory[MB]" in groups


def test_verdicts_say_whether_losses_beat_the_base_model(blog):
    _, dom = blog
    verdicts = {li.attrs["data-run"]: li.text() for li in dom.find("ul", cls="verdicts").find_all("li")}
    assert (
        "lora: final training loss 1.384 and held-out eval loss 1.413 are both below the base model's "
        "eval loss before training (1.521)." in verdicts["lora"]
    )
    assert "Against full, lora took 0.04× the training time, 0.65× the peak device-wide memory" in verdicts["lora"]


def test_model_output_is_escaped(blog):
    outputs, dom = blog
    raw = outputs.html.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert not dom.find_all("script")
    full_answer = dom.find("article", data_prompt_id="0").find("section", data_model="full")
    assert "<script>alert(1)</script>" in full_answer.text()
    assert "question & answers" in full_answer.text()


def test_long_answers_fold(blog):
    _, dom = blog
    base_answer = dom.find("article", data_prompt_id="0").find("section", data_model="base")
    fold = base_answer.find("details", cls="output-fold")
    assert "designing it around the needs of its users" in fold.find("div", cls="output").text()
    assert "1. Natural language understanding" in fold.text()
    short = dom.find("article", data_prompt_id="5").find("section", data_model="lora")
    assert not short.find_all("details")
    assert "35 tokens" in short.find("h4").text()


def test_the_page_is_self_contained(blog):
    outputs, dom = blog
    assert not dom.find_all("script") and not dom.find_all("link")
    images = dom.find_all("img")
    assert len(images) == len(BLOG_FIGURES)
    assert all(img.attrs["src"].startswith("data:image/png;base64,") for img in images)
    for element in dom.iter():
        for attribute in ("src", "href", "action", "srcset", "poster"):
            value = element.attrs.get(attribute)
            assert value is None or value.startswith(("#", "data:")), (element.tag, value)
    csp = dom.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp
    assert "url(" not in dom.find("style").text() and "@import" not in dom.find("style").text()


def test_published_figures_stand_beside_this_study(blog):
    _, dom = blog
    reference = blog_config()["report"]["reference"]
    rows = table_rows(dom, "reference-table")
    metrics = read_json(FIXTURES / "blog_mi250" / "runs" / "lora" / "metrics.json")
    assert_shows(rows["Training runtime"]["lora_published"], reference["lora"]["train_runtime_s"])
    assert_shows(rows["Training runtime"]["lora_this_study"], metrics["train_runtime_s"])
    assert_shows(
        rows["Training runtime"]["lora_ratio"], metrics["train_runtime_s"] / reference["lora"]["train_runtime_s"]
    )
    assert_shows(rows["Final training loss"]["full_published"], reference["full"]["final_train_loss"])
    assert_shows(rows["Trainable parameters"]["full_this_study"], 6738415616)
    telemetry = read_json(FIXTURES / "blog_mi250" / "runs" / "full" / "telemetry.json")["peaks"]["cuda:0"]
    assert_shows(
        rows["Peak VRAM used"]["full_this_study"], 100 * telemetry["vram_used_mb"] / telemetry["vram_total_mb"]
    )
    notes = dom.find("div", cls="table-block", data_table="reference-table").find("ul", cls="notes").text()
    assert (
        "Hardware for lora: published on 1x AMD Instinct MI250 (2 GCDs); this study on AMD Instinct MI250X/MI250."
    ) in notes


def test_provenance(blog):
    outputs, dom = blog
    provenance = dom.find("section", id="provenance").text()
    config = blog_config()
    assert config_hash(config) in provenance
    assert "trust_remote_code" in provenance and "off: no code from model repositories was run" in provenance
    assert "snakemake --cores all --configfile config/blog.yaml" in provenance
    assert re.search(r"torch \S+ \((CPU|CUDA \S+|ROCm \S+) build\)", provenance)
    assert "AMD Instinct MI250X/MI250" in provenance and "6.8.5" in provenance  # device and driver
    assert "torch 2.6.0+rocm6.2.4 (ROCm 6.2.41134 build) in run lora" in provenance
    versions = {
        tr.find("th").text(): [td.text() for td in tr.find_all("td")]
        for tr in dom.find("table", id="run-versions").find("tbody").find_all("tr")
    }
    assert versions["peft"] == ["0.21.2", "0.21.2"]
    assert "mlabonne/guanaco-llama2-1k" in provenance and "NousResearch/Llama-2-7b-chat-hf" in provenance
    assert "2026-11-20T09:12:04+00:00" in provenance  # the lora run's start
    assert re.search(r"([0-9a-f]{40}, (clean|dirty) tree|unknown \(not a git checkout)", provenance)
    assert re.search(r"transformers\s*\S+", provenance) and "matplotlib" in provenance
    config_text = dom.find("pre", cls="config").text()
    assert yaml.safe_load(config_text) == config


def test_every_figure_exists_in_every_format(blog):
    outputs, dom = blog
    assert list(outputs.figures) == BLOG_FIGURES
    for name, files in outputs.figures.items():
        assert files.pdf.read_bytes().startswith(b"%PDF-"), name
        assert b"<svg" in files.svg.read_bytes()[:2000], name
        assert files.png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name
    on_disk = sorted(p.name for p in outputs.figures[BLOG_FIGURES[0]].png.parent.iterdir())
    assert on_disk == sorted(f"{name}.{ext}" for name in BLOG_FIGURES for ext in ("pdf", "svg", "png"))
    for figure in dom.find_all("figure"):
        caption = figure.find("figcaption").text()
        assert "Source:" in caption or "from metrics.json" in caption, caption
        assert re.search(r"nats|MB|\(W\)|kJ", caption), caption


def test_figures_are_byte_for_byte_reproducible(tmp_path):
    config = blog_config()
    inputs = load_report_inputs(fixture_paths("blog_mi250", BLOG_RUNS), BLOG_RUNS, config, "x", {}, "t")
    runs = inputs.runs
    for attempt in ("a", "b"):
        specs, _ = report_figures(runs, 1.52)
        for spec in specs:
            if spec.name in ("training_loss_vs_step", "cost_per_run"):
                save_figure(spec.figure, tmp_path / attempt, spec.name)
            else:
                plt.close(spec.figure)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_headline_csv_matches_the_html(blog):
    outputs, dom = blog
    rows = list(csv.DictReader((outputs.tables[0].parent / "headline.csv").open(encoding="utf-8")))
    assert [row["model"] for row in rows] == ["base", *BLOG_RUNS]
    html_rows = table_rows(dom, "headline")
    for row in rows[1:]:
        for key in ("final_train_loss", "eval_loss", "train_runtime_s", "peak_device_memory_mb", "energy_kj"):
            assert abs(float(row[key]) - float(html_rows[row["model"]][key].attrs["data-value"])) < 0.51
            assert float(row[key]) == float(shown(html_rows[row["model"]][key]).replace(",", ""))
        assert row["peak_device_memory_mb_source"].startswith("VRAM used")
    assert rows[0]["train_runtime_s"] == "" and float(rows[0]["eval_loss"]) == 1.521


def test_the_memory_plan_stands_beside_the_measured_peaks(blog):
    outputs, dom = blog
    plan = read_json(FIXTURES / "blog_mi250" / "plan" / "plan.json")
    rows = table_rows(dom, "memory-plan")
    assert list(rows) == BLOG_RUNS
    gib = 2**30
    for run in BLOG_RUNS:
        planned, cells = plan["runs"][run], rows[run]
        assert float(cells["planned_gb"].attrs["data-value"]) == pytest.approx(planned["per_device_bytes"] / gib)
        for key in ("weights", "gradients", "optimizer_states", "activations"):
            value = float(cells[f"planned_{key}_gb"].attrs["data-value"])
            assert value == pytest.approx(planned["bytes"][key] / gib)
        metrics = read_json(FIXTURES / "blog_mi250" / "runs" / run / "metrics.json")
        allocated = metrics["memory"]["torch_max_allocated_mb"]
        measured = float(cells["measured_gb"].attrs["data-value"])
        assert measured == pytest.approx(allocated["value"] / 1024)
        assert float(cells["measured_vs_planned"].attrs["data-value"]) == pytest.approx(
            allocated["value"] * 2**20 / planned["per_device_bytes"]
        )
        verdicts = [f["verdict"] for f in planned["fits"]]
        assert [shown(cells[fits_key(f["device"], f["memory_gb"])]) for f in planned["fits"]] == verdicts
    assert shown(rows["full"]["fits_mi250_gcd_64gb"]) == "does not fit"  # the blog's full fine-tune needs 2 GCDs
    table = list(csv.DictReader((outputs.tables[0].parent / "memory_plan.csv").open(encoding="utf-8")))
    assert [row["model"] for row in table] == BLOG_RUNS
    assert table[0]["measured_gb_source"].startswith("torch max allocated")
    assert table[1]["fits_h100_a100_80gb"] == "paged" and table[1]["fits_h200_141gb"] == "fits"
    latex = (outputs.tables[0].parent / "memory_plan.tex").read_text(encoding="utf-8")
    assert "does not fit" in latex and "tab:ftcompare-memory-plan" in latex


# --------------------------------------------------------------------------------------------
# The embedded default on a CPU, through the entry script: no VRAM, power or energy


@pytest.fixture(scope="module")
def cpu():
    out = built_cpu_report()
    return out, parse_html(out / "report.html")


def test_entry_script_builds_every_output(cpu):
    out, dom = cpu
    assert list(table_rows(dom, "headline")) == ["base", *CPU_RUNS]
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(
        f"{n}.{e}"
        for n in ["training_loss_vs_step", "training_loss_vs_time", "memory_over_time", "cost_per_run"]
        for e in ("pdf", "svg", "png")
    )
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "generation.csv",
        "headline.csv",
        "headline.tex",
        "headline_transposed.tex",
        "memory_plan.csv",
        "memory_plan.tex",
    ]
    assert not list(out.glob(".*.tmp"))


def test_cpu_runs_set_process_memory_beside_the_plan_without_a_ratio(cpu):
    _, dom = cpu
    rows = table_rows(dom, "memory-plan")
    assert list(rows) == CPU_RUNS
    for run in CPU_RUNS:
        assert source_of(rows[run]["measured_gb"], dom, "memory-plan").startswith("process RSS")
        assert shown(rows[run]["measured_vs_planned"]) == "—"
        assert float(rows[run]["planned_gb"].attrs["data-value"]) > 0


def test_cpu_runs_show_process_memory_and_no_energy(cpu):
    _, dom = cpu
    rows = table_rows(dom, "headline")
    root = FIXTURES / "embedded_cpu" / "runs"
    # lora's metrics.json has no RSS figure: the telemetry summary's peak stands in.
    lora_peak = read_json(root / "lora" / "telemetry.json")["peaks"]["cpu"]["rss_mb"]
    assert_shows(rows["lora"]["peak_device_memory_mb"], lora_peak)
    assert source_of(rows["lora"]["peak_device_memory_mb"], dom, "headline") == "process RSS (telemetry peak, cpu)"
    r64 = read_json(root / "lora-r64" / "metrics.json")["memory"]["rss_mb"]["value"]
    assert_shows(rows["lora-r64"]["peak_device_memory_mb"], r64)
    for run in CPU_RUNS:
        assert shown(rows[run]["peak_allocated_mb"]) == "—"
        assert shown(rows[run]["energy_kj"]) == "—" and shown(rows[run]["energy_vs_full"]) == "—"
    assert_shows(rows["lora"]["train_runtime_s"], 38.2)
    notes = dom.find("section", id="figures").text()
    assert "No utilisation or power figure" in notes and "backend: cpu" in notes
    assert not dom.find_all("section", id="reference")


def test_cpu_verdicts_cover_a_run_that_did_not_beat_the_base_model(cpu):
    _, dom = cpu
    verdicts = {li.attrs["data-run"]: li for li in dom.find("ul", cls="verdicts").find_all("li")}
    assert (
        "full: final training loss 3.185 is below the base model's eval loss before training (3.891), "
        "but its held-out eval loss 3.903 is not." in verdicts["full"].text()
    )
    assert verdicts["lora"].attrs["class"] == "good" and verdicts["full"].attrs["class"] == "mixed"


def test_html_in_model_output_is_text(cpu):
    out, dom = cpu
    assert "<b>bold</b>" not in (out / "report.html").read_text(encoding="utf-8")
    assert not dom.find_all("b")
    answer = dom.find("article", data_prompt_id="3").find("section", data_model="base")
    assert "read the data <b>bold</b> & the" in answer.text()


def test_resumed_run_is_reported(cpu):
    _, dom = cpu
    runs = dom.find("table", id="run-settings")
    full_row = next(tr for tr in runs.find_all("tr") if tr.find_all("th") and tr.find("th").text() == "full")
    assert "150" in full_row.text()


def test_a_report_without_a_full_fine_tune(tmp_path):
    config = cpu_config()
    config["runs"] = {"lora": config["runs"]["lora"]}
    inputs = load_report_inputs(
        fixture_paths("embedded_cpu", ["lora"]),
        ["lora"],
        config,
        config_hash(config),
        config["report"]["reference"],
        config["report"]["title"],
    )
    build_report(inputs, tmp_path / "report.html", tmp_path / "figures", tmp_path / "tables")
    dom = parse_html(tmp_path / "report.html")
    rows = table_rows(dom, "headline")
    assert list(rows) == ["base", "lora"]
    assert shown(rows["lora"]["time_vs_full"]) == "—"  # no full fine-tune to compare with
    assert "No run is a full fine-tune" in dom.find("section", id="glance").text()


def test_a_qlora_run_is_named_qlora_and_costed_against_the_full_fine_tune(tmp_path):
    """An adapter run like LoRA's: the report names its method QLoRA wherever it names methods."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "embedded_cpu", root)
    # Run lora-r64's results, as a qlora run's.
    shutil.copytree(root / "runs" / "lora-r64", root / "runs" / "qlora")
    metrics = json.loads((root / "runs" / "qlora" / "metrics.json").read_text())
    before = metrics["eval_loss_before_training"] + 0.01  # the base in 4-bit
    metrics.update(run="qlora", method="qlora", quantization={"bnb_4bit_quant_type": "nf4"})
    metrics.update(eval_loss_before_training=before, eval_loss=before - 0.5, final_train_loss=before - 0.5)
    (root / "runs" / "qlora" / "metrics.json").write_text(json.dumps(metrics))
    records = [{**json.loads(line), "model": "qlora"} for line in (root / "generations" / "lora-r64.jsonl").open()]
    (root / "generations" / "qlora.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    runs = ["lora", "qlora", "full"]
    config = cpu_config()
    config["runs"] = {"lora": config["runs"]["lora"], "qlora": {"method": "qlora"}, "full": config["runs"]["full"]}
    paths = replace(
        fixture_paths("embedded_cpu", runs),
        metrics=[root / "runs" / run / "metrics.json" for run in runs],
        log_history=[root / "runs" / run / "log_history.csv" for run in runs],
        train_telemetry=[root / "runs" / run / "telemetry.json" for run in runs],
        generations=[root / "generations" / f"{model}.jsonl" for model in ["base", *runs]],
    )
    inputs = load_report_inputs(
        paths, runs, config, config_hash(config), config["report"]["reference"], config["report"]["title"]
    )
    build_report(inputs, tmp_path / "report.html", tmp_path / "figures", tmp_path / "tables")
    dom = parse_html(tmp_path / "report.html")
    headline = table_rows(dom, "headline")
    assert [headline[run]["method"].text().strip() for run in runs] == ["LoRA", "QLoRA", "full fine-tune"]
    lora = json.loads((root / "runs" / "lora" / "metrics.json").read_text())
    # The base row is the base as it is (lora's measure), not in 4-bit; the note says why qlora's differs.
    assert shown(headline["base"]["eval_loss"]) == format_number(lora["eval_loss_before_training"], 3)
    notes = dom.find("div", cls="table-block", data_table="headline").find("ul", cls="notes").text()
    assert f"(shown: lora's; also qlora {format_number(before, 4)}), because qlora measured the base in 4-bit" in notes
    assert shown(headline["qlora"]["time_vs_full"]) != "—"
    settings = {
        tr.find("th").text(): tr.find("td").text() for tr in dom.find("table", id="run-settings").find_all("tr")[1:]
    }
    assert settings["qlora"] == "QLoRA"
    glance = dom.find("section", id="glance").text()
    assert "Against full, qlora took" in glance
    assert "below the 4-bit base model's eval loss before training" in glance


@pytest.mark.slow
def test_the_report_says_when_remote_code_was_allowed(tmp_path):
    runs = sorted(p.name for p in (FIXTURES / "embedded_cpu" / "runs").iterdir())
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw.update(trust_remote_code=True, runs={run: {"method": "full" if run == "full" else "lora"} for run in runs})
    config = validate_config(raw, search_dirs=[REPO])
    inputs = load_report_inputs(fixture_paths("embedded_cpu", runs), runs, config, config_hash(config), {}, "t")
    build_report(inputs, tmp_path / "report.html", tmp_path / "figures", tmp_path / "tables")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "on: the model repository’s own Python code was allowed to run" in html
    assert "off: no code from model repositories was run" not in html


# --------------------------------------------------------------------------------------------
# Failing clearly, leaving nothing half-written


def test_a_broken_template_fails_before_anything_is_written(tmp_path):
    broken = tmp_path / "report.html.j2"
    broken.write_text("{% for x in %}", encoding="utf-8")
    paths = fixture_paths("embedded_cpu", ["lora"])
    paths = replace(paths, template=broken)
    inputs = load_report_inputs(paths, ["lora"], cpu_config(), "x", {}, "t")
    with pytest.raises(FtcompareError, match="report.html.j2, line 1"):
        build_report(
            inputs, tmp_path / "out" / "report.html", tmp_path / "out" / "figures", tmp_path / "out" / "tables"
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_inputs_out_of_step_with_the_runs_are_refused():
    paths = fixture_paths("embedded_cpu", ["lora", "full"])
    with pytest.raises(FtcompareError, match="do not match the 3 runs"):
        load_report_inputs(paths, CPU_RUNS, cpu_config(), "x", {}, "t")
    with pytest.raises(FtcompareError, match="is for run 'full', expected 'lora'"):
        load_report_inputs(
            fixture_paths("embedded_cpu", ["full", "lora"]), ["lora", "full"], cpu_config(), "x", {}, "t"
        )


def test_unreadable_metrics_name_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json", encoding="utf-8")
    paths = fixture_paths("embedded_cpu", ["lora"])
    paths = replace(paths, metrics=[bad])
    with pytest.raises(FtcompareError, match=r"metrics.json: not valid JSON"):
        load_report_inputs(paths, ["lora"], cpu_config(), "x", {}, "t")


def test_sparse_telemetry_never_crashes(tmp_path):
    """A telemetry.json of nulls and a missing CSV: the run still gets its row."""
    root = FIXTURES / "embedded_cpu" / "runs" / "lora"
    (tmp_path / "telemetry.json").write_text(
        json.dumps(
            {
                "backend": None,
                "devices": [None],
                "peaks": None,
                "means": {"cpu": None},
                "energy_j": {"cpu": None},
                "phases": None,
            }
        ),
        encoding="utf-8",
    )
    paths = fixture_paths("embedded_cpu", ["lora"])
    paths = replace(paths, train_telemetry=[tmp_path / "telemetry.json"])
    inputs = load_report_inputs(paths, ["lora"], cpu_config(), "x", {}, "t")
    run = inputs.runs[0]
    assert run.telemetry.peak("vram_used_mb") is None and run.telemetry.energy_j is None
    assert run.telemetry.phase_spans() == [] and run.telemetry.backend is None
    assert run.metrics.final_train_loss == read_json(root / "metrics.json")["final_train_loss"]
    specs, missing = report_figures(inputs.runs, None)
    assert "memory_over_time" not in [s.name for s in specs]
    assert any("memory-over-time" in why for why in missing)
    for spec in specs:
        plt.close(spec.figure)


# --------------------------------------------------------------------------------------------
# Verdict wording


def test_verdict_wording_for_each_outcome():
    config = cpu_config()
    inputs = load_report_inputs(fixture_paths("embedded_cpu", CPU_RUNS), CPU_RUNS, config, "x", {}, "t")
    lora, _, full = inputs.runs
    assert run_verdict(lora, full).sentence.endswith(
        "are both below the base model's eval loss before training (3.891)."
    )
    worse = replace(lora, metrics=replace(lora.metrics, final_train_loss=4.0, eval_loss=4.1))
    assert (
        "neither its final training loss 4.000 nor its held-out eval loss 4.100 is below"
        in run_verdict(worse, full).sentence
    )
    unknown = replace(lora, metrics=replace(lora.metrics, eval_loss_before_training=None))
    assert "cannot say" in run_verdict(unknown, full).sentence
    assert run_verdict(full, full).cost_sentence is None


def test_the_notes_say_which_runtimes_include_compilation():
    import pandas as pd

    from ftcompare.metrics import RunMetrics
    from ftcompare.report.headline import headline_table
    from ftcompare.report.inputs import RunResult
    from ftcompare.report.telemetry import Telemetry

    def run(name, compiled):
        metrics = RunMetrics(run=name, method="lora", options={"torch_compile": compiled}, train_runtime_s=10.0)
        return RunResult(name=name, metrics=metrics, log_history=pd.DataFrame(), telemetry=Telemetry())

    notes = headline_table([run("a", True), run("b", False), run("c", True)]).notes
    assert [note for note in notes if "torch.compile" in note] == [
        "Runs a, c trained under torch.compile: runtime includes the compilation during the first steps (tens of "
        "seconds on a CPU, less when inductor's cache already holds the kernels); tokens/s leaves it out."
    ]
    assert not [note for note in headline_table([run("b", False)]).notes if "torch.compile" in note]


def test_a_global_batch_other_than_the_blog_s_is_flagged_and_the_runs_table_says_how_it_was_made():
    import pandas as pd

    from ftcompare.metrics import RunMetrics
    from ftcompare.report.headline import headline_table
    from ftcompare.report.inputs import RunResult
    from ftcompare.report.provenance import RunRecord
    from ftcompare.report.telemetry import Telemetry

    def run(name, strategy, processes, batch):
        metrics = RunMetrics(run=name, method="full", strategy=strategy, processes=processes, global_batch_size=batch)
        return RunResult(name=name, metrics=metrics, log_history=pd.DataFrame(), telemetry=Telemetry())

    runs = [run("ddp4", "ddp", 4, 16), run("spread", "device_map", 1, 4), run("old", None, None, None)]
    assert [note for note in headline_table(runs).notes if "Global batch" in note] == [
        "Global batch differs from the blog's 4 (sequences per optimizer step: per-device batch x processes x "
        "gradient accumulation): ddp4 16. Steps per epoch, and what a learning rate does, change with it; compare "
        "those runs' losses with the blog's with care."
    ]
    assert not [note for note in headline_table(runs[1:]).notes if "Global batch" in note]

    def record(**placement):
        return RunRecord("r", "full", 1e-3, None, None, None, {}, None, {}, **placement)

    assert record().global_batch == "—"
    assert record(strategy="single", devices=1, processes=1, global_batch_size=4).global_batch == "4"
    assert record(strategy="fsdp", devices=2, processes=2, global_batch_size=8).global_batch == "8 (fsdp, 2 processes)"
    spread = record(strategy="device_map", devices=2, processes=1, global_batch_size=4)
    assert spread.global_batch == "4 (device_map over 2 devices)"


def test_the_runs_table_shows_the_global_batch(cpu):
    _, dom = cpu
    header = [th.text() for th in dom.find("table", id="run-settings").find("thead").find_all("th")]
    assert "Global batch" in header
