"""What the weights changed (ftcompare.weight_change): the measures on matrices built with a known change,
the pairing of a run's weights with the base model's on a tiny Llama, and the report's section."""

import math
import re

import pytest
import torch
from helpers.tiny_llama import tiny_llama, word_tokenizer
from peft import LoraConfig, get_peft_model

from ftcompare.weight_change import (
    AnalysisSettings,
    analyse_run,
    intruder_dimensions,
    module_change,
    module_position,
    rank_for_energy,
    relative_change_norm,
    top_k_max_cosines,
)

N = 64


def orthogonal(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q


def matrix_with(singular_values, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T with random orthogonal U and V and the given singular values (zeros beyond them)."""
    u, v = orthogonal(N, seed), orthogonal(N, seed + 100)
    s = torch.zeros(N, dtype=torch.float64)
    s[: len(singular_values)] = torch.tensor(singular_values, dtype=torch.float64)
    return u @ torch.diag(s) @ v.T


def base_matrix() -> torch.Tensor:
    """A base weight with well separated singular values 10 ... 1, so its singular vectors are well defined."""
    return matrix_with(torch.linspace(10, 1, N).tolist(), seed=1)


# --- the measures on known changes -------------------------------------------------------------------------------


def test_relative_change_is_the_change_norm_over_the_base_norm():
    base = torch.eye(4) * 2.0  # ||W0||_F = 4
    tuned = base.clone()
    tuned[0, 1] = 3.0  # ||W1 - W0||_F = 3
    assert relative_change_norm(base, tuned) == pytest.approx(0.75)
    assert relative_change_norm(base, base) == 0.0


@pytest.mark.parametrize(
    ("singular_values", "fraction", "expected"),
    [
        ([4, 3, 2, 1], 0.9, 3),  # energy 16 + 9 + 4 + 1 = 30; the top 3 hold 29/30, the top 2 only 25/30
        ([4, 3, 2, 1], 0.8, 2),  # 25/30 >= 0.8
        ([1, 1, 1, 1], 0.9, 4),  # a flat rank-4 update needs every one of its 4 directions
        ([5], 0.9, 1),  # rank one
        ([3, 3, 3, 3, 3, 3, 3, 3], 0.75, 6),  # exactly 6/8: a share reached exactly counts
    ],
)
def test_rank_for_energy_of_a_rank_r_update(singular_values, fraction, expected):
    assert rank_for_energy(matrix_with(singular_values), fraction) == expected


def test_rank_for_energy_of_a_random_full_rank_update_with_a_flat_spectrum():
    """An orthogonal matrix times c: every one of its N singular values is c, so 90% needs ceil(0.9 N)."""
    assert rank_for_energy(3.0 * orthogonal(N, seed=7), 0.9) == math.ceil(0.9 * N)
    assert rank_for_energy(3.0 * orthogonal(N, seed=7), 1.0) == N


def test_rank_for_energy_of_a_gaussian_update_is_a_large_share_of_its_dimension():
    """A dense random change needs about half its dimension: by the Marchenko-Pastur law of a square Gaussian
    matrix (squared singular values / n with density sqrt((4 - x) x) / (2 pi x) on [0, 4]), the largest 51.0%
    of them hold 90% of the energy: 65.3 of 128."""
    generator = torch.Generator().manual_seed(3)
    rank = rank_for_energy(torch.randn(128, 128, generator=generator, dtype=torch.float64), 0.9)
    assert abs(rank - 0.510 * 128) <= 3


def test_rank_for_energy_of_no_change_is_zero():
    assert rank_for_energy(torch.zeros(5, 5)) == 0


def test_rank_for_energy_refuses_a_share_outside_zero_to_one():
    with pytest.raises(ValueError, match="fraction"):
        rank_for_energy(torch.eye(3), 1.5)


def test_an_update_that_adds_a_new_singular_direction_is_one_intruder():
    """A large rank-one update along a direction spread evenly over every base left singular vector
    (|cos| = 1/sqrt(N) = 0.125 with each) becomes the tuned matrix's top singular vector: one intruder."""
    base = base_matrix()
    u0, _, _ = torch.linalg.svd(base)
    new_direction = u0 @ (torch.ones(N, dtype=torch.float64) / math.sqrt(N))
    right = orthogonal(N, seed=9)[:, 0]
    tuned = base + 40.0 * torch.outer(new_direction, right)
    cosines = top_k_max_cosines(base, tuned, k=10)
    assert cosines[0] < 0.25  # 1/sqrt(N), turned a little by the base itself
    assert min(cosines[1:]) >= 0.5  # the base's own directions, turned but still recognisable
    assert intruder_dimensions(base, tuned, k=10, epsilon=0.5) == 1
    assert intruder_dimensions(base, tuned, k=10, epsilon=0.1) == 0  # below even the new direction's cosine


def test_an_update_along_the_base_directions_or_a_small_dense_one_has_no_intruders():
    base = base_matrix()
    u0, s0, v0t = torch.linalg.svd(base)
    rescaled = u0 @ torch.diag(s0 * torch.linspace(1.5, 1.0, N, dtype=torch.float64)) @ v0t
    assert intruder_dimensions(base, rescaled) == 0  # a low-rank-ish change inside the base's own directions
    generator = torch.Generator().manual_seed(4)
    small_dense = base + 0.01 * torch.randn(N, N, generator=generator, dtype=torch.float64)
    assert intruder_dimensions(base, small_dense) == 0  # full fine-tuning's kind of change


def test_k_larger_than_the_matrix_looks_at_every_singular_vector():
    assert len(top_k_max_cosines(torch.eye(3), torch.eye(3) * 2, k=10)) == 3


def test_module_change_holds_every_measure_with_the_settings():
    base = base_matrix()
    u0, _, _ = torch.linalg.svd(base)
    delta = matrix_with([4, 3, 2, 1], seed=5)
    new_direction = u0 @ (torch.ones(N, dtype=torch.float64) / math.sqrt(N))
    tuned = base + delta + 40.0 * torch.outer(new_direction, orthogonal(N, seed=9)[:, 0])
    change = module_change(
        "model.layers.3.self_attn.q_proj", base, tuned, AnalysisSettings(k=10, epsilon=0.5, energy=0.9)
    )
    assert (change.layer, change.module_type, change.rows, change.cols) == (3, "q_proj", N, N)
    assert change.intruders == 1
    assert change.relative_change == pytest.approx(relative_change_norm(base, tuned))
    assert change.rank90 == rank_for_energy(tuned - base, 0.9)
    assert change.rank90 <= 5 and change.rank90_fraction == change.rank90 / N
    assert change.change_energy == pytest.approx(change.change_norm**2)
    assert change.change_singular_values == sorted(change.change_singular_values, reverse=True)
    assert len(change.top_k_max_cosine) == 10


def test_module_position_reads_the_layer_and_the_module_type():
    assert module_position("model.layers.12.mlp.down_proj") == (12, "down_proj")
    assert module_position("lm_head") == (None, "lm_head")


# --- a run's weights paired with the base model's, on a tiny Llama ----------------------------------------------

R = 2


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny Llama saved as a base model, a LoRA adapter of rank R on it (q_proj, v_proj, random B so the
    change is not zero), and a fully fine-tuned copy with every weight moved."""
    root = tmp_path_factory.mktemp("weights")
    tokenizer = word_tokenizer()
    base = tiny_llama(hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")

    torch.manual_seed(1)
    adapted = get_peft_model(
        tiny_llama(hidden_size=16, num_hidden_layers=2, num_attention_heads=2),
        LoraConfig(r=R, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapted.save_pretrained(root / "lora")
    tokenizer.save_pretrained(root / "lora")

    torch.manual_seed(2)
    dora = get_peft_model(
        tiny_llama(hidden_size=16, num_hidden_layers=2, num_attention_heads=2),
        LoraConfig(r=R, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, use_dora=True),
    )
    dora.save_pretrained(root / "dora")
    tokenizer.save_pretrained(root / "dora")

    full = tiny_llama(hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    with torch.no_grad():
        for parameter in full.parameters():
            parameter.add_(0.002 * torch.randn_like(parameter))
    full.save_pretrained(root / "full")
    tokenizer.save_pretrained(root / "full")
    return root


def test_a_lora_run_pairs_only_its_adapted_modules_with_the_adapter_merged(tiny_models):
    settings = AnalysisSettings()
    changes = analyse_run(tiny_models / "base", tiny_models / "lora", "lora", settings, "cpu")
    names = [change.module for change in changes]
    assert names == [f"model.layers.{layer}.self_attn.{kind}" for layer in (0, 1) for kind in ("q_proj", "v_proj")]
    for change in changes:
        assert 0 < change.rank90 <= R  # the merged change is the adapter's B A, of rank R at most
        assert change.relative_change > 0
        assert len(change.change_singular_values) == 16
        assert all(value < 1e-6 * change.change_singular_values[0] for value in change.change_singular_values[R:])


def test_a_lora_run_merges_as_peft_does(tiny_models):
    """The tuned weight is PEFT's merge_and_unload: layer 0's q_proj changed as much as in the merged model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models / "base")
    base_weight = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, tiny_models / "lora").merge_and_unload()
    expected = relative_change_norm(base_weight, merged.model.layers[0].self_attn.q_proj.weight)
    changes = analyse_run(tiny_models / "base", tiny_models / "lora", "lora", AnalysisSettings(), "cpu")
    assert changes[0].relative_change == pytest.approx(expected, rel=1e-5)


def test_a_dora_run_is_merged_as_peft_merges_it(tiny_models):
    """DoRA rescales each column of the whole merged weight: the change is PEFT's merge, whatever its rank."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models / "base")
    base_weight = base.model.layers[1].self_attn.v_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, tiny_models / "dora").merge_and_unload()
    expected = relative_change_norm(base_weight, merged.model.layers[1].self_attn.v_proj.weight)
    changes = analyse_run(tiny_models / "base", tiny_models / "dora", "lora", AnalysisSettings(), "cpu")
    assert [c.module_type for c in changes] == ["q_proj", "v_proj"] * 2
    assert changes[-1].relative_change == pytest.approx(expected, rel=1e-5) and expected > 0


def test_a_qlora_run_is_compared_with_its_dequantized_4bit_base(tiny_models):
    """A QLoRA adapter's change is its own B A: measured against the 4-bit base it trained on, dequantized, the
    change has the adapter's rank, which the quantization error (full rank) would otherwise swamp."""
    from helpers.tiny_run import settings_for

    quantization = settings_for("qlora")["quantization"]
    changes = analyse_run(
        tiny_models / "base", tiny_models / "lora", "qlora", AnalysisSettings(), "cpu", quantization=quantization
    )
    assert [c.module_type for c in changes] == ["q_proj", "v_proj"] * 2
    assert all(0 < c.rank90 <= R for c in changes)
    lora = analyse_run(tiny_models / "base", tiny_models / "lora", "lora", AnalysisSettings(), "cpu")
    for quantized, plain in zip(changes, lora):  # the same B A on a slightly different base
        assert quantized.change_norm == pytest.approx(plain.change_norm, rel=1e-4)
        assert quantized.base_norm != plain.base_norm


def test_a_full_run_pairs_every_attention_and_mlp_linear(tiny_models):
    changes = analyse_run(tiny_models / "base", tiny_models / "full", "full", AnalysisSettings(), "cpu")
    kinds = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert sorted((c.layer, c.module_type) for c in changes) == sorted((layer, k) for layer in (0, 1) for k in kinds)
    down = next(c for c in changes if c.module_type == "down_proj")
    assert (down.rows, down.cols) == (16, 32)  # hidden x intermediate, as the weight is stored
    for change in changes:
        assert change.rank90 > R  # a dense change: far above a LoRA's rank
        assert change.intruders == 0


def test_the_modules_setting_selects_module_types(tiny_models):
    settings = AnalysisSettings(modules=["v_proj", "down_proj"])
    full = analyse_run(tiny_models / "base", tiny_models / "full", "full", settings, "cpu")
    assert sorted({c.module_type for c in full}) == ["down_proj", "v_proj"] and len(full) == 4
    lora = analyse_run(tiny_models / "base", tiny_models / "lora", "lora", settings, "cpu")
    assert [c.module_type for c in lora] == ["v_proj", "v_proj"]


# --- the report's section -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weight_report(tiny_models, tmp_path_factory):
    """The embedded CPU fixture's report, built by scripts/report.py as Snakemake runs it, with an analysis of
    the tiny LoRA adapter for its two LoRA runs and of the tiny full fine-tune for its full run."""
    import dataclasses

    from helpers.report import CPU_RUNS, cpu_config, fixture_paths, run_entry_script

    from ftcompare.atomic import write_json
    from ftcompare.weight_change import analysis_document

    folder = tmp_path_factory.mktemp("analysis")
    settings = AnalysisSettings()
    documents = {}
    for run in CPU_RUNS:
        method = "full" if run == "full" else "lora"
        changes = analyse_run(tiny_models / "base", tiny_models / method, method, settings, "cpu")
        documents[run] = analysis_document(run, method, settings, changes, "cpu", seconds=1.25)
        write_json(folder / f"{run}.json", documents[run])
    paths = dataclasses.replace(
        fixture_paths("embedded_cpu", CPU_RUNS), weights=[folder / f"{run}.json" for run in CPU_RUNS]
    )
    out = tmp_path_factory.mktemp("report")
    done = run_entry_script(paths, CPU_RUNS, cpu_config(), out)
    assert done.returncode == 0, done.stderr + (out / "report.log").read_text()
    return out, documents


def test_the_report_shows_the_weight_summary_with_the_numbers_of_the_json(weight_report):
    from helpers.html import assert_shows, parse_html, table_rows

    out, documents = weight_report
    dom = parse_html(out / "report.html")
    section = dom.find("section", id="weights")
    assert "What the weights changed" in section.find("h2").text()
    rows = table_rows(dom, "weight-summary")
    assert list(rows) == list(documents)
    for run, document in documents.items():
        summary = document["summary"]
        for key in ("modules", "mean_relative_change", "median_rank90", "total_intruders", "modules_with_intruders"):
            assert_shows(rows[run][key], summary[key], f"{run} {key}")
        assert_shows(rows[run]["median_rank90_pct"], 100 * summary["median_rank90_fraction"], run)
    assert documents["full"]["summary"]["modules"] == 14 and documents["lora"]["summary"]["modules"] == 4
    assert documents["lora"]["summary"]["median_rank90"] <= R < documents["full"]["summary"]["median_rank90"]


def test_the_report_has_the_weight_figures_and_tables_for_a_paper(weight_report):
    from helpers.html import parse_html
    from test_report_latex import assert_compile_ready

    out, documents = weight_report
    dom = parse_html(out / "report.html")
    section = dom.find("section", id="weights")
    names = ["weight_relative_change", "weight_rank90", "weight_intruders", "weight_change_spectrum"]
    assert [figure.attrs["id"] for figure in section.find_all("figure")] == [f"figure-{name}" for name in names]
    for name in names:
        for suffix in ("pdf", "svg", "png"):
            assert (out / "figures" / f"{name}.{suffix}").stat().st_size > 0
    csv_lines = (out / "tables" / "weights.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,method,modules,mean_relative_change,median_rank90,")
    assert [line.split(",")[0] for line in csv_lines[1:]] == list(documents)
    latex = (out / "tables" / "weights.tex").read_text()
    assert "lora-r64" in latex and latex.isascii()
    assert_compile_ready(latex)


# --- the config -------------------------------------------------------------------------------------------------


def test_the_weight_analysis_section_defaults_to_the_papers_settings_and_names_a_bad_key():
    from conftest import REPO
    from ftcompare.config import ConfigError, validate_config

    section = validate_config({}, search_dirs=[REPO])["weight_analysis"]
    assert section == {"enabled": True, "k": 10, "epsilon": 0.5, "energy": 0.9, "modules": None}
    assert AnalysisSettings.from_config(section) == AnalysisSettings()
    for bad, message in [
        ({"epsilon": 2}, "`weight_analysis.epsilon` = 2: must be <= 1"),
        ({"modules": []}, "`weight_analysis.modules` = []: must not be empty"),
        ({"modules": ["q proj"]}, "`weight_analysis.modules.0` = 'q proj'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config({"weight_analysis": bad}, search_dirs=[REPO])
